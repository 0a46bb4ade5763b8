"""Query-based (DETR-family) heads with long-tail test-time scoring.

:class:`LongTailDINOHead` and :class:`LongTailDeformableDETRHead` are mmdet
3.3's ``DINOHead`` and ``DeformableDETRHead`` (DINO: Zhang et al., ICLR 2023;
Deformable DETR: Zhu et al., ICLR 2021) with one change, made in one mixin
(:class:`QueryHeadPredictMixin`): how one image's detections are taken from
the last decoder layer's ``(Q, C)`` logits. Training, matching and the
forward pass are mmdet's, unchanged. Per image:

(a) **Scores**: ``(Q, C)`` per-class probabilities from the loss,
    :func:`~mmlongtail.models.losses.classifier.class_probability_fn`
    (``loss_cls.class_probabilities``:
    the sigmoid for sigmoid losses, ``exp(-exp(-z))`` for ``GumbelLoss``;
    a plain sigmoid for another package's ``use_sigmoid=True`` loss such as
    mmdet's ``FocalLoss``, as mmdet's head does).
(b) **Test-time scorers**: ``test_cfg.score_calibration=[...]``, the key and
    the builder of the R-CNN heads
    (:data:`~mmlongtail.models.roi_heads.bbox_predict.SCORERS_KEY`). A
    scorer takes ``(N, C + 1)`` scores with a background column; a query
    head has none, so the scorers get the scores with
    :func:`~mmlongtail.models.losses.protocol.with_max_background`'s column
    ``1 - max_j p_j`` (the one rule of classifiers without a background
    output) and the loss's ``C``-output layout (:func:`query_layout`), and
    the column is dropped afterwards. On such a layout NorCal and logit
    adjustment use their binary form ``a s / (a s + 1 - s)`` per (query,
    class), FRACAL its sigmoid / Gumbel rule, ``ClassScoreWeights`` its
    weights; a scorer that cannot score the layout (NorCal
    ``mode='logits'`` on Gumbel scores, say) raises its own ``ValueError``.
(c) **Selection** over the ``Q x C`` (query, class) candidates, from
    ``test_cfg``:

    * default, ``max_per_img=m`` (mmdet's default: ``Q``): the best ``m``
      candidates of the image, exactly mmdet's ``view(-1).topk(m)``; with a
      sigmoid loss and no scorer the predictions are bit-identical to
      mmdet's head;
    * ``max_per_img=-1``: every candidate, by descending score;
    * ``topk_per_class=k`` (the Fixed-AP mode, Dave et al., "Evaluating
      Large-Vocabulary Object Detectors: The Devil is in the Details", 2021):
      each class keeps its best ``k`` queries. As in the R-CNN heads
      (:mod:`mmlongtail.models.utils.multiclass_nms`), ``max_per_img``
      still caps the image when it is > 0, so the Fixed-AP mode is
      ``max_per_img=-1, topk_per_class=k``: equal to the uncapped
      selection followed by each class's first ``k``;
    * ``score_thr=t`` (optional, any mode): candidates need a score strictly
      above ``t``, as the R-CNN heads' ``score_thr``. mmdet's DETR heads
      have no threshold; without the key nothing is dropped.

    Except in the default mode (whose order among equal scores is torch's
    ``topk``'s, as in mmdet), detections are ordered by descending score,
    ties by the flat index ``query * C + class``; a class's ``k``-th place
    shared by equal scores goes to the lower query index. Each query's box is
    decoded as mmdet does (``cxcywh`` to ``xyxy``, scaled to the image,
    clipped, optionally rescaled).

Cost of the Fixed-AP mode at LVIS size (900 queries x 1203 classes): one
unsorted ``topk`` of ``k`` along the query dimension of the ``(Q, C)``
matrix, two element-wise passes over it, and one int64 sort of the ``k x C``
kept candidates (361k at ``k=300``); the boxes are decoded once per query.
On a 2-core CPU it takes about 9x mmdet's per-image selection (70 ms
against 7.5 ms per image; ``tools/benchmark_query_predict.py``), small
beside a DINO R50 forward.

Deliberate differences from mmdet's heads: a softmax ``loss_cls``
(``use_sigmoid=False``) is refused at build (mmdet would score a softmax
over ``C + 1``; these heads score per class); ``max_per_img`` larger than
``Q x C`` returns every candidate (mmdet's ``topk`` raises). Against the
R-CNN heads' keys: ``topk_per_class=0`` and other values below -1 are
refused rather than read as "off"; there is no NMS, so the Fixed-AP mode
keeps each class's best ``k`` queries where the R-CNN heads keep its best
``k`` NMS survivors.

Scorers change scores only; they are built from the test config (cached,
keyed by its text, by the R-CNN heads' :class:`ScorersFromTestCfg`), hold
no trained state and work on any checkpoint.
"""
import math
from typing import Any, List, Optional, Tuple

