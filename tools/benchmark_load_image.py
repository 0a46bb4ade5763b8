"""Benchmark the image loader of the LVIS configs against mmcv's.

The loader the LVIS dataset base builds (``mmlongtail.LoadImageChecked``,
from ``configs/_base_/datasets/lvis_v1_instance.py``'s train pipeline) and
mmcv's ``LoadImageFromFile`` with the same arguments load the same files:
a JPEG and a PNG of ``--height`` x ``--width`` (a smoothed noise picture, the
size of a COCO image by default). The two run interleaved in one process;
the best of ``--repeats`` runs of ``--number`` loads each is reported, with
the ratio.

Usage::

    python tools/benchmark_load_image.py [--height 480] [--width 640]
        [--number 50] [--repeats 5]
"""
import argparse
import os.path as osp
import tempfile
import timeit

import cv2
import numpy as np
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmlongtail  # noqa: F401
from mmlongtail.registry import TRANSFORMS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BASE = osp.join(ROOT, 'configs', '_base_', 'datasets', 'lvis_v1_instance.py')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--number', type=int, default=50)
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()

    init_default_scope('mmdet')
    checked_cfg = Config.fromfile(BASE).train_pipeline[0]
    plain_cfg = dict(checked_cfg, type='LoadImageFromFile')
    plain_cfg.pop('bad_image')
    checked = TRANSFORMS.build(checked_cfg)
    plain = TRANSFORMS.build(plain_cfg)

    rng = np.random.default_rng(0)
    picture = cv2.GaussianBlur(
        (rng.random((args.height, args.width, 3)) * 255).astype(np.uint8),
        (5, 5), 0)
    print(f'{args.height}x{args.width} images; best of {args.repeats} x '
          f'{args.number} loads')
    print(f'{"file":<22}{"LoadImageFromFile":>18}{"LoadImageChecked":>18}'
          f'{"ratio":>8}')
    with tempfile.TemporaryDirectory() as tmp:
        for ext in ('.jpg', '.png'):
            path = osp.join(tmp, f'image{ext}')
            cv2.imwrite(path, picture)
            info = dict(img_path=path, img_id=1, height=args.height,
                        width=args.width)
            best = {}
            for _ in range(args.repeats):
                for name, t in (('plain', plain), ('checked', checked)):
                    s = timeit.timeit(lambda t=t: t(dict(info)),
                                      number=args.number) / args.number
                    best[name] = min(best.get(name, s), s)
            size = osp.getsize(path) // 1024
            print(f'{ext[1:].upper() + f" ({size} KB)":<22}'
                  f'{best["plain"] * 1e3:>15.2f} ms'
                  f'{best["checked"] * 1e3:>15.2f} ms'
                  f'{best["checked"] / best["plain"]:>8.3f}')


if __name__ == '__main__':
    main()
