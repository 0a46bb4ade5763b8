"""Write the compact category statistics JSON of an LVIS, COCO or V3Det
annotation file.

    python tools/extract_category_stats.py ANN_FILE OUT_JSON [--num-classes N]
        [--fractal-dimension]

The output ({num_images, frequency_from, categories: [{id, name, frequency,
image_count, instance_count}]}) is what ``category_stats=`` of EQL, BAGS,
the federated loss and the LVIS metric accepts. Where categories lack LVIS's
counts (COCO, V3Det), images and instances are counted from the annotations
and r/c/f follow LVIS's rule on the image counts (``frequency_from:
"lvis_rule"``; see mmlongtail/datasets/category_stats.py). V3Det train
(1.75M annotations) takes about 20 s, most of it decoding the JSON.

``--fractal-dimension`` adds what FRACAL needs: each category's fractal
dimension of box locations (``fractal_dimension``, as the official FRACAL
``stat_files`` scripts compute it; mmlongtail/datasets/fractal_dimension.py)
and ``num_images_listed`` (every image of the file).
"""
import argparse
import os
import os.path as osp
from typing import Optional, Sequence

from mmlongtail.datasets.category_stats import (dump_category_stats,
                                                load_category_stats)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('ann_file',
                   help='LVIS-, COCO- or V3Det-format annotation JSON')
    p.add_argument('out', help='where to write the stats JSON')
    p.add_argument(
        '--num-classes',
        type=int,
        default=None,
        help='fail unless the file has this many categories')
    p.add_argument(
        '--fractal-dimension',
        action='store_true',
        help='add each category\'s fractal dimension of box locations and '
        'the number of listed images (what mmlongtail.FRACAL needs)')
    args = p.parse_args(argv)
    stats = load_category_stats(
        args.ann_file, num_classes=args.num_classes, owner='--num-classes',
        fractal_dimension=args.fractal_dimension)
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    dump_category_stats(stats, args.out)
    groups = {g: int(stats.group_mask(g).sum()) for g in 'rcf'}
    print(f'wrote {args.out}: {stats.num_classes} categories '
          f'(r/c/f = {groups["r"]}/{groups["c"]}/{groups["f"]}), '
          f'{stats.num_images} images with annotations')
    if stats.frequency_from == 'lvis_rule':
        print('the file has no frequency groups: r/c/f are LVIS\'s rule on '
              'the counted image counts (rare <= 10 images, common <= 100), '
              "this package's convention, not the dataset's")


if __name__ == '__main__':
    main()
