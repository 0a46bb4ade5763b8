"""Gumbel optimized loss, GOL (Alexandridis, Deng, Nguyen and Luo,
"Long-tailed instance segmentation using Gumbel optimized loss", ECCV 2022),
with DropLoss (Hsieh et al., "DropLoss for long-tail instance segmentation",
AAAI 2021), as in kostas1515/GOL's ``DropLoss(use_classif='gumbel')``.

A ``C``-channel classifier with the Gumbel activation
``p = exp(-exp(-z))`` (the CDF of the standard Gumbel distribution) trained
with binary cross-entropy. The official code clamps the logits to
``[-4, 10]`` before the activation and computes the loss with
``F.binary_cross_entropy`` on the probabilities, whose gradient divides by
``max(p (1 - p), 1e-12)``; both shape the gradient (none outside the clamp,
almost none for a positive with ``p < 1e-12``, i.e. ``z < -3.3``), so both
are kept.

DropLoss removes negative gradients of the rare classes: for a class whose
image frequency is below ``lambda_``, the negative term of every foreground
RoI is dropped, and that of every background RoI is dropped at random, kept
with probability equal to the share of rare classes among the batch's
foreground RoIs.

Differences from the official code, none of which changes its numbers in
mmdet's ``BBoxHead`` (all-one ``label_weights``, ``avg_factor = N``):

* ``label_weights``, ``avg_factor`` and ``reduction_override`` are honoured
  (the official forward ignores them); the rare-positive ratio counts only
  RoIs with a positive weight;
* with no foreground RoI the ratio is defined as 1 (the official NaN has the
  same effect: every background negative is kept);
* the loss is computed in float32 with autocast off, as
  ``F.binary_cross_entropy`` requires; under mixed precision the official
  code fails;
* frequencies come from category statistics (``'lvis_v1'`` or an
  annotation file), not from a table in the package;
* test-time scores have ``1 - max_j p_j`` as their background column (the
  official code puts a dummy 0 there); class scores are the same, and mmdet
  drops that column before NMS.
"""
from typing import Any, Optional

import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.datasets.category_stats import StatsSource
from mmlongtail.registry import MODELS
from .frame import ClassificationLoss
from .protocol import (ClassifierLayout, ScoringFamily, empty_loss,
                       sigmoid_targets, with_max_background)

#: The official clamp of the logits before the Gumbel activation.
GUMBEL_LOGIT_MIN = -4.0
GUMBEL_LOGIT_MAX = 10.0


def gumbel_activation(cls_score: Tensor) -> Tensor:
    """``exp(-exp(-z))`` element-wise, unclamped (test-time scores)."""
    return 1 / torch.exp(torch.exp(-cls_score))


def gumbel_scores_with_background(cls_score: Tensor) -> Tensor:
    """``(N, C)`` logits -> ``(N, C + 1)`` scores: the Gumbel probability of
    each class, then ``1 - max_j p_j`` (background when no class exceeds
    0.5)."""
    return with_max_background(gumbel_activation(cls_score))


def gumbel_bce(cls_score: Tensor, target: Tensor) -> Tensor:
    """Element-wise Gumbel binary cross-entropy, the official way.

    The logits are clamped to ``[-4, 10]``, turned into probabilities with
    :func:`gumbel_activation` and passed to ``F.binary_cross_entropy``, in
    float32 with autocast off (``binary_cross_entropy`` refuses autocast).

    Args:
        cls_score (Tensor): ``(N, C)`` logits.
        target (Tensor): ``(N, C)`` 0/1 targets.

    Returns:
        Tensor: ``(N, C)`` float32 loss.
    """
    with torch.autocast(cls_score.device.type, enabled=False):
        z = cls_score.float().clamp(GUMBEL_LOGIT_MIN, GUMBEL_LOGIT_MAX)
        return F.binary_cross_entropy(
            gumbel_activation(z), target.float(), reduction='none')


def rare_positive_ratio(labels: Tensor, rare_mask: Tensor,
                        valid: Optional[Tensor] = None) -> Tensor:
    """Share of rare classes among the foreground RoIs, a 0-dim float32.

    With no foreground RoI it is 1 (every background negative is kept),
    which is what the official code does: its ratio is then a NaN mean and
    ``rand > NaN`` is false everywhere.

    Args:
        labels (Tensor): ``(N,)`` in ``[0, C]``.
        rare_mask (Tensor): ``(C,)`` bool, the classes below ``lambda_``.
        valid (Tensor, optional): ``(N,)`` bool, the RoIs that count.
    """
    num_classes = rare_mask.numel()
    fg = labels < num_classes
    if valid is not None:
        fg = fg & valid
    rare = rare_mask[labels.clamp(max=num_classes - 1)] & fg
    num_fg = fg.sum()
    ratio = rare.sum().float() / num_fg.clamp(min=1).float()
    return torch.where(num_fg > 0, ratio, ratio.new_ones(()))


