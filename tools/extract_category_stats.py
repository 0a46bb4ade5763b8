"""Write the compact category statistics JSON of an LVIS/COCO annotation file.

    python tools/extract_category_stats.py ANN_FILE OUT_JSON [--num-classes N]

The output ({num_images, categories: [{id, name, frequency, image_count,
instance_count}]}) is what ``category_stats=`` of EQL, BAGS and repeat-factor
sampling accepts. Where categories lack LVIS's counts, images and instances
are counted from the annotations (see mmlongtail/datasets/category_stats.py).
"""
import argparse
import os
import os.path as osp
from typing import Optional, Sequence

from mmlongtail.datasets.category_stats import (dump_category_stats,
                                                load_category_stats)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('ann_file', help='LVIS- or COCO-format annotation JSON')
    p.add_argument('out', help='where to write the stats JSON')
    p.add_argument(
        '--num-classes',
        type=int,
        default=None,
        help='fail unless the file has this many categories')
    args = p.parse_args(argv)
    stats = load_category_stats(
        args.ann_file, num_classes=args.num_classes, owner='--num-classes')
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    dump_category_stats(stats, args.out)
    groups = {g: int(stats.group_mask(g).sum()) for g in 'rcf'}
    print(f'wrote {args.out}: {stats.num_classes} categories '
          f'(r/c/f = {groups["r"]}/{groups["c"]}/{groups["f"]}), '
          f'{stats.num_images} images with annotations')


if __name__ == '__main__':
    main()