import torch
from mmdet.models.dense_heads import DeformableDETRHead, DINOHead
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmengine.structures import InstanceData
from torch import Tensor

from mmlongtail.models.losses.protocol import (ClassifierLayout,
                                               class_probability_fn,
                                               loss_layout,
                                               with_max_background)
from mmlongtail.models.roi_heads.bbox_predict import (SCORERS_KEY,
                                                      apply_scorers)
from mmlongtail.models.roi_heads.scoring import ScorersFromTestCfg
from mmlongtail.models.utils.multiclass_nms import TOPK_PER_CLASS_KEY
from mmlongtail.registry import MODELS

#: ``test_cfg`` keys of the query heads (the R-CNN heads' names).
MAX_PER_IMG_KEY = 'max_per_img'
SCORE_THR_KEY = 'score_thr'


def query_layout(head: Any) -> ClassifierLayout:
    """The ``C``-output layout of a query head's classifier, for the
    scorers: the loss's own (mmlongtail losses) or a sigmoid layout
    (another package's ``use_sigmoid=True`` loss).

    Raises:
        ValueError: The loss lays out another number of outputs than the
            head's ``C`` (naming both).
    """
    layout = loss_layout(head.loss_cls, head.num_classes, dense=True)
    if layout.num_outputs != head.cls_out_channels:
        raise ValueError(
            f'{type(head).__name__} has {head.cls_out_channels} class '
            f'outputs per query, but its loss_cls lays out '
            f'{layout.describe()} ({layout.num_outputs} outputs): the '
            'test-time scorers need the C-output layout of a query head')
    return layout


def _int_key(key: str, value: Any, allowed: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'test_cfg.{key} must be an int ({allowed}), got '
                         f'{value!r}')
    return value


def query_test_settings(test_cfg: Any,
                        num_queries: Optional[int] = None
                        ) -> Tuple[int, int, Optional[float]]:
    """Read and check the selection keys of a query head's ``test_cfg``.

    Args:
        test_cfg (dict, optional): ``max_per_img``, ``topk_per_class``,
            ``score_thr`` (see the module docstring).
        num_queries (int, optional): ``Q``, mmdet's default ``max_per_img``
            (None: -1).

    Returns:
        tuple: ``max_per_img`` (-1: no cap), ``topk_per_class`` (-1: off)
        and ``score_thr`` (None: no threshold).

    Raises:
        ValueError: A value of the wrong type or out of range, naming the
            key and the value.
    """
    cfg = {} if test_cfg is None else test_cfg
    default = -1 if num_queries is None else int(num_queries)
    m = cfg.get(MAX_PER_IMG_KEY, default)
    m = -1 if m is None else _int_key(MAX_PER_IMG_KEY, m,
                                      '>= 1, or -1 for no cap')
    if m == 0 or m < -1:
        raise ValueError(
            f'test_cfg.{MAX_PER_IMG_KEY} must be >= 1, or -1 for no per-image '
            f'cap, got {m}')
    k = cfg.get(TOPK_PER_CLASS_KEY, -1)
    k = -1 if k is None else _int_key(TOPK_PER_CLASS_KEY, k,
                                      '>= 1, or -1 for off')
    if k == 0 or k < -1:
        raise ValueError(
            f'test_cfg.{TOPK_PER_CLASS_KEY} must be >= 1 (each class keeps '
            f'its best k queries), or -1 to turn the Fixed-AP mode off, got '
            f'{k}')
    thr = cfg.get(SCORE_THR_KEY, None)
    if thr is not None:
        if isinstance(thr, bool) or not isinstance(
                thr, (int, float)) or not math.isfinite(thr) or thr < 0:
            raise ValueError(
                f'test_cfg.{SCORE_THR_KEY} must be a finite number >= 0 '
                f'(detections need a score strictly above it), got {thr!r}')
        thr = float(thr)
    return m, k, thr


#: Largest bit pattern of a non-negative float32 (+inf): the complement
#: of a score's bits in the sort key below.
_FLOAT32_BITS_MAX = 0x7f800000


