"""Box prediction of an R-CNN box head, with a home for test-time scoring.

mmlongtail's replacement of mmdet's ``BBoxHead._predict_by_feat_single``, for
any ``BBoxHead`` subclass (mmdet's heads too), in three steps:

(a) :func:`classifier_scores`: logits to ``(N, C + 1)`` probabilities, by the
    head's loss (``get_activation``, the classifier protocol) or softmax,
    exactly as mmdet does;
(b) :func:`apply_scorers`: the test-time scorers configured in
    ``rcnn_test_cfg[SCORERS_KEY]`` (``score_calibration``), in order. Each
    gets the raw logits, the current probabilities and the loss's
    :class:`~mmlongtail.models.losses.ClassifierLayout`, and returns new
    probabilities of the same shape. Absent or empty: the scores are
    untouched and predictions are bit-identical to mmdet's;
(c) :func:`decode_and_nms`: decode the box deltas and run mmdet's
    ``multiclass_nms``, as mmdet does; or, with ``early_stop_nms=True`` /
    ``topk_per_class=k`` in ``rcnn_test_cfg``, the exact early-stopping NMS
    of :mod:`mmlongtail.models.utils.multiclass_nms` (same detections,
    boxes decoded only where visited; ``topk_per_class`` is the Fixed AP
    mode).

Scorers change scores only, never training: they are built from the test
config, hold no trained state and are not part of the model's
``state_dict``, so any checkpoint can be rescored by a config delta (see the
README's "Test-time scoring").
"""
from typing import Any, List, Optional, Sequence

import torch.nn.functional as F
from mmdet.models.layers import multiclass_nms
from mmdet.models.utils import empty_instances
from mmdet.structures.bbox import get_box_tensor, scale_boxes
from mmengine.structures import InstanceData
from torch import Tensor

from mmlongtail.models.losses.protocol import ClassifierLayout, head_layout
from mmlongtail.models.utils.multiclass_nms import (lazy_decode_and_nms,
                                                    uses_exact_nms)
from mmlongtail.registry import MODELS

#: Key of ``rcnn_test_cfg`` listing the test-time scorers (configs).
SCORERS_KEY = 'score_calibration'


def build_scorers(cfgs: Optional[Sequence[Any]]) -> List[Any]:
    """Build test-time scorers from a list of configs (None: no scorer).

    Raises:
        ValueError: ``cfgs`` is not a list (a single dict is a common slip).
    """
    if cfgs is None:
        return []
    if not isinstance(cfgs, (list, tuple)):
        raise ValueError(
            f'{SCORERS_KEY} must be a list of scorer configs, got '
            f'{type(cfgs).__name__}: write {SCORERS_KEY}=[dict(type=...)]')
    return [c if callable(c) else MODELS.build(c) for c in cfgs]


def classifier_scores(bbox_head: Any, cls_score: Tensor) -> Tensor:
    """Step (a): ``(N, O)`` logits to ``(N, C + 1)`` probabilities.

    Like mmdet 3.3, the loss's ``get_activation`` is used when the loss sizes
    the classifier (``custom_cls_channels``), softmax otherwise.
    """
    if bbox_head.custom_cls_channels:
        return bbox_head.loss_cls.get_activation(cls_score)
    return F.softmax(cls_score, dim=-1)


def apply_scorers(scorers: Sequence[Any], cls_score: Tensor, scores: Tensor,
                  layout: ClassifierLayout) -> Tensor:
    """Step (b): run each scorer on the scores, in order.

    Args:
        scorers: Callables ``(cls_score, scores, layout) -> scores``.
        cls_score (Tensor): ``(N, O)`` raw logits.
        scores (Tensor): ``(N, C + 1)`` probabilities, background last.
        layout (ClassifierLayout): The classifier's layout.

    Returns:
        Tensor: ``(N, C + 1)`` scores.

    Raises:
        ValueError: A scorer returned another shape.
    """
    for scorer in scorers:
        new = scorer(cls_score, scores, layout)
        if not isinstance(new, Tensor) or new.shape != scores.shape:
            got = tuple(new.shape) if isinstance(new, Tensor) else type(new)
            raise ValueError(
                f'test-time scorer {type(scorer).__name__} must return scores '
                f'of shape {tuple(scores.shape)}, got {got}')
        scores = new
    return scores


