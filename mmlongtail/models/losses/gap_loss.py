"""ROG's generalized-AP (GAP) ranking loss, added to softmax cross-entropy
(Zhang, Chen and Peng, "Reconciling Object-Level and Global-Level Objectives
for Long-Tail Detection", ICCV 2023; official code github.com/EricZsy/ROG,
``mmdet/models/losses/gap_loss.py`` and
``mmdet/models/roi_heads/bbox_heads/rog_convfc_bbox_head.py``).

GAP ranks every foreground logit of a batch of RoIs across classes, the
ranking that LVIS's per-image top-300 cut and pooled AP reward. For each class
``m`` present in the batch, with ``P_m`` its positive entries (RoI ``i``
labelled ``m``, logit ``s_p = z[i, m]``) and ``Neg`` every entry that is no
positive of any class (other classes' channels of foreground RoIs, all
channels of background RoIs), and the smoothed step
``h(x) = clamp(x / (2 delta) + 1/2, 0, 1)``:

.. math::
    \\mathrm{FP}(p) = \\sum_{n \\in Neg} h(z_n - s_p), \\quad
    \\mathrm{rank}(p) = \\sum_{q \\in P_m} h(s_q - s_p) + \\mathrm{FP}(p)

    L_{GAP} = \\frac{1}{K} \\sum_m \\frac{1}{|P_m|}
              \\sum_{p \\in P_m} \\frac{\\mathrm{FP}(p)}{\\mathrm{rank}(p)}

with ``K`` the number of classes present. As in AP-Loss and RS-Loss the
gradient is not the derivative of this value but an error-driven update:
with ``b_p = lam * w_m / (K |P_m|)`` (0 where ``FP(p) <= eps``) and the class
weights ``w_m ~ (1 / n_m) ** gamma`` from the running per-class RoI counts
``n`` (normalized to sum to ``C``),

.. math::
    g(s_p) = -b_p \\frac{\\mathrm{FP}(p)}{\\mathrm{rank}(p)}, \\quad
    g(z_n) = \\sum_p b_p \\frac{h(z_n - s_p)}{\\mathrm{rank}(p)}.

The official code loops in Python over classes and positives, each step over
every relevant negative. Here only the ``P`` positives are sorted: ``h`` is
piecewise linear, so one ``searchsorted`` of every entry among the ``2P``
ends of the positives' ramps, bincounts and float64 prefix sums give
``FP(p)`` for every positive and ``g(z_n)`` for every negative at once
(``O(NC log P)``, no Python loop, no sort of the ``N x C`` logits).
"""
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from torch import Tensor

from mmlongtail.registry import MODELS
from mmlongtail.utils.dist import all_reduce_sum_
from .frame import ClassificationLoss
from .protocol import (SOFTMAX_SCORING, ClassifierLayout, ScoringFamily,
                       empty_loss)

#: Added to the sum of the class weights before normalizing (official).
WEIGHT_EPS = 1e-9


def gap_class_weights(num_samples: Tensor, gamma: float) -> Tensor:
    """``(C,)`` class weights ``w = (1 / n) ** gamma``, scaled to sum to
    ``C`` (official: divided by ``sum(w) + 1e-9``).

    Args:
        num_samples (Tensor): ``(C,)`` running RoI counts per class, each
            at least 1 (the official head clamps them to 1).
        gamma (float): Exponent; 0 gives equal weights.
    """
    w = num_samples.float().reciprocal().pow(gamma)
    return w / (w.sum() + WEIGHT_EPS) * num_samples.numel()


def _ramp(x: Tensor, delta: float) -> Tensor:
    """``h(x)``: the smoothed step (``delta > 0``) or ``x >= 0``."""
    if delta > 0:
        return torch.clamp(x / (2 * delta) + 0.5, min=0, max=1)
    return (x >= 0).to(x.dtype)