def desc_by_score(scores: Tensor, flat: Tensor) -> Tensor:
    """Permutation of candidates by descending score, ties by ascending
    ``flat`` index.

    For non-negative scores one sort of int64 keys ``(complemented float32
    bits of the score, flat index)``: the bits of a non-negative float32
    increase with its value, and the keys are unique, so no stable sort is
    needed (on CPU about 3x faster than a stable float sort of the 361k
    candidates of the Fixed-AP mode at LVIS size). Otherwise (negative or
    NaN scores from a custom scorer, an index beyond 32 bits) a stable sort
    of the candidates ordered by ``flat``.

    Args:
        scores (Tensor): ``(K,)`` scores.
        flat (Tensor): ``(K,)`` distinct non-negative int64 indices.

    Returns:
        Tensor: ``(K,)`` int64 positions into ``scores``.
    """
    if scores.numel() == 0:
        return flat.new_zeros((0, ))
    shift = max(int(flat.max()).bit_length(), 1)
    values = scores.float() + 0.0  # -0.0 -> +0.0, whose bits are 0
    if shift <= 32 and bool((values >= 0).all()):
        bits = values.view(torch.int32).to(torch.int64)
        return torch.sort(((_FLOAT32_BITS_MAX - bits) << shift) | flat)[1]
    by_flat = torch.sort(flat)[1]
    return by_flat[torch.sort(scores[by_flat], descending=True,
                              stable=True)[1]]


