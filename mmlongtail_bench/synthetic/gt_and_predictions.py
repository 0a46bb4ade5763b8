"""Annotation-only LVIS-format ground truth and detector-like predictions
(no images).

Used by the metric's tests and by ``tools/benchmark_lvis_eval.py``; nothing in
the training pipeline depends on it. The ground truth follows LVIS v1's
structure (Gupta et al., "LVIS: A Dataset for Large Vocabulary Instance
Segmentation", CVPR 2019):

* categories carry ``frequency`` / ``image_count`` / ``instance_count`` taken
  from a :class:`~mmlongtail.datasets.CategoryStats` (e.g. the packaged LVIS v1
  train statistics), so r/c/f groups are LVIS's;
* the categories present in an image are drawn with probability proportional
  to their training image count (head classes are common, tail classes rare);
  instances per present category follow the class's instances-per-image ratio;
* every image has ``neg_category_ids`` (verified absent) and
  ``not_exhaustive_category_ids`` (a subset of the present ones), the two
  fields of LVIS's federated annotation.

Predictions are a mix of jittered ground-truth boxes (true and confused
labels) and background boxes over random categories, scored so that true
positives tend to rank higher, in mmdet's ``pred_instances`` layout (xyxy
boxes, scores, 0-based labels in category-id order).
"""
from typing import Dict, List, Optional

import numpy as np

from mmlongtail.datasets.category_stats import (CategoryStats, StatsSource,
                                                load_category_stats)


def _polygon_of_box(x: float, y: float, w: float, h: float,
                    rng: np.random.Generator) -> List[float]:
    """An octagon inscribed in the box, slightly perturbed (a mask that is not
    its own bounding box)."""
    cx, cy = x + w / 2, y + h / 2
    ang = np.arange(8) * (np.pi / 4) + rng.uniform(0, np.pi / 4)
    rad = rng.uniform(0.75, 1.0, size=8)
    px = np.clip(cx + rad * np.cos(ang) * w / 2, x, x + w)
    py = np.clip(cy + rad * np.sin(ang) * h / 2, y, y + h)
    return np.stack([px, py], 1).round(2).ravel().tolist()


