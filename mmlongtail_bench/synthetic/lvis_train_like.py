"""An annotation-only LVIS v1-format file the size of LVIS v1 train.

Category image and instance counts follow the packaged LVIS v1 train
statistics (``mmlongtail/data/lvis_v1_train_category_stats.json``), scaled by
``scale``: at ``scale=1`` 100,170 images and about 1.27M annotations, each
with one polygon of ``points`` vertices (12 by default). Images carry
``neg_category_ids`` and ``not_exhaustive_category_ids`` as LVIS's do. No
pixels: the dataset-load and sampler benchmarks read only the file.

The file is written in a stream (no dict per annotation is ever held) to a
temporary name and renamed when complete.
"""
import os
import os.path as osp
import json
from typing import Optional, Tuple

import numpy as np

from mmlongtail.datasets.category_stats import (CategoryStats,
                                                load_category_stats)

#: LVIS v1 train's image count.
LVIS_V1_TRAIN_IMAGES = 100_170


def lvis_like_pairs(num_images: int,
                    seed: int = 0,
                    count_scale: Optional[float] = None
                    ) -> Tuple[np.ndarray, np.ndarray, CategoryStats]:
    """(image, category id) pairs with LVIS v1 train's per-category image
    and instance counts scaled to ``num_images``; pairs sorted by image.

    Args:
        num_images (int): Images to spread the pairs over.
        seed (int): NumPy generator seed.
        count_scale (float, optional): Factor on the per-category counts;
            defaults to ``num_images`` over the statistics' image count (the
            images with an annotation).

    Returns:
        tuple: ``img`` ``(M,)`` int64 image positions in ``[0, num_images)``,
        ``cat`` ``(M,)`` int64 category ids, and the statistics.
    """
    stats = load_category_stats('lvis_v1')
    rng = np.random.default_rng(seed)
    scale = (num_images / stats.num_images
             if count_scale is None else count_scale)
    imgs, cats = [], []
    for cid, ic, nc in zip(stats.cat_ids, stats.image_count,
                           stats.instance_count):
        k = min(num_images, max(1, int(round(ic * scale))))
        chosen = rng.choice(num_images, size=k, replace=False)
        extra = max(0, int(round(nc * scale)) - k)
        chosen = np.concatenate([chosen, rng.choice(chosen, size=extra)])
        imgs.append(chosen)
        cats.append(np.full(chosen.shape[0], cid, dtype=np.int64))
    img = np.concatenate(imgs)
    cat = np.concatenate(cats)
    # shuffle instances, then group by image (random order inside images)
    perm = rng.permutation(img.shape[0])
    img, cat = img[perm], cat[perm]
    order = np.argsort(img, kind='stable')
    return img[order], cat[order], stats


def _fmt(rows: np.ndarray) -> list:
    """Each row of a float array as JSON numbers, 2 decimals."""
    return [','.join(map(repr, r)) for r in np.round(rows, 2).tolist()]


def write_lvis_train_like(path: str,
                          scale: float = 1.0,
                          points: int = 12,
                          seed: int = 0,
                          chunk: int = 50_000) -> dict:
    """Write the file (if ``path`` does not exist yet) and describe it.

    Args:
        path (str): Output file.
        scale (float): Fraction of LVIS v1 train's images (and, through
            the per-category counts, of its annotations).
        points (int): Vertices of each annotation's polygon.
        seed (int): NumPy generator seed.
        chunk (int): Annotations formatted at a time.

    Returns:
        dict: ``path``, ``images``, ``annotations``, ``bytes``.
    """
    num_images = max(1, int(round(LVIS_V1_TRAIN_IMAGES * scale)))
    img, cat, stats = lvis_like_pairs(num_images, seed, count_scale=scale)
    if osp.exists(path):
        return dict(path=path, images=num_images, annotations=len(img),
                    bytes=os.path.getsize(path))
    rng = np.random.default_rng(seed + 1)
    img_ids = rng.permutation(np.arange(1, 6 * num_images))[:num_images] + 1
    wh = rng.integers(200, 640, size=(num_images, 2))
    tmp = f'{path}.tmp{os.getpid()}'
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    cat_ids = stats.cat_ids
    with open(tmp, 'w') as f:
        f.write('{"info": {"description": "mmlongtail LVIS v1 train-size '
                'synthetic annotations"}, "images": [')
        for i in range(num_images):
            neg = np.sort(rng.choice(cat_ids, 6, replace=False)).tolist()
            iid, (w, h) = int(img_ids[i]), wh[i].tolist()
            f.write(('' if i == 0 else ', ') + (
                f'{{"id": {iid}, "width": {w}, "height": {h}, "coco_url": '
                f'"http://images.cocodataset.org/train2017/{iid:012d}.jpg", '
                f'"neg_category_ids": {neg}, '
                '"not_exhaustive_category_ids": []}'))
        f.write('], "annotations": [')
        t = np.linspace(0, 2 * np.pi, points, endpoint=False)
        for s in range(0, len(img), chunk):
            im, ca = img[s:s + chunk], cat[s:s + chunk]
            n = len(im)
            u = rng.uniform(0, 1, size=(n, 4))
            W, H = wh[im, 0], wh[im, 1]
            x, y = u[:, 0] * W * 0.5, u[:, 1] * H * 0.5
            w, h = 2 + u[:, 2] * W * 0.4, 2 + u[:, 3] * H * 0.4
            boxes = _fmt(np.stack([x, y, w, h], 1))
            px = x[:, None] + w[:, None] / 2 * (1 + np.cos(t))
            py = y[:, None] + h[:, None] / 2 * (1 + np.sin(t))
            polys = _fmt(np.stack([px, py], 2).reshape(n, -1))
            areas = np.round(w * h * 0.78, 2).tolist()
            iids = img_ids[im].tolist()
            parts = [
                ('' if s + k == 0 else ', ') +
                f'{{"id": {s + k + 1}, "image_id": {iids[k]}, '
                f'"category_id": {c}, "bbox": [{boxes[k]}], '
                f'"area": {areas[k]!r}, "segmentation": [[{polys[k]}]]}}'
                for k, c in enumerate(ca.tolist())
            ]
            f.write(''.join(parts))
        f.write('], "categories": [')
        f.write(', '.join(
            f'{{"id": {int(c)}, "name": {json.dumps(n)}, "frequency": "{fr}", '
            f'"image_count": {int(ic)}, "instance_count": {int(nc)}}}'
            for c, n, fr, ic, nc in zip(cat_ids, stats.names, stats.frequency,
                                        stats.image_count,
                                        stats.instance_count)))
        f.write(']}')
    os.replace(tmp, path)
    return dict(path=path, images=num_images, annotations=len(img),
                bytes=os.path.getsize(path))
