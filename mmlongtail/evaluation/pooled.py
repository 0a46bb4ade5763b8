"""Pooled AP (AP^pool) from per-detection match outcomes.

Dave et al., "Evaluating Large-Vocabulary Object Detectors: The Devil is in
the Details" (2021), Sec. 4: detections are matched to ground truth per
category exactly as in LVIS AP, but precision and recall are accumulated over
all categories of a *pool* at once (all, rare, common, frequent), as if the
pool were one category. A detector whose scores are not comparable across
classes ranks its true positives of one class below false positives of
another, which lowers AP^pool but not the per-class AP.

The accumulation follows LVIS's per-category one (lvis-api's
``LVISEval.accumulate``) with the pool in place of the category:

* the pool's detections are concatenated pair by pair, (image, category)
  pairs in image-id order then category order, each pair's detections in the
  evaluator's order, and sorted by descending score with a stable sort (so
  ties keep that order; large-vocab-devil's ``LVISPooledEval`` concatenates
  its per-pair results the same way);
* ``precision = tp / (tp + fp + eps)``, made monotone from the right and read
  at the 101 recall thresholds (0 past the last recall reached); ``recall``
  over the pool's non-ignored ground truth;
* AP^pool is the mean over IoU thresholds and recall thresholds, for area
  'all' (the only area large-vocab-devil reports), -1 for a pool without
  ground truth.

Both backends feed it: lvis-api through ``LVISEval.eval_imgs``,
faster-coco-eval through :mod:`mmlongtail.evaluation.faster_coco`.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from mmlongtail.datasets.category_stats import FREQUENCY_GROUPS

#: Pools reported, in order: all categories, then LVIS's frequency groups.
POOLS = ('all', ) + tuple(FREQUENCY_GROUPS)

#: ``(image id, category index, scores (D,), tp (T, D) bool,
#: ignored (T, D) bool, num_gt)`` for one evaluated (image, category) pair,
#: area 'all'. ``tp`` and ``ignored`` are exclusive; a detection that is
#: neither is a false positive.
PairOutcome = Tuple[int, int, np.ndarray, np.ndarray, np.ndarray, int]


def pooled_precision(outcomes: Sequence[PairOutcome], in_pool: np.ndarray,
                     rec_thrs: np.ndarray, num_thrs: int) -> np.ndarray:
    """Interpolated precision ``(T, R)`` of the pairs whose category index
    ``k`` has ``in_pool[k]``, accumulated as one category; all -1 when they
    have no ground truth."""
    chosen = [o for o in outcomes if in_pool[o[1]]]
    R = len(rec_thrs)
    num_gt = sum(o[5] for o in chosen)
    if num_gt == 0:
        return -np.ones((num_thrs, R))
    chosen.sort(key=lambda o: (o[0], o[1]))
    if chosen and any(o[2].shape[0] for o in chosen):
        scores = np.concatenate([o[2] for o in chosen])
        tp = np.concatenate([o[3] for o in chosen], axis=1)
        ig = np.concatenate([o[4] for o in chosen], axis=1)
    else:
        scores = np.zeros(0)
        tp = ig = np.zeros((num_thrs, 0), bool)
    order = np.argsort(-scores, kind='stable')
    tp = tp[:, order]
    fp = ~(tp | ig[:, order])
    tp_sum = np.cumsum(tp, axis=1, dtype=np.float64)
    fp_sum = np.cumsum(fp, axis=1, dtype=np.float64)
    out = np.zeros((num_thrs, R))
    n = tp_sum.shape[1]
    if n == 0:
        return out
    for t in range(num_thrs):
        rc = tp_sum[t] / num_gt
        pr = tp_sum[t] / (tp_sum[t] + fp_sum[t] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        pos = np.searchsorted(rc, rec_thrs, side='left')
        ok = pos < n
        out[t, ok] = pr[pos[ok]]
    return out


def pooled_summary(outcomes: Sequence[PairOutcome], frequency: Sequence[str],
                   rec_thrs: np.ndarray, num_thrs: int,
                   pools: Sequence[str] = POOLS) -> Dict[str, float]:
    """AP^pool per pool: ``{'all' | 'r' | 'c' | 'f': AP}`` (-1 for a pool
    without ground truth).

    Args:
        outcomes: The evaluated pairs (:data:`PairOutcome`), any order.
        frequency: Each category index's LVIS group ``'r'/'c'/'f'``.
        rec_thrs: ``(R,)`` recall thresholds (LVIS: 0, 0.01, ..., 1).
        num_thrs: Number of IoU thresholds ``T`` of the outcomes.
        pools: Which pools.
    """
    freq = np.asarray(list(frequency))
    out: Dict[str, float] = {}
    for pool in pools:
        if pool not in POOLS:
            raise ValueError(f'pool must be one of {POOLS}, got {pool!r}')
        in_pool = np.ones(len(freq), bool) if pool == 'all' else \
            freq == pool
        p = pooled_precision(outcomes, in_pool, rec_thrs, num_thrs)
        v = p[p > -1]
        out[pool] = float(v.mean()) if v.size else -1.0
    return out


def outcomes_from_lvis_eval(ev) -> List[PairOutcome]:
    """The area-'all' pair outcomes of an lvis-api ``LVISEval`` after its
    ``evaluate()`` (read from its public ``eval_imgs``)."""
    p = ev.params
    num_imgs, num_areas = len(p.img_ids), len(p.area_rng)
    T = len(p.iou_thrs)
    out: List[PairOutcome] = []
    for k in range(len(p.cat_ids)):
        base = k * num_areas * num_imgs  # area 'all' is the first range
        for i in range(num_imgs):
            e = ev.eval_imgs[base + i]
            if e is None:
                continue
            scores = np.asarray(e['dt_scores'], np.float64)
            d = scores.shape[0]
            matched = np.asarray(e['dt_matches']).reshape(T, d) > 0
            ignored = np.asarray(e['dt_ignore'], bool).reshape(T, d)
            n_gt = int(np.count_nonzero(np.asarray(e['gt_ignore']) == 0))
            out.append((int(p.img_ids[i]), k, scores, matched & ~ignored,
                        ignored, n_gt))
    return out