def make_lvis_gt(num_images: int,
                 stats: StatsSource = 'lvis_v1',
                 num_classes: Optional[int] = None,
                 mean_categories: float = 3.5,
                 max_instances: int = 12,
                 num_neg: int = 6,
                 not_exhaustive_prob: float = 0.15,
                 empty_image_prob: float = 0.02,
                 image_size: tuple = (480, 640),
                 with_masks: bool = False,
                 category_power: float = 1.0,
                 seed: int = 0) -> dict:
    """Generate an LVIS-format ground-truth dict.

    Args:
        num_images (int): Number of images.
        stats: Category statistics source for :func:`load_category_stats`
            (``'lvis_v1'`` gives the 1203 LVIS v1 categories).
        num_classes (int, optional): Keep only the first ``num_classes``
            categories (by id) of ``stats``, re-drawn so that all three
            frequency groups are represented. Defaults to all.
        mean_categories (float): Mean number of positive categories per image.
            Defaults to 3.5.
        max_instances (int): Cap on instances per category per image.
        num_neg (int): ``neg_category_ids`` per image. Defaults to 6.
        not_exhaustive_prob (float): Probability that a positive category is
            listed in ``not_exhaustive_category_ids``. Defaults to 0.15.
        empty_image_prob (float): Probability that an image has no
            annotation (it still has negative categories). Defaults to 0.02.
        image_size (tuple): ``(height, width)`` of every image.
        with_masks (bool): Add polygon ``segmentation`` (and mask ``area``);
            otherwise ``area`` is the box area and ``segmentation`` the box.
        category_power (float): A category is drawn with probability
            proportional to ``image_count ** category_power``: 1 follows the
            training distribution, smaller values flatten it so that small
            sets still contain rare categories. Defaults to 1.0.
        seed (int): NumPy generator seed.

    Returns:
        dict: ``images``, ``annotations`` and ``categories`` in LVIS v1 form.
    """
    rng = np.random.default_rng(seed)
    cs: CategoryStats = load_category_stats(stats)
    idx = np.arange(cs.num_classes)
    if num_classes is not None and num_classes < cs.num_classes:
        # a few of each group, then fill in id order
        per = max(1, num_classes // 3)
        chosen: List[int] = []
        for g in ('r', 'c', 'f'):
            chosen += idx[cs.group_mask(g)][:per].tolist()
        rest = [i for i in idx.tolist() if i not in set(chosen)]
        chosen = sorted(chosen + rest[:num_classes - len(chosen)])
        idx = np.array(chosen[:num_classes])
    cat_ids = cs.cat_ids[idx]
    img_count = cs.image_count[idx].astype(np.float64)
    inst_per_img = np.maximum(
        cs.instance_count[idx] / np.maximum(cs.image_count[idx], 1), 1.0)
    w_cat = (img_count + 0.5)**category_power
    p_cat = w_cat / w_cat.sum()
    categories = [{
        'id': int(cs.cat_ids[i]),
        'name': cs.names[i],
        'synset': cs.names[i],
        'frequency': cs.frequency[i],
        'image_count': int(cs.image_count[i]),
        'instance_count': int(cs.instance_count[i]),
    } for i in idx]
    H, W = image_size
    images: List[dict] = []
    annotations: List[dict] = []
    for k in range(num_images):
        img_id = k + 1
        if rng.random() < empty_image_prob:
            pos = np.zeros(0, np.int64)
        else:
            n_pos = min(1 + rng.poisson(max(mean_categories - 1, 0)),
                        len(cat_ids))
            pos = rng.choice(len(cat_ids), n_pos, replace=False, p=p_cat)
        others = np.setdiff1d(np.arange(len(cat_ids)), pos)
        neg = rng.choice(others, min(num_neg, len(others)), replace=False)
        not_ex = pos[rng.random(len(pos)) < not_exhaustive_prob]
        images.append({
            'id': img_id,
            'height': H,
            'width': W,
            'file_name': f'{img_id:012d}.jpg',
            'neg_category_ids': sorted(int(c) for c in cat_ids[neg]),
            'not_exhaustive_category_ids':
            sorted(int(c) for c in cat_ids[not_ex]),
        })
        for c in pos:
            n_inst = int(min(max_instances,
                             1 + rng.poisson(inst_per_img[c] - 1)))
            for _ in range(n_inst):
                # log-uniform sizes cover small / medium / large
                w = float(np.exp(rng.uniform(np.log(6), np.log(W * 0.8))))
                h = float(np.clip(w * np.exp(rng.normal(0, 0.4)), 4, H * 0.9))
                x = float(rng.uniform(0, W - w))
                y = float(rng.uniform(0, H - h))
                box = [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]
                ann = {
                    'id': len(annotations) + 1,
                    'image_id': img_id,
                    'category_id': int(cat_ids[c]),
                    'bbox': box,
                    'area': round(box[2] * box[3], 2),
                }
                if with_masks:
                    ann['segmentation'] = [_polygon_of_box(*box, rng)]
                else:
                    x1, y1, bw, bh = box
                    ann['segmentation'] = [[
                        x1, y1, x1, y1 + bh, x1 + bw, y1 + bh, x1 + bw, y1
                    ]]
                annotations.append(ann)
    if with_masks:
        import pycocotools.mask as mask_util
        for ann in annotations:
            rles = mask_util.frPyObjects(ann['segmentation'], H, W)
            ann['area'] = float(mask_util.area(mask_util.merge(rles)))
    return {
        'info': {'description': 'mmlongtail synthetic LVIS-format GT'},
        'images': images,
        'annotations': annotations,
        'categories': categories,
    }


def make_predictions(gt: dict,
                     dets_per_image: int = 260,
                     seed: int = 0,
                     with_masks: bool = False,
                     tp_recall: float = 0.7,
                     confuse_prob: float = 0.2) -> List[Dict[str, np.ndarray]]:
    """Detector-like predictions for every image of ``gt``.

    Args:
        gt (dict): Ground truth from :func:`make_lvis_gt` (or any LVIS dict).
        dets_per_image (int): Mean detections per image (Poisson around it,
            at least 1).
        seed (int): NumPy generator seed.
        with_masks (bool): Add ``masks`` ``(N, H, W)`` bool: the box interior.
        tp_recall (float): Fraction of GT instances that get a jittered box.
        confuse_prob (float): Probability that such a box gets a wrong label.

    Returns:
        list[dict]: One per image, in ``gt['images']`` order, each with
        ``img_id`` (int), ``bboxes`` ``(N, 4)`` float32 xyxy, ``scores``
        ``(N,)`` float32, ``labels`` ``(N,)`` int64 (index into the categories
        sorted by id) and optionally ``masks``.
    """
    rng = np.random.default_rng(seed)
    cat_ids = np.array(sorted(c['id'] for c in gt['categories']), np.int64)
    num_classes = len(cat_ids)
    by_img: Dict[int, List[dict]] = {}
    for ann in gt['annotations']:
        by_img.setdefault(ann['image_id'], []).append(ann)
    out = []
    for img in gt['images']:
        H, W = img['height'], img['width']
        anns = by_img.get(img['id'], [])
        n = max(1, int(rng.poisson(dets_per_image)))
        boxes, labels, scores = [], [], []
        if anns:
            gtb = np.array([a['bbox'] for a in anns], np.float64)
            gtl = np.searchsorted(cat_ids,
                                  np.array([a['category_id'] for a in anns]))
            hit = rng.random(len(anns)) < tp_recall
            # a few duplicates per hit instance
            rep = rng.integers(1, 4, size=len(anns)) * hit
            src = np.repeat(np.arange(len(anns)), rep)
            b = gtb[src].copy()
            jit = rng.normal(0, 0.08, size=(len(src), 4))
            b[:, 0] += jit[:, 0] * b[:, 2]
            b[:, 1] += jit[:, 1] * b[:, 3]
            b[:, 2] *= np.exp(jit[:, 2])
            b[:, 3] *= np.exp(jit[:, 3])
            lab = gtl[src].copy()
            wrong = rng.random(len(src)) < confuse_prob
            lab[wrong] = rng.integers(0, num_classes, size=int(wrong.sum()))
            boxes.append(b)
            labels.append(lab)
            scores.append(np.clip(rng.beta(5, 2, size=len(src)), 1e-4, 1))
        n_bg = max(0, n - sum(len(x) for x in labels))
        w = np.exp(rng.uniform(np.log(4), np.log(W * 0.7), size=n_bg))
        h = np.clip(w * np.exp(rng.normal(0, 0.4, size=n_bg)), 3, H * 0.9)
        x = rng.uniform(0, W - w)
        y = rng.uniform(0, H - h)
        boxes.append(np.stack([x, y, w, h], 1))
        labels.append(rng.integers(0, num_classes, size=n_bg))
        scores.append(np.clip(rng.beta(1.2, 6, size=n_bg), 1e-4, 1))
        b = np.concatenate(boxes)
        xyxy = np.stack(
            [b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], 1)
        xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, W)
        xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, H)
        res = {
            'img_id': int(img['id']),
            'bboxes': xyxy.astype(np.float32),
            'scores': np.concatenate(scores).astype(np.float32),
            'labels': np.concatenate(labels).astype(np.int64),
        }
        if with_masks:
            ys = np.arange(H)[None, :, None]
            xs = np.arange(W)[None, None, :]
            bb = res['bboxes']
            res['masks'] = ((xs >= np.floor(bb[:, 0, None, None]))
                            & (xs < np.ceil(bb[:, 2, None, None]) - 1)
                            & (ys >= np.floor(bb[:, 1, None, None]))
                            & (ys < np.ceil(bb[:, 3, None, None])))
        out.append(res)
    return out
