"""The ``'lvis'`` backend: the official lvis-api (``lvis.LVISEval``), run on
NumPy 2 through :func:`mmlongtail.compat.patch_lvis_numpy`; pure Python per
(image, category) pair, so minutes on LVIS v1 val. Also the boundary band
of Boundary IoU (:func:`mask_boundary`), which its boundary mode uses."""
import logging
import math

import numpy as np

from .lvis_detections import DetectionColumns
from .lvis_eval_output import (AP_KEYS, AR_KEYS, BOUNDARY_DILATION_RATIO,
                               EvalOutput, empty_output)
from .lvis_gt import LVISGroundTruth
from .pooled import outcomes_from_lvis_eval, pooled_summary


def mask_boundary(mask: np.ndarray,
                  dilation_ratio: float = BOUNDARY_DILATION_RATIO
                  ) -> np.ndarray:
    """The inner boundary band of a binary mask (Boundary IoU's ``G_d ∩ G``).

    The band is the mask minus its erosion by a 3x3 square applied
    ``d = max(1, round(dilation_ratio * image diagonal))`` times, the image
    padded with one row/column of background so that a mask cut by the image
    border has a boundary there too (Cheng et al., CVPR 2021, Sec. 3).

    Args:
        mask (np.ndarray): ``(H, W)`` uint8 0/1.
        dilation_ratio (float): Band width over the image diagonal.

    Returns:
        np.ndarray: ``(H, W)`` uint8 0/1.
    """
    import cv2
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * math.hypot(h, w))))
    padded = np.pad(mask.astype(np.uint8), 1)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)
    return mask - eroded[1:h + 1, 1:w + 1]


def _boundary_rle(rle: dict, dilation_ratio: float) -> dict:
    import pycocotools.mask as mask_util
    band = mask_boundary(mask_util.decode(rle), dilation_ratio)
    return mask_util.encode(np.asfortranarray(band[:, :, None]))[0]


def _lvis_eval_class(iou_type: str, dilation_ratio: float):
    """lvis-api's ``LVISEval``, or for ``'boundary'`` a subclass whose IoU is
    min(mask IoU, boundary IoU) per pair (lvis-api 0.5.3 has no boundary
    mode; its ``lvis_challenge_2021`` branch computes the same quantity)."""
    from lvis import LVISEval
    if iou_type != 'boundary':
        return LVISEval

    class BoundaryLVISEval(LVISEval):

        def compute_iou(self, img_id, cat_id):
            import pycocotools.mask as mask_util
            ious = super().compute_iou(img_id, cat_id)  # mask IoU
            gt, dt = self._get_gt_dt(img_id, cat_id)
            if len(gt) == 0 or len(dt) == 0:
                return ious
            idx = np.argsort([-d['score'] for d in dt], kind='mergesort')
            dt = [dt[i] for i in idx]
            for a in gt + dt:
                if 'boundary' not in a:
                    a['boundary'] = _boundary_rle(a['segmentation'],
                                                  dilation_ratio)
            b = mask_util.iou([d['boundary'] for d in dt],
                              [g['boundary'] for g in gt], [0] * len(gt))
            return np.minimum(np.asarray(ious), np.asarray(b))

    return BoundaryLVISEval


def evaluate_lvis_api(gt: LVISGroundTruth, dets: DetectionColumns,
                      iou_type: str, max_dets: int = 300,
                      pooled: bool = False,
                      dilation_ratio: float = BOUNDARY_DILATION_RATIO
                      ) -> EvalOutput:
    """Evaluate with the official lvis-api (``LVISResults`` + ``LVISEval``).

    ``max_dets=-1`` keeps every detection (the fixed-AP protocol, whose
    per-class cut the caller has made); ``pooled`` adds AP^pool, accumulated
    from ``LVISEval.eval_imgs``; ``iou_type='boundary'`` matches on
    min(mask IoU, boundary IoU).
    """
    from mmlongtail.compat import patch_lvis_numpy
    patch_lvis_numpy()
    from lvis import LVISResults

    if len(dets) == 0:
        return empty_output(gt.cat_ids, pooled)
    lvis_gt = gt.lvis_api()
    # lvis-api logs a warning about user-provided results on every call
    res_logger = logging.getLogger('lvis.results')
    level = res_logger.level
    res_logger.setLevel(logging.ERROR)
    try:
        lvis_dt = LVISResults(lvis_gt, dets.to_anns(), max_dets=max_dets)
    finally:
        res_logger.setLevel(level)
    ev = _lvis_eval_class(iou_type, dilation_ratio)(
        lvis_gt, lvis_dt, 'bbox' if iou_type == 'bbox' else 'segm')
    ev.params.max_dets = max_dets
    ev.evaluate()
    pooled_ap = None
    if pooled:
        pooled_ap = pooled_summary(
            outcomes_from_lvis_eval(ev),
            [c['frequency'] for c in lvis_gt.load_cats(ev.params.cat_ids)],
            np.asarray(ev.params.rec_thrs), len(ev.params.iou_thrs))
    ev.accumulate()
    ev.summarize()
    res = ev.get_results()
    md = ev.params.max_dets
    summary = {k: float(res[k]) for k in AP_KEYS}
    for k in AR_KEYS:
        summary[k] = float(res[k.replace('300', str(md))])
    return EvalOutput(summary, np.asarray(ev.eval['precision']),
                      np.asarray(ev.eval['recall']), list(ev.params.cat_ids),
                      pooled_ap)