def drop_loss_weights(labels: Tensor, rare_mask: Tensor, ratio: Tensor,
                      rand: Tensor) -> Tensor:
    """DropLoss's ``(N, C)`` weight of each binary term.

    ``w_ij = 0`` where ``j`` is rare, ``j`` is not RoI ``i``'s label, and
    either RoI ``i`` is foreground or it is background and
    ``rand_ij > ratio``; ``w_ij = 1`` otherwise.

    Args:
        labels (Tensor): ``(N,)`` in ``[0, C]``.
        rare_mask (Tensor): ``(C,)`` bool.
        ratio (Tensor): 0-dim, from :func:`rare_positive_ratio`.
        rand (Tensor): ``(N, C)`` uniform ``[0, 1)`` draws (the official
            code draws one per element with ``torch.rand_like``, background
            RoI or not).
    """
    num_classes = rare_mask.numel()
    fg = (labels < num_classes)[:, None]
    target = sigmoid_targets(labels, num_classes).bool()
    dropped_bg = ~fg & (rand > ratio)
    drop = rare_mask[None, :] & ~target & (fg | dropped_bg)
    return (~drop).float()


def gumbel_loss(cls_score: Tensor,
                labels: Tensor,
                elem_weight: Optional[Tensor] = None,
                weight: Optional[Tensor] = None,
                reduction: str = 'mean',
                avg_factor: Optional[float] = None) -> Tensor:
    r"""Gumbel BCE of a ``C``-channel classifier, optionally DropLoss-weighted.

    .. math::
        L = \frac{1}{N} \sum_i \sum_j w_{ij}\,
            \mathrm{BCE}(\exp(-\exp(-\mathrm{clamp}(z_{ij}, -4, 10))),
            y_{ij})

    Args:
        cls_score (Tensor): ``(N, C)`` logits.
        labels (Tensor): ``(N,)`` in ``[0, C]``; ``C`` is background.
        elem_weight (Tensor, optional): ``(N, C)`` weights :math:`w_{ij}`
            (DropLoss's, :func:`drop_loss_weights`); all one if None.
        weight (Tensor, optional): ``(N,)`` per-RoI weights.
        reduction (str): ``'none'`` gives the ``(N,)`` per-RoI loss (summed
            over classes); ``'mean'`` divides the sum by ``N`` (or
            ``avg_factor``); ``'sum'`` sums it.
        avg_factor (float, optional): Normalizer for ``'mean'``.

    Returns:
        Tensor: Reduced float32 loss.
    """
    num, num_classes = cls_score.shape
    if num == 0:
        return empty_loss(cls_score.float(), reduction, (0, ))
    target = sigmoid_targets(labels, num_classes)
    return reduce_class_losses(gumbel_bce(cls_score, target), elem_weight,
                               weight, reduction, avg_factor)