def _per_class_topk(scores: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Flat indices ``query * C + class`` (and the scores) of each class's
    best ``k``
    queries of ``(Q, C)`` scores (``k < Q``), a tie at the ``k``-th place
    going to the lower queries: one unsorted ``topk`` along the query
    dimension; for the classes with more than ``k`` scores at or above
    their ``k``-th value (a tie there), the queries are chosen again from
    their columns (a cumulative count of the tied ones)."""
    Q, C = scores.shape
    values, query = scores.topk(k, dim=0, sorted=False)
    kth = values.amin(0)
    at_least = scores >= kth
    # every class has >= k scores at or above its k-th value; exactly k
    # each (no tie there) iff k x C in all: one contiguous count
    if int(at_least.sum()) != k * C:
        # the classes with a tie at the k-th place (a few: float32 scores
        # of 900 queries tie now and then) take the tied lower queries
        tied_cls = (at_least.sum(0) > k).nonzero(as_tuple=True)[0]
        sub, t = scores[:, tied_cls], kth[tied_cls]
        keep = sub > t
        tied = sub == t
        tied &= tied.cumsum(0) <= (k - keep.sum(0))
        rows = (keep | tied).t().nonzero(as_tuple=True)[1].view(-1, k).t()
        query[:, tied_cls] = rows
        values[:, tied_cls] = sub.gather(0, rows)
    cls = torch.arange(C, device=scores.device)
    return (query * C + cls).reshape(-1), values.reshape(-1)


def select_query_detections(scores: Tensor,
                            max_per_img: int = -1,
                            topk_per_class: int = -1,
                            score_thr: Optional[float] = None
                            ) -> Tuple[Tensor, Tensor, Tensor]:
    """Step (c): the detections of one image from ``(Q, C)`` scores.

    Args:
        scores (Tensor): ``(Q, C)`` per-class scores.
        max_per_img (int): Detections per image; -1: no cap.
        topk_per_class (int): Queries kept per class (the Fixed-AP mode);
            -1: off.
        score_thr (float, optional): Scores must be strictly above it.

    Returns:
        tuple: ``scores`` ``(K,)``, ``query`` ``(K,)`` int64 (the query of
        each detection) and ``labels`` ``(K,)`` int64, in the order of the
        module docstring.
    """
    if scores.dim() != 2:
        raise ValueError(f'scores must be (Q, C), got {tuple(scores.shape)}')
    Q, C = scores.shape
    flat_scores = scores.reshape(-1)
    if topk_per_class <= 0 and max_per_img > 0:
        # mmdet's selection, verbatim: the image's best max_per_img
        top, flat = flat_scores.topk(min(max_per_img, Q * C))
        if score_thr is not None:
            keep = top > score_thr
            top, flat = top[keep], flat[keep]
        return top, flat // C, flat % C
    if 0 < topk_per_class < Q:
        flat, kept = _per_class_topk(scores, topk_per_class)
    else:  # every candidate (k >= Q keeps every query of every class)
        flat = torch.arange(Q * C, device=scores.device)
        kept = flat_scores
    if score_thr is not None:
        above = kept > score_thr
        flat, kept = flat[above], kept[above]
    order = desc_by_score(kept, flat)
    if max_per_img > 0:
        order = order[:max_per_img]
    flat = flat.index_select(0, order)
    return kept.index_select(0, order), flat // C, flat % C


def query_boxes(bbox_pred: Tensor, img_meta: dict,
                rescale: bool) -> Tensor:
    """mmdet's ``DETRHead`` box decoding: ``(K, 4)`` normalized ``cxcywh``
    to ``xyxy`` in the image (clipped), optionally divided by
    ``scale_factor`` (the same operations in the same order, so the boxes
    are bit-identical)."""
    img_shape = img_meta['img_shape']
    det_bboxes = bbox_cxcywh_to_xyxy(bbox_pred)
    det_bboxes[:, 0::2] = det_bboxes[:, 0::2] * img_shape[1]
    det_bboxes[:, 1::2] = det_bboxes[:, 1::2] * img_shape[0]
    det_bboxes[:, 0::2].clamp_(min=0, max=img_shape[1])
    det_bboxes[:, 1::2].clamp_(min=0, max=img_shape[0])
    if rescale:
        if img_meta.get('scale_factor') is None:
            raise ValueError('rescale=True needs img_meta["scale_factor"]')
        det_bboxes /= det_bboxes.new_tensor(
            img_meta['scale_factor']).repeat((1, 2))
    return det_bboxes


class QueryHeadPredictMixin:
    """mmlongtail's test time for a DETR-family head (before the mmdet head
    in the bases): steps (a)-(c) of the module docstring in
    ``_predict_by_feat_single``, mmdet's per-image override point. The
    ``test_cfg`` is checked at build and again at each prediction (a test
    config edited after the build is honoured)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not getattr(self.loss_cls, 'use_sigmoid', False):
            raise ValueError(
                f'{type(self).__name__} scores C per-class probabilities; '
                f'its loss_cls {type(self.loss_cls).__name__} has '
                'use_sigmoid=False (a softmax over C + 1): use a sigmoid '
                "loss (e.g. mmlongtail.FocalLoss) or mmdet's own head")
        # the loss's per-class form, probed once: a loss without one (a
        # layout with a background row that the query mode does not
        # handle) is refused at build, with its own reason
        try:
            self._class_probabilities = class_probability_fn(
                self.loss_cls)
            probe = self._class_probabilities(
                torch.zeros(1, self.cls_out_channels))
        except ValueError as err:
            raise ValueError(
                f'{type(self).__name__} scores C per-class probabilities '
                f'from its loss_cls, which cannot give them: {err}') from err
        if tuple(probe.shape) != (1, self.num_classes):
            raise ValueError(
                f'{type(self.loss_cls).__name__}.class_probabilities gives '
                f'{tuple(probe.shape)[1:]} scores per query for the '
                f'{self.num_classes} classes of {type(self).__name__}')
        query_test_settings(self.test_cfg)
        # the R-CNN heads' scorer cache, held (not inherited: the
        # consistency hook reads ScorersFromTestCfg as an RoI head)
        self._scorer_source = ScorersFromTestCfg()

    def query_scorers(self) -> List[Any]:
        """The built scorers of ``test_cfg.score_calibration`` (cached)."""
        return self._scorer_source.scorers_for(self.test_cfg, SCORERS_KEY)

    def query_scores(self, cls_score: Tensor) -> Tensor:
        """Steps (a) and (b): ``(Q, C)`` logits to ``(Q, C)`` scores."""
        scores = self._class_probabilities(cls_score)
        scorers = self.query_scorers()
        if scorers:
            C = scores.size(-1)
            full = apply_scorers(scorers, cls_score,
                                 with_max_background(scores),
                                 query_layout(self))
            scores = full[:, :C].contiguous()
        return scores

    def check_scorers(self) -> None:
        """Run the configured scorers once on a one-query dummy of this
        head's layout, so a scorer that cannot score it says so before the
        first image (for the consistency hook).

        Raises:
            ValueError: From the scorer, prefixed with the config key.
        """
        scorers = self.query_scorers()
        if not scorers:
            return
        C = self.num_classes
        try:
            apply_scorers(scorers, torch.zeros(1, self.cls_out_channels),
                          torch.full((1, C + 1), 1.0 / (C + 1)),
                          query_layout(self))
        except ValueError as err:
            raise ValueError(f'test_cfg.{SCORERS_KEY}: {err}') from err

    def _predict_by_feat_single(self,
                                cls_score: Tensor,
                                bbox_pred: Tensor,
                                img_meta: dict,
                                rescale: bool = True) -> InstanceData:
        """One image: scores, scorers, selection, boxes.

        Args:
            cls_score (Tensor): ``(Q, C)`` logits of the last decoder layer.
            bbox_pred (Tensor): ``(Q, 4)`` normalized ``cxcywh`` boxes.
            img_meta (dict): ``img_shape``; ``scale_factor`` with
                ``rescale``.
            rescale (bool): Boxes in the original image space.

        Returns:
            InstanceData: ``bboxes`` ``(K, 4)``, ``scores`` ``(K,)``,
            ``labels`` ``(K,)``.
        """
        if len(cls_score) != len(bbox_pred):
            raise ValueError(f'{len(cls_score)} queries of class scores but '
                             f'{len(bbox_pred)} of boxes')
        max_per_img, topk, thr = query_test_settings(self.test_cfg,
                                                     len(cls_score))
        scores = self.query_scores(cls_score)
        det_scores, query, labels = select_query_detections(
            scores, max_per_img, topk, thr)
        results = InstanceData()
        # each query's box once, then gathered: the operations are
        # element-wise, so the boxes are bitwise mmdet's (which decodes
        # after gathering) and the Fixed-AP mode decodes Q boxes, not k x C
        results.bboxes = query_boxes(bbox_pred, img_meta, rescale)[query]
        results.scores = det_scores
        results.labels = labels
        return results