class _GAPRanking(torch.autograd.Function):
    """Per-RoI GAP errors with the error-driven gradient of ROG.

    Only the ``P`` positives are sorted. The ramp of positive ``p`` starts
    at ``s_p - delta`` and ends at ``s_p + delta``; one ``searchsorted`` of
    every entry among these ``2P`` sorted ends puts it in a bin, and within
    a bin the entry's ``h(z - s_p)`` is 1 for the first ``lo`` positives (in
    ascending order), the ramp ``(z + delta - s_p) / 2 delta`` (linear in
    ``z``) for the positives ``[lo, hi)`` and 0 for the rest. Bincounts of
    the negatives (and of their ramp offsets) per bin and prefix sums over
    the sorted positives (float64) then give every ``FP(p)``; prefix sums
    of the positives' updates give every negative's gradient as one gather
    per entry. ``h`` is continuous, so ties at a bin's edge do not matter.

    ``forward`` returns the ``(N,)`` errors; ``backward`` weights each
    positive's update (its own and the one it sends to the negatives) by the
    incoming gradient of its entry, so that ``errors.sum()`` backpropagates
    exactly the official gradient and ``'none'`` stays per-RoI.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, pos_index: Tensor, pos_cls: Tensor,
                member: Tensor, coef: Tensor, norm: Tensor, delta: float,
                eps: float) -> Tensor:
        num, num_classes = logits.shape
        z = logits.detach().float().reshape(-1)
        pos_flat = pos_index * num_classes + pos_cls
        s = z[pos_flat]
        num_pos = s.numel()
        # negatives: entries of member RoIs that are nobody's positive
        negative = member[:, None].expand(num, num_classes).reshape(-1)
        negative = negative.to(torch.float64).index_fill_(0, pos_flat, 0)
        s_sorted, by_s = torch.sort(s)
        if delta > 0:  # the 2P ends of the ramps, and which end each is
            ends, by_end = torch.sort(
                torch.cat([s_sorted - delta, s_sorted + delta]))
            is_top = (by_end >= num_pos).long()
            first = s.new_zeros(1, dtype=torch.long)
            # lo: ramps ended below the bin; hi: ramps started below it
            lo = torch.cat([first, is_top.cumsum(0)])
            hi = torch.cat([first, (1 - is_top).cumsum(0)])
        else:  # the hard step: h(z - s_p) = 1 iff s_p <= z
            ends = s_sorted
            lo = hi = torch.arange(num_pos + 1, device=s.device)
        bins = torch.searchsorted(ends, z, right=True)  # (NC,)
        size = ends.numel() + 1
        count = torch.bincount(bins, weights=negative, minlength=size)
        # sorted positive k: 1 from every negative of a bin with lo > k
        full = torch.bincount(lo, weights=count, minlength=num_pos + 1)
        false_pos = count.sum() - full.cumsum(0)[:num_pos]
        if delta > 0:  # bins with lo <= k < hi: (z + delta - s_k) / 2d
            ramp = torch.bincount(
                bins, weights=(z.double() + delta) * negative, minlength=size)

            def inside(per_bin: Tensor) -> Tensor:
                """Sum of ``per_bin`` over the bins with lo <= k < hi."""
                return (torch.bincount(lo, per_bin, minlength=size) -
                        torch.bincount(hi, per_bin, minlength=size)
                        ).cumsum(0)[:num_pos]

            false_pos = false_pos + (inside(ramp) - s_sorted.double() *
                                     inside(count)) / (2 * delta)
        false_pos = torch.empty_like(false_pos).index_copy_(
            0, by_s, false_pos)
        # rank among the positives of the same class (itself included)
        same = pos_cls[:, None] == pos_cls[None, :]
        rank_pos = (_ramp(s[None, :] - s[:, None], delta) *
                    same).sum(1).double()
        rank = rank_pos + false_pos
        error = false_pos / rank
        # b_p / rank(p): 0 where FP(p) <= eps (no update, as official)
        step = torch.where(false_pos > eps, coef.double() / rank,
                           torch.zeros_like(rank))
        out = torch.zeros(num, dtype=torch.float32, device=logits.device)
        out.index_put_((pos_index, ), (error * norm.double()).float(),
                       accumulate=True)
        ctx.delta = delta
        ctx.shape = (num, num_classes)
        ctx.save_for_backward(z, pos_index, pos_flat, negative, by_s,
                              s_sorted, bins, lo, hi, step, false_pos)
        return out.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (z, pos_index, pos_flat, negative, by_s, s_sorted, bins, lo, hi,
         step, false_pos) = ctx.saved_tensors
        delta = ctx.delta
        c = step * grad_out.double()[pos_index]  # (P,) b_p g_p / rank(p)
        c_sorted = c[by_s]
        zero = c.new_zeros(1)
        weights = torch.cat([zero, c_sorted.cumsum(0)])
        if delta > 0:  # per bin: grad = offset + slope * z
            moments = torch.cat(
                [zero, (c_sorted * s_sorted.double()).cumsum(0)])
            slope = (weights[hi] - weights[lo]) / (2 * delta)
            offset = weights[lo] + delta * slope - \
                (moments[hi] - moments[lo]) / (2 * delta)
            grad = offset[bins] + slope[bins] * z.double()
        else:
            grad = weights[lo][bins]
        grad = (grad * negative).index_copy_(0, pos_flat, -c * false_pos)
        grad = grad.view(ctx.shape).to(grad_out.dtype)
        return grad, None, None, None, None, None, None, None


def gap_loss(logits: Tensor,
             labels: Tensor,
             class_weight: Tensor,
             lam: float = 0.1,
             delta: float = 0.5,
             eps: float = 1e-10,
             weight: Optional[Tensor] = None) -> Tensor:
    """ROG's GAP ranking loss, per RoI (vectorized).

    Equal to the official ``GAPLoss.apply(logits.reshape(-1), labels,
    num_samples, C, gamma, lam, delta, eps)`` when ``weight`` is None and
    ``class_weight = gap_class_weights(num_samples, gamma)``: the official
    scalar is the sum of the returned ``(N,)`` errors and its gradient is the
    gradient of that sum.

    Args:
        logits (Tensor): ``(N, C)`` foreground logits (the first ``C``
            channels of the ``C + 1`` softmax classifier, as ROG's head
            passes them).
        labels (Tensor): ``(N,)`` in ``[0, C]``; ``C`` is background.
        class_weight (Tensor): ``(C,)`` :func:`gap_class_weights`.
        lam (float): Scale of the gradient (not of the value, as official).
        delta (float): Half-width of the smoothed step (``delta_RS``); 0 is
            the hard step. Defaults to 0.5.
        eps (float): A positive with ``FP <= eps`` sends no update.
        weight (Tensor, optional): ``(N,)`` per-RoI weights: RoIs of weight
            0 take no part (neither as positive nor as negative); a positive
            RoI's error and the updates it sends are scaled by its weight.

    Returns:
        Tensor: ``(N,)`` per-RoI share of the loss: ``FP(p) / rank(p) /
        (K |P_m|)`` (times the weight) for positive RoIs, 0 elsewhere; all
        zeros (connected to the graph) without positives.
    """
    num, num_classes = logits.shape
    member = labels.new_ones(num, dtype=torch.bool) if weight is None \
        else weight > 0
    fg = member & (labels < num_classes)
    pos_index = fg.nonzero().squeeze(1)
    if pos_index.numel() == 0:
        return empty_loss(logits, 'none', (num, ))
    pos_cls = labels[pos_index]
    per_class = torch.bincount(pos_cls, minlength=num_classes)
    present = (per_class > 0).sum()
    norm = 1.0 / (per_class[pos_cls] * present).float()
    if weight is not None:
        norm = norm * weight[pos_index].float()
    coef = lam * class_weight.float()[pos_cls] * norm
    return _GAPRanking.apply(logits, pos_index, pos_cls, member, coef, norm,
                             float(delta), float(eps))


@MODELS.register_module()
class GAPLoss(ClassificationLoss):
    """Softmax cross-entropy plus ROG's GAP ranking loss (Zhang et al.,
    ICCV 2023), as ROG's ``ROGShared2FCBBoxHead`` adds it to its
    classification loss: ``dict(loss_cls=CE, loss_rank=GAP)``.

    The classifier is the ``C + 1`` softmax classifier of cross-entropy
    (background last) and is scored with softmax; GAP ranks its first ``C``
    raw logits across the RoIs and classes of the batch (see the module
    docstring and :func:`gap_loss`). The running per-class RoI counts of its
    class weights are the buffer ``num_samples`` (``(C + 1,)`` int64, saved
    in checkpoints), updated with each batch's labels before the loss, as in
    the official head.

    Where we differ from the official code, deliberately:

    * the base loss is softmax cross-entropy; ROG's configs pair GAP with a
      sigmoid cross-entropy with an objectness channel (1x) or Seesaw (2x);
    * the counts are all-reduced over ranks (official: each rank counts its
      own RoIs) and kept as exact integers (official: float32);
    * ``label_weights``: RoIs of weight 0 are neither counted nor ranked, and
      a positive's weight scales its error and its updates (the official
      head ignores them; mmdet's R-CNN weights are all 1);
    * vectorized, and float64 prefix sums where the official code sums in
      float32 (equal to it within float32 rounding).

    The GAP value is the mean ranking error, not scaled by ``lam``; its
    gradient is ROG's error-driven update scaled by ``lam`` (as official).
    ``avg_factor`` divides the cross-entropy only: GAP normalizes itself
    (``'mean'`` and ``'sum'`` of ``loss_rank`` agree).

    It also takes the frame's keyword arguments, ``reduction``, ``loss_weight``
    (see :class:`~mmlongtail.models.losses.frame.ClassificationLoss`);
    ``loss_weight`` scales both terms.

    Args:
        num_classes (int): ``C``.
        gamma (float): Exponent of the inverse-count class weights.
            Defaults to 1.0 (official configs).
        lam (float): Scale of GAP's gradient. Defaults to 0.1 (official
            configs).
        delta (float): Half-width of the smoothed step (official
            ``delta_RS``). Defaults to 0.5.
        eps (float): Smallest ``FP`` that sends an update. Defaults to
            1e-10.
        use_distributed (bool): All-reduce each batch's counts when a
            multi-rank process group exists. Defaults to True.
    """
    SIGMOID = False
    #: Why the consistency hook refuses it in a dense head.
    DENSE_HEAD_REFUSAL = (
        'GAP works in R-CNN bbox heads only: it ranks every foreground '
        'logit of a batch of sampled RoIs across classes, as ROG\'s bbox head '
        'does, and lays out a C + 1 softmax classifier; a dense head has no '
        'sampled RoIs (it would rank ~10^5 unsampled anchors per image) '
        'and a C-channel sigmoid classifier')

    #: Why a query-based (DETR-family) head cannot hold it.
    QUERY_HEAD_REFUSAL = (
        'GAP ranks the foreground logits of the sampled RoIs of an R-CNN '
        'bbox head and lays out a C + 1 softmax classifier; a query head '
        'has C sigmoid outputs and no sampled RoIs')

    def __init__(self,
                 num_classes: int,
                 gamma: float = 1.0,
                 lam: float = 0.1,
                 delta: float = 0.5,
                 eps: float = 1e-10,
                 use_distributed: bool = True,
                 **frame: Any) -> None:
        super().__init__(num_classes, **frame)
        for key, value in (('gamma', gamma), ('lam', lam), ('delta', delta),
                           ('eps', eps)):
            if not 0 <= value < float('inf'):
                raise ValueError(f'GAPLoss: {key} must be finite and >= 0, '
                                 f'got {value}')
        self.gamma = float(gamma)
        self.lam = float(lam)
        self.delta = float(delta)
        self.eps = float(eps)
        self.use_distributed = bool(use_distributed)
        self.register_buffer(
            'num_samples', torch.zeros(num_classes + 1, dtype=torch.long))

    def _layout(self, num_classes: int) -> ClassifierLayout:
        return ClassifierLayout.classes_first(
            'GAPLoss', num_classes, ('background', ),
            scoring=SOFTMAX_SCORING, family=ScoringFamily.SOFTMAX)

    def _activation(self, cls_score: Tensor) -> Tensor:
        return F.softmax(cls_score, dim=-1)

    @torch.no_grad()
    def _count(self, labels: Tensor, label_weights: Optional[Tensor]) -> None:
        """Add the batch's RoIs (those of nonzero weight) to
        ``num_samples``: one bincount, all-reduced when distributed (every
        rank calls it, an empty batch too)."""
        if label_weights is not None:
            labels = labels[label_weights > 0]
        counts = torch.bincount(labels, minlength=self.num_classes + 1)
        self.num_samples += all_reduce_sum_(
            counts.to(self.num_samples.device), self.use_distributed)

    def class_weights(self) -> Tensor:
        """``(C,)`` GAP class weights from the counts so far (clamped to
        1, as official)."""
        return gap_class_weights(
            self.num_samples[:self.num_classes].clamp(min=1), self.gamma)

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: Optional[float],
              reduction: str) -> Dict[str, Tensor]:
        """``(N, C + 1)`` logits; ``'none'`` gives ``(N,)`` per term."""
        self._count(labels, label_weights)
        if cls_score.size(0) == 0:
            zero = empty_loss(cls_score, reduction, (0, ))
            return dict(loss_cls=zero, loss_rank=zero.clone())
        ce = F.cross_entropy(cls_score, labels, reduction='none')
        ce = weight_reduce_loss(ce, label_weights, reduction, avg_factor)
        rank = gap_loss(cls_score[:, :self.num_classes], labels,
                        self.class_weights(), self.lam, self.delta,
                        self.eps, label_weights)
        if reduction != 'none':  # GAP is normalized: mean == sum
            rank = rank.sum()
        return dict(loss_cls=ce, loss_rank=rank)
