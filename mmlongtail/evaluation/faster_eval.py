"""The ``'fast'`` backend: faster-coco-eval's C++ evaluator in LVIS mode,
visiting only the (image, category) pairs that can count (see
:mod:`.lvis_backends` for what differs from stock faster-coco-eval; the
internals it needs live in :mod:`.faster_coco`)."""
from itertools import repeat
from typing import Any

import numpy as np

from . import faster_coco
from .faster_coco import silent
from .lvis_detections import DetectionColumns
from .lvis_eval_output import (AP_KEYS, AR_KEYS, BOUNDARY_DILATION_RATIO,
                               MASK_TYPES, EvalOutput, empty_output,
                               summarize_lvis)
from .lvis_gt import LVISGroundTruth
from .pooled import pooled_summary


def faster_results(gt: LVISGroundTruth, dets: DetectionColumns,
                   iou_type: str) -> Any:
    """A ``faster_coco_eval.COCO`` results object built directly from the
    columns (what ``COCO.loadRes`` would produce, without its per-detection
    Python pass)."""
    from faster_coco_eval import COCO
    n = len(dets)
    # lvis-api and COCO's loadRes give box-format results the box area, also
    # when they carry a mask (mmdet's segm results do).
    area = (dets.bbox[:, 2] * dets.bbox[:, 3]).tolist()
    cols = [
        dets.image_id.tolist(),
        dets.category_id.tolist(),
        dets.bbox.tolist(),
        dets.score.tolist(), area,
        range(1, n + 1),
        repeat(0, n)
    ]
    keys = ['image_id', 'category_id', 'bbox', 'score', 'area', 'id',
            'iscrowd']
    if iou_type in MASK_TYPES:
        keys.append('segmentation')
        cols.append(dets.segmentation)
    anns = [dict(zip(keys, row)) for row in zip(*cols)]
    res = COCO(print_function=silent)
    res.dataset = {
        'images': gt.dataset['images'],
        'categories': gt.dataset['categories'],
        'annotations': anns,
    }
    res.createIndex()
    return res


def evaluate_faster(gt: LVISGroundTruth, dets: DetectionColumns,
                    iou_type: str, max_dets: int = 300,
                    pooled: bool = False,
                    dilation_ratio: float = BOUNDARY_DILATION_RATIO
                    ) -> EvalOutput:
    """Evaluate with faster-coco-eval's C++ evaluator in LVIS mode.

    ``max_dets=-1`` keeps every detection (fixed AP); ``pooled`` adds
    AP^pool; ``iou_type='boundary'`` uses faster-coco-eval's boundary IoU
    (min(mask IoU, boundary IoU), the same bands as lvis-api's challenge
    branch: checked by the tests and ``tools/compare_lvis_official.py``).
    """
    faster_coco.require()
    if len(dets) == 0:
        return empty_output(gt.cat_ids, pooled)
    coco_gt = gt.faster_coco()
    # Build per-detection dicts only for the detections LVIS evaluates: on
    # LVIS-like data most detections fall in categories neither annotated
    # nor verified absent in their image.
    keep = gt.federated_mask(dets)
    dets = dets.subset(np.flatnonzero(keep))
    coco_dt = faster_results(gt, dets, iou_type)
    # A category without ground truth in the evaluated images has precision
    # and recall -1 (it is left out of every mean) whatever its detections, so
    # only the categories with ground truth are evaluated; pooled AP also
    # counts the false positives of the others.
    gt_cats = gt.cat_ids_with_annotations()
    K = gt.num_classes
    if len(gt_cats) == 0:
        return EvalOutput({k: -1.0 for k in AP_KEYS + AR_KEYS},
                          -np.ones((10, 101, K, 4)), -np.ones((10, K, 4)),
                          gt.cat_ids.tolist(),
                          {p: -1.0 for p in ('all', 'r', 'c', 'f')}
                          if pooled else None)
    ev = faster_coco.faster_lvis_eval_class()(
        coco_gt, coco_dt, iou_type, lvis_style=True, print_function=silent,
        boundary_dilation_ratio=dilation_ratio)
    if max_dets < 0:  # no per-image cap: as many as any pair has
        pair = np.unique(np.stack([dets.image_id, dets.category_id], 1),
                         axis=0, return_counts=True)[1] if len(dets) else [1]
        max_dets = int(max(np.max(pair), 1))
    ev.params.maxDets = [max_dets]
    ev.params.imgIds = gt.img_ids.tolist()
    ev.params.catIds = gt_cats.tolist()
    if pooled:
        ev.record_categories = np.unique(np.concatenate(
            [gt_cats, dets.category_id])).tolist()
    ev.images_per_category = gt.images_per_category(dets)
    ev.evaluate()
    cols = np.searchsorted(gt.cat_ids, np.asarray(ev.params.catIds))
    p = ev.eval['precision'][..., -1]
    r = ev.eval['recall'][..., -1]
    precision = np.full(p.shape[:2] + (K, ) + p.shape[3:], -1.0)
    recall = np.full(r.shape[:1] + (K, ) + r.shape[2:], -1.0)
    precision[:, :, cols] = p
    recall[:, cols] = r
    summary = summarize_lvis(precision, recall, gt.frequency,
                             np.asarray(ev.params.iouThrs))
    pooled_ap = None
    if pooled:
        outcomes = [(i, int(np.searchsorted(gt.cat_ids, c))) + rec
                    for c, recs in ev.records.items() for i, rec in recs]
        pooled_ap = pooled_summary(outcomes, gt.frequency,
                                   np.asarray(ev.params.recThrs),
                                   len(ev.params.iouThrs))
    return EvalOutput(summary, precision, recall, gt.cat_ids.tolist(),
                      pooled_ap)