def decode_and_nms(bbox_head: Any,
                   roi: Tensor,
                   bbox_pred: Optional[Tensor],
                   scores: Tensor,
                   img_meta: dict,
                   rescale: bool = False,
                   rcnn_test_cfg: Optional[Any] = None) -> InstanceData:
    """Step (c): decode boxes and suppress, exactly as mmdet 3.3 does.

    Args:
        bbox_head: The ``BBoxHead`` (its ``bbox_coder``,
            ``reg_class_agnostic`` and ``num_classes``).
        roi (Tensor): ``(N, 5)`` rois ``(batch_index, x1, y1, x2, y2)``.
        bbox_pred (Tensor, optional): ``(N, 4)`` or ``(N, 4 * C)`` deltas;
            None for heads without regression (the rois are clipped).
        scores (Tensor): ``(N, C + 1)`` probabilities, background last.
        img_meta (dict): ``img_shape`` and, with ``rescale``,
            ``scale_factor``.
        rescale (bool): Return boxes in the original image space.
        rcnn_test_cfg: ``score_thr``, ``nms`` and ``max_per_img``; None
            returns every decoded box with its score row (mmdet's aug-test
            path).

    Returns:
        InstanceData: ``bboxes``, ``scores`` and ``labels`` (or per-class
        ``bboxes`` and ``scores`` without ``rcnn_test_cfg``).
    """
    if uses_exact_nms(rcnn_test_cfg) and (bbox_pred is None
                                          or isinstance(bbox_pred, Tensor)):
        # test_cfg.rcnn.early_stop_nms / topk_per_class: the same detections
        # as below, decoding only the candidates the NMS visits
        return lazy_decode_and_nms(bbox_head, roi, bbox_pred, scores,
                                   img_meta, rescale, rcnn_test_cfg)
    img_shape = img_meta['img_shape']
    num_rois = roi.size(0)
    if bbox_pred is not None:
        per_roi = 1 if bbox_head.reg_class_agnostic else bbox_head.num_classes
        priors = roi[:, 1:].repeat_interleave(per_roi, dim=0)
        deltas = bbox_pred.view(-1, bbox_head.bbox_coder.encode_size)
        bboxes = bbox_head.bbox_coder.decode(
            priors, deltas, max_shape=img_shape)
    else:
        bboxes = roi[:, 1:].clone()
        if img_shape is not None and bboxes.size(-1) == 4:
            bboxes[:, [0, 2]].clamp_(min=0, max=img_shape[1])
            bboxes[:, [1, 3]].clamp_(min=0, max=img_shape[0])
    if rescale and bboxes.size(0) > 0:
        if img_meta.get('scale_factor') is None:
            raise ValueError('rescale=True needs img_meta["scale_factor"]')
        bboxes = scale_boxes(bboxes,
                             [1 / s for s in img_meta['scale_factor']])
    bboxes = get_box_tensor(bboxes)
    box_dim = bboxes.size(-1)
    bboxes = bboxes.view(num_rois, -1)

    results = InstanceData()
    if rcnn_test_cfg is None:
        results.bboxes = bboxes
        results.scores = scores
        return results
    dets, labels = multiclass_nms(
        bboxes,
        scores,
        rcnn_test_cfg.score_thr,
        rcnn_test_cfg.nms,
        rcnn_test_cfg.max_per_img,
        box_dim=box_dim)
    results.bboxes = dets[:, :-1]
    results.scores = dets[:, -1]
    results.labels = labels
    return results


def predict_by_feat_single(bbox_head: Any,
                           roi: Tensor,
                           cls_score: Tensor,
                           bbox_pred: Optional[Tensor],
                           img_meta: dict,
                           rescale: bool = False,
                           rcnn_test_cfg: Optional[Any] = None,
                           scorers: Sequence[Any] = (),
                           scores: Optional[Tensor] = None) -> InstanceData:
    """One image: (a) scores, (b) scorers, (c) decode and NMS.

    Args:
        bbox_head: The ``BBoxHead`` whose logits these are.
        roi (Tensor): ``(N, 5)`` rois.
        cls_score (Tensor): ``(N, O)`` logits.
        bbox_pred (Tensor, optional): Box deltas.
        img_meta (dict): Image information.
        rescale (bool): Boxes in the original image space.
        rcnn_test_cfg: The R-CNN test config.
        scorers: Built test-time scorers (:func:`build_scorers`).
        scores (Tensor, optional): ``(N, C + 1)`` probabilities computed by
            the caller instead of step (a) (e.g. a Cascade's mean of its
            stages' scores); the scorers still run on them.

    Returns:
        InstanceData: As mmdet's ``BBoxHead._predict_by_feat_single``.
    """
    if roi.shape[0] == 0:
        return empty_instances([img_meta],
                               roi.device,
                               task_type='bbox',
                               instance_results=[InstanceData()],
                               box_type=bbox_head.predict_box_type,
                               use_box_type=False,
                               num_classes=bbox_head.num_classes,
                               score_per_cls=rcnn_test_cfg is None)[0]
    if scores is None:
        scores = classifier_scores(bbox_head, cls_score)
    if scorers:
        scores = apply_scorers(scorers, cls_score, scores,
                               head_layout(bbox_head))
    return decode_and_nms(bbox_head, roi, bbox_pred, scores, img_meta,
                          rescale, rcnn_test_cfg)


def predict_by_feat(bbox_head: Any,
                    rois: Sequence[Tensor],
                    cls_scores: Sequence[Tensor],
                    bbox_preds: Sequence[Optional[Tensor]],
                    batch_img_metas: List[dict],
                    rcnn_test_cfg: Optional[Any] = None,
                    rescale: bool = False,
                    scorers: Sequence[Any] = (),
                    scores: Optional[Sequence[Tensor]] = None
                    ) -> List[InstanceData]:
    """:func:`predict_by_feat_single` for each image of a batch (``scores``:
    per image, optional)."""
    if len(cls_scores) != len(bbox_preds):
        raise ValueError(f'{len(cls_scores)} cls_scores but '
                         f'{len(bbox_preds)} bbox_preds')
    return [
        predict_by_feat_single(bbox_head, rois[i], cls_scores[i],
                               bbox_preds[i], img_meta, rescale,
                               rcnn_test_cfg, scorers,
                               None if scores is None else scores[i])
        for i, img_meta in enumerate(batch_img_metas)
    ]