def reduce_class_losses(loss: Tensor, elem_weight: Optional[Tensor],
                        weight: Optional[Tensor], reduction: str,
                        avg_factor: Optional[float]) -> Tensor:
    """GOL's reduction of ``(N, C)`` per-class BCE terms (also APA's):
    times the DropLoss weights ``elem_weight`` (if any), summed over the
    classes, then mmdet's ``weight_reduce_loss`` with the per-RoI
    ``weight``."""
    if elem_weight is not None:
        loss = loss * elem_weight
    loss = loss.sum(dim=1)
    if weight is not None:
        weight = weight.float()
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@MODELS.register_module()
class GumbelLoss(ClassificationLoss):
    """Gumbel optimized loss (Alexandridis et al., ECCV 2022), with or
    without DropLoss.

    Equal (loss, gradient and test-time class scores) to kostas1515/GOL's
    ``DropLoss(use_classif='gumbel')`` under the same random draws
    (``drop_loss=True``), and to its Gumbel BCE alone (``drop_loss=False``).
    ``C`` outputs, background = label ``C`` = all-zero target.

    Randomness: DropLoss draws one uniform number per RoI and class with
    ``torch.rand`` (torch's default generator, on the logits' device), as
    the official ``torch.rand_like``, so ``torch.manual_seed`` reproduces
    the draws; each rank draws its own.

    The official recipe also initializes ``fc_cls`` with weights 0.001 and
    bias -2: give the box head
    ``init_cfg=dict(type='Constant', val=0.001, bias=-2,
    override=dict(name='fc_cls'))`` (see the GOL config).

    In a query-based head (DINO, Deformable DETR) it trains the ``C``
    outputs of every call (decoder layers, encoder proposals, denoising
    part) as above; the assigner must match on the same Gumbel
    probabilities: ``dict(type='mmlongtail.LossActivationCost')`` in place
    of mmdet's sigmoid ``FocalLossCost``, which is refused at build.

    It also takes the frame's keyword arguments, ``reduction``,
    ``loss_weight``, ``use_sigmoid`` (see
    :class:`~mmlongtail.models.losses.frame.ClassificationLoss`).

    Args:
        num_classes (int): ``C``.
        category_stats (optional): ``'lvis_v1'``, a path to a stats JSON or
            an LVIS/COCO annotation file, a dict, or a ``CategoryStats``.
            Required with ``drop_loss``.
        drop_loss (bool): Apply DropLoss. Defaults to True.
        lambda_ (float): DropLoss's image-frequency threshold: classes with
            ``image_count / num_images < lambda_`` are rare. Defaults to
            1.1e-3 (the official LVIS v1 setting; its code default 1.77e-3 is
            for LVIS v0.5).
    """

    SIGMOID = True

    def __init__(self,
                 num_classes: int,
                 category_stats: Optional[StatsSource] = None,
                 drop_loss: bool = True,
                 lambda_: float = 1.1e-3,
                 **frame: Any) -> None:
        owner = 'GumbelLoss'
        if drop_loss and category_stats is None:
            raise ValueError(f'{owner}: drop_loss=True needs category_stats '
                             "(e.g. 'lvis_v1' or an annotation file)")
        if drop_loss and not lambda_ >= 0:
            raise ValueError(f'{owner}: lambda_ must be >= 0, got '
                             f'{lambda_}')
        super().__init__(
            num_classes,
            category_stats=category_stats if drop_loss else None,
            **frame)
        self.drop_loss = bool(drop_loss)
        self.lambda_ = float(lambda_)
        if not self.drop_loss:
            self.rare_mask = None
            return
        rare = torch.from_numpy(self.stats.image_frequency < self.lambda_)
        # derived from the statistics, not trained: not saved in checkpoints
        self.register_buffer('rare_mask', rare, persistent=False)
        MMLogger.get_current_instance().info(
            f'GumbelLoss with DropLoss: {int(rare.sum())} of '
            f'{self.num_classes} classes have image frequency < '
            f'{self.lambda_} (from {self.stats.source})')

    def _layout(self, num_classes: int) -> ClassifierLayout:
        return ClassifierLayout.classes_first(
            'GumbelLoss', num_classes,
            scoring='exp(-exp(-z)) per class; background column '
            '1 - max_j p_j', family=ScoringFamily.GUMBEL)

    def _activation(self, cls_score: Tensor) -> Tensor:
        return gumbel_scores_with_background(cls_score)

    def class_probabilities(self, cls_score: Tensor) -> Tensor:
        """The Gumbel probability ``exp(-exp(-z))`` of each of the ``C``
        logits (no background column)."""
        return gumbel_activation(cls_score)

    def drop_weights(self, labels: Tensor,
                     label_weights: Optional[Tensor]) -> Tensor:
        """DropLoss's ``(N, C)`` weights for this batch (draws from torch's
        RNG)."""
        valid = None if label_weights is None else label_weights > 0
        ratio = rare_positive_ratio(labels, self.rare_mask, valid)
        rand = torch.rand((labels.numel(), self.num_classes),
                          device=labels.device)
        return drop_loss_weights(labels, self.rare_mask, ratio, rand)

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: Optional[float],
              reduction: str) -> Tensor:
        """Draws DropLoss's random numbers; ``(N, C)`` logits, float32 loss
        (``'none'``: ``(N,)``)."""
        elem_weight = None
        if self.drop_loss and cls_score.size(0) > 0:
            elem_weight = self.drop_weights(labels, label_weights)
        return gumbel_loss(cls_score, labels, elem_weight, label_weights,
                           reduction, avg_factor)