@MODELS.register_module()
class LongTailDeformableDETRHead(QueryHeadPredictMixin, DeformableDETRHead):
    """mmdet's ``DeformableDETRHead`` (Zhu et al., ICLR 2021) with
    mmlongtail's test time (:class:`QueryHeadPredictMixin`): scores from the
    loss, ``test_cfg.score_calibration``, ``topk_per_class`` (Fixed AP) and
    ``score_thr``. Arguments as mmdet's; training is mmdet's."""


@MODELS.register_module()
class LongTailDINOHead(QueryHeadPredictMixin, DINOHead):
    """mmdet's ``DINOHead`` (Zhang et al., ICLR 2023) with mmlongtail's test
    time (:class:`QueryHeadPredictMixin`): scores from the loss,
    ``test_cfg.score_calibration``, ``topk_per_class`` (Fixed AP) and
    ``score_thr``. Arguments as mmdet's; training is mmdet's, except
    for one case of :meth:`_loss_dn_single`."""

    def _loss_dn_single(self, dn_cls_scores: Tensor, dn_bbox_preds: Tensor,
                        batch_gt_instances: List[InstanceData],
                        batch_img_metas: List[dict],
                        dn_meta: dict) -> Tuple[Tensor, Tensor, Tensor]:
        """mmdet's denoising loss of one decoder layer, and with no
        denoising query (no ground truth in this rank's batch) still one
        call of a ``loss_cls`` that keeps gradient statistics (EQLv2, EFL).

        mmdet skips ``loss_cls`` there (a constant zero). Those losses
        all-reduce each call's sums when distributed, on the premise that
        every rank makes the same calls; a rank whose images have no boxes
        (DETR's ``RandomCrop`` with ``allow_negative_crop=True`` makes such
        batches) would make fewer calls than the others and pair its
        collectives with theirs wrongly (a hang, or sums added to the
        wrong tensors). The empty call adds nothing and its loss is a zero
        connected to the graph, so losses and statistics are mmdet's.
        """
        loss_cls, loss_bbox, loss_iou = super()._loss_dn_single(
            dn_cls_scores, dn_bbox_preds, batch_gt_instances,
            batch_img_metas, dn_meta)
        scores = dn_cls_scores.reshape(-1, self.cls_out_channels)
        if len(scores) == 0 and any(
                getattr(m, 'KEEPS_CLASS_STATISTICS', False)
                for m in self.loss_cls.modules()):
            labels = scores.new_zeros((0, ), dtype=torch.long)
            loss_cls = self.loss_cls(
                scores, labels, scores.new_zeros((0, )), avg_factor=1.0)
        return loss_cls, loss_bbox, loss_iou
