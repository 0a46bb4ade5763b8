"""LVIS evaluation backends: which evaluator runs (:func:`run_evaluation`).

Two evaluators compute LVIS's metrics (Gupta et al., CVPR 2019) on the same
inputs:

* ``'lvis'``: the official lvis-api (``lvis.LVISEval``), run on NumPy 2
  through :func:`mmlongtail.compat.patch_lvis_numpy`. Pure Python per
  (image, category) pair, so minutes on LVIS v1 val.
* ``'fast'``: faster-coco-eval's C++ evaluator in LVIS mode
  (``COCOeval_faster(..., lvis_style=True)``), which applies the same federated
  rules: detections of a category neither annotated in nor listed as negative
  for an image are dropped, and unmatched detections of a category listed in
  the image's ``not_exhaustive_category_ids`` are ignored.

Both keep at most ``max_dets`` (300) detections per image, by score across all
categories; this cut is applied by :func:`topk_per_image` when predictions are
collected, so both evaluators see the same detections.

Predictions travel as a few NumPy columns (:class:`DetectionColumns`, in
:mod:`.lvis_detections`, which also owns their vectorized conversion to the
per-detection dicts the evaluators index: ``xywh`` boxes and category ids by
array operations); ground truth is :mod:`.lvis_gt`'s, each evaluator is one
module (:mod:`.lvis_api_eval`, :mod:`.faster_eval`).

The ``'fast'`` path differs from stock faster-coco-eval in how much it visits,
not in what it computes (the tests compare both backends with lvis-api run
directly):

1. detections LVIS would drop (category neither annotated in nor negative for
   their image) are removed with one vectorized lookup before any dict is
   built (on LVIS-like data that is most of them);
2. each category is matched and accumulated by faster-coco-eval's C++ code
   over only the images where it has ground truth or a kept detection; the
   other (image, category) pairs contribute nothing, and categories without
   ground truth are -1 (left out of every mean) whatever their detections.
   On the benchmark's 1,500 images this visits ~7k of 1.45M pairs;
3. the summary (AP, APr, ...) is computed from the accumulated arrays by
   :func:`summarize_lvis`, with lvis-api's definitions.

Ground truth ``iscrowd`` is not an LVIS concept: lvis-api ignores it while
COCO-style evaluators treat crowd boxes as ignore regions, so ground truth
with ``iscrowd=1`` would make the backends differ. LVIS files have none.
"""
from .faster_eval import evaluate_faster
from .lvis_api_eval import evaluate_lvis_api
from .lvis_detections import DetectionColumns
from .lvis_eval_output import IOU_TYPES, EvalOutput
from .lvis_gt import LVISGroundTruth

#: The evaluators, by name.
BACKENDS = ('fast', 'lvis')
EVALUATORS = {'fast': evaluate_faster, 'lvis': evaluate_lvis_api}


def run_evaluation(backend: str, gt: LVISGroundTruth, dets: DetectionColumns,
                   iou_type: str, max_dets: int = 300,
                   pooled: bool = False) -> EvalOutput:
    """Dispatch to the evaluator named ``backend`` (``'fast'``/``'lvis'``).

    ``max_dets``: per-image cap (-1: none); ``pooled``: also AP^pool.
    """
    if backend not in EVALUATORS:
        raise ValueError(f'backend must be one of {BACKENDS}, got '
                         f'{backend!r}')
    if iou_type not in IOU_TYPES:
        raise ValueError(f'iou_type must be one of {IOU_TYPES}, got '
                         f'{iou_type!r}')
    return EVALUATORS[backend](gt, dets, iou_type, max_dets, pooled)
