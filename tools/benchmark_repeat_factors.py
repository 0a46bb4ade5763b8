"""Benchmark repeat-factor computation and sampler construction.

1. The factor computation: ``compute_repeat_factors`` vs a per-image Python
   loop written out in the style of detectron2's
   ``RepeatFactorTrainingSampler.repeat_factors_from_category_frequency``, on
   LVIS-like image -> category lists (category image/instance counts sampled
   from the packaged LVIS v1 train statistics).
2. The path users run: building ``mmlongtail.RepeatFactorSampler`` (which
   gathers each image's categories with
   :func:`mmlongtail.datasets.image_categories`) vs mmengine's
   ``ClassBalancedDataset`` over the same loaded mmdet ``LVISV1Dataset`` (a
   synthetic, annotation-only LVIS v1-format file; no pixels are read). It
   also times the ``img_id`` pass (``get_data_info`` per item) against the
   dataset's own load time.

Both sides of each comparison run in the same process, interleaved, and the
best of ``--repeats`` runs is reported.

Usage::

    python tools/benchmark_repeat_factors.py [--images 100000]
        [--dataset-images 21000] [--repeats 3]
"""
import argparse
import json
import math
import os.path as osp
import tempfile
import time
from collections import defaultdict

import numpy as np
from mmdet.datasets import LVISV1Dataset
from mmengine.dataset import ClassBalancedDataset
from mmengine.logging import MMLogger

from mmlongtail.datasets import RepeatFactorSampler, compute_repeat_factors
from mmlongtail.datasets.image_categories import dataset_img_ids

from mmlongtail_bench.synthetic.lvis_train_like import lvis_like_pairs


def lvis_like_lists(num_images: int, seed: int = 0):
    img, cat, stats = lvis_like_pairs(num_images, seed)
    bounds = np.searchsorted(img, np.arange(num_images + 1))
    cat_list = cat.tolist()
    return [cat_list[bounds[i]:bounds[i + 1]] for i in range(num_images)]


def loop_repeat_factors(image_cat_ids, repeat_thr):
    """The definition as a per-image loop, the way detectron2 computes it
    (count images per category, then r(c), then the max per image)."""
    category_freq = defaultdict(int)
    for cats in image_cat_ids:
        for c in set(cats):
            category_freq[c] += 1
    num_images = len(image_cat_ids)
    category_rep = {
        c: max(1.0, math.sqrt(repeat_thr / (n / num_images)))
        for c, n in category_freq.items()
    }
    out = []
    for cats in image_cat_ids:
        out.append(max((category_rep[c] for c in set(cats)), default=1.0))
    return np.asarray(out, dtype=np.float64)


IMG_IDS = 'img_ids'


