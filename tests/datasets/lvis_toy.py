"""A small LVIS v1-format file with a long tail and edge cases, loaded as
mmdet's ``LVISV1Dataset`` (shared by the dataset tests)."""
import json

import numpy as np
from mmdet.datasets import LVISV1Dataset


def _ann(aid, img_id, cat_id, x=2.0, y=2.0, w=10.0, h=8.0):
    return dict(
        id=aid,
        image_id=img_id,
        category_id=cat_id,
        bbox=[x, y, w, h],
        area=w * h,
        segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]],
        iscrowd=0)


def write_lvis(path, num_images=60, seed=0):
    """A small LVIS v1-format file with a long tail and edge cases.

    Image ids are shuffled and non-contiguous. Image positions (in file
    order) with special content:

    * 3 and 17: no annotations;
    * 5: small (20 px): dropped by ``min_size=32``;
    * 8: its only annotation is degenerate (w < 1), which mmdet's parser
      drops; with ``degenerate=False`` the box is normal.
    """
    rng = np.random.default_rng(seed)
    cat_ids = [3, 7, 11, 20, 21, 40]
    weights = np.array([30, 12, 6, 3, 2, 1], float)
    img_ids = rng.permutation(np.arange(1, 4 * num_images))[:num_images] * 5
    images, anns = [], []
    aid = 1
    for pos, iid in enumerate(img_ids.tolist()):
        side = 20 if pos == 5 else 64
        images.append(
            dict(
                id=iid,
                width=side,
                height=side,
                coco_url=f'http://images.cocodataset.org/train2017/'
                f'{iid:012d}.jpg',
                neg_category_ids=[],
                not_exhaustive_category_ids=[]))
        if pos in (3, 17):
            continue
        if pos == 8:
            anns.append(_ann(aid, iid, 40, w=0.5))
            aid += 1
            continue
        k = int(rng.integers(1, 5))
        for c in rng.choice(cat_ids[:-1], size=k, p=weights[:-1] /
                            weights[:-1].sum()):
            anns.append(_ann(aid, iid, int(c), w=float(rng.integers(4, 30))))
            aid += 1
    cats = [dict(id=c, name=f'cat_{c}', frequency='r') for c in cat_ids]
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)
    return img_ids


def make_dataset(ann_file, filter_cfg=None, serialize_data=True, **kw):
    with open(ann_file) as f:
        names = tuple(c['name'] for c in json.load(f)['categories'])
    return LVISV1Dataset(
        ann_file=ann_file,
        metainfo=dict(classes=names),
        data_prefix=dict(img=''),
        filter_cfg=filter_cfg,
        pipeline=[],
        serialize_data=serialize_data,
        lazy_init=False,
        **kw)


def lvis_v1_categories():
    """LVIS v1's 1203 categories (id, name), from the packaged statistics."""
    from mmlongtail.datasets.category_stats import load_category_stats
    stats = load_category_stats('lvis_v1')
    return [
        dict(id=int(i), name=n) for i, n in zip(stats.cat_ids, stats.names)
    ]


def lvis_v05_like_categories():
    """1230 categories in LVIS v0.5's shape: v0.5 numbers its classes 1-1230
    and starts with 'acorn' (v1: 'aerosol_can'); the rest of its names are
    stand-ins here."""
    names = ['acorn'] + [c['name'] for c in lvis_v1_categories()]
    names += [f'v05_extra_{i}' for i in range(1230 - len(names))]
    return [dict(id=i + 1, name=n) for i, n in enumerate(names)]


def write_with_categories(path, cats, num_images=6):
    """A small LVIS v1-format file with the given categories: each image has
    one annotation of each of the first three categories."""
    images, anns = [], []
    for k in range(num_images):
        iid = 10 + 7 * k
        images.append(
            dict(id=iid, width=64, height=48,
                 coco_url=f'http://images.cocodataset.org/train2017/'
                 f'{iid:012d}.jpg'))
        for j, c in enumerate(cats[:3]):
            anns.append(_ann(len(anns) + 1, iid, c['id'], x=2.0 + 5 * j))
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)
    return str(path)