def write_lvis_annotations(path: str, num_images: int, seed: int = 0):
    """An annotation-only LVIS v1-format file (images need not exist)."""
    img, cat, stats = lvis_like_pairs(num_images, seed)
    rng = np.random.default_rng(seed + 1)
    img_ids = rng.permutation(np.arange(1, 6 * num_images))[:num_images] + 1
    wh = rng.integers(200, 640, size=(num_images, 2))
    images = [
        dict(
            id=int(i),
            width=int(w),
            height=int(h),
            coco_url=f'http://images.cocodataset.org/train2017/{int(i):012d}'
            '.jpg',
            neg_category_ids=[],
            not_exhaustive_category_ids=[])
        for i, (w, h) in zip(img_ids.tolist(), wh.tolist())
    ]
    boxes = rng.uniform(0, 1, size=(img.shape[0], 4))
    anns = []
    for k, (i, c, b) in enumerate(zip(img.tolist(), cat.tolist(),
                                      boxes.tolist())):
        w_img, h_img = wh[i]
        x, y = b[0] * w_img * 0.5, b[1] * h_img * 0.5
        w, h = 2 + b[2] * w_img * 0.4, 2 + b[3] * h_img * 0.4
        # a 12-vertex polygon, so items are about LVIS-sized when pickled
        t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        poly = np.stack([x + w / 2 * (1 + np.cos(t)),
                         y + h / 2 * (1 + np.sin(t))], 1).round(2)
        anns.append(
            dict(
                id=k + 1,
                image_id=int(img_ids[i]),
                category_id=int(c),
                bbox=[round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                area=round(w * h * 0.78, 2),
                segmentation=[poly.reshape(-1).tolist()]))
    categories = [
        dict(id=int(c), name=n, frequency=f, image_count=0, instance_count=0)
        for c, n, f in zip(stats.cat_ids, stats.names, stats.frequency)
    ]
    with open(path, 'w') as f:
        json.dump(
            dict(images=images, annotations=anns, categories=categories), f)
    return stats.names


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=100_000)
    parser.add_argument('--dataset-images', type=int, default=21_000)
    parser.add_argument('--repeat-thr', type=float, default=1e-3)
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    MMLogger.get_instance('benchmark_rfs', log_level='WARNING')

    # 1. factors from image -> category lists
    lists = lvis_like_lists(args.images)
    n_inst = sum(map(len, lists))
    rows = [('per-image Python loop (detectron2 style)',
             lambda: loop_repeat_factors(lists, args.repeat_thr)),
            ('compute_repeat_factors (NumPy)',
             lambda: compute_repeat_factors(lists, args.repeat_thr))]
    best = {name: (float('inf'), None) for name, _ in rows}
    for _ in range(args.repeats):  # interleaved, best of --repeats
        for name, fn in rows:
            t = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t
            if dt < best[name][0]:
                best[name] = (dt, out)
    t_loop, r_loop = best[rows[0][0]]
    print(f'[1] repeat factors, {args.images} LVIS-like images, {n_inst} '
          f'instances, t={args.repeat_thr}')
    for name, (dt, out) in best.items():
        assert np.array_equal(out, r_loop), name
        print(f'    {name:48s} {dt * 1000:8.1f} ms   '
              f'({t_loop / dt:5.1f}x vs the loop)')
    print(f'    identical factors on both; mean r(I) = {r_loop.mean():.3f}')

    # 2. sampler construction over a loaded LVISV1Dataset
    with tempfile.TemporaryDirectory() as tmp:
        ann = osp.join(tmp, 'lvis_v1_train.json')
        names = write_lvis_annotations(ann, args.dataset_images)
        t = time.perf_counter()
        ds = LVISV1Dataset(
            ann_file=ann,
            metainfo=dict(classes=names),
            data_prefix=dict(img=''),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline=[],
            lazy_init=False)
        t_load = time.perf_counter() - t
        print(f'[2] sampler construction over a loaded LVISV1Dataset: '
              f'{len(ds)} images (loaded in {t_load:.1f} s, '
              f'{ds.data_bytes.nbytes / 2**20:.0f} MiB serialized)')
        rows = {}
        for _ in range(args.repeats):
            for name, fn in (
                ('mmengine ClassBalancedDataset',
                 lambda: ClassBalancedDataset(ds, args.repeat_thr)),
                ('RepeatFactorSampler (get_cat_ids)',
                 lambda: RepeatFactorSampler(
                     ds, args.repeat_thr, seed=0,
                     category_source='get_cat_ids')),
                ('RepeatFactorSampler (auto: annotation index)',
                 lambda: RepeatFactorSampler(ds, args.repeat_thr, seed=0)),
                (IMG_IDS, lambda: dataset_img_ids(ds)),
            ):
                t = time.perf_counter()
                obj = fn()
                dt = time.perf_counter() - t
                if dt < rows.get(name, (float('inf'), None))[0]:
                    rows[name] = (dt, obj)
        cbd = rows['mmengine ClassBalancedDataset'][1]
        by_index = rows['RepeatFactorSampler (auto: annotation index)'][1]
        by_get = rows['RepeatFactorSampler (get_cat_ids)'][1]
        base = rows['mmengine ClassBalancedDataset'][0]
        t_ids = rows.pop(IMG_IDS)[0]
        for name, (dt, _) in rows.items():
            print(f'    {name:46s} {dt:8.3f} s   ({base / dt:5.1f}x vs '
                  'ClassBalancedDataset)')
        print(f'    of which the img_id of every item (get_data_info, in '
              f'both sampler rows): {t_ids:.3f} s, '
              f'{100 * t_ids / t_load:.1f}% of the dataset load')
        same = np.array_equal(by_index.repeat_factors, by_get.repeat_factors)
        cbd_len = len(cbd)
        ceil_len = int(np.ceil(by_index.repeat_factors.numpy()).sum())
        print(f'    factors: annotation index == get_cat_ids: {same}; '
              f'ClassBalancedDataset length {cbd_len}, sum ceil(r) '
              f'{ceil_len}, expected stochastic epoch '
              f'{float(by_index.repeat_factors.sum()):.0f}')


if __name__ == '__main__':
    main()
