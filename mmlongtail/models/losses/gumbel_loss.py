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
"""
from typing import Optional

import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from torch import Tensor

from .protocol import empty_loss

#: The official clamp of the logits before the Gumbel activation.
GUMBEL_LOGIT_MIN = -4.0
GUMBEL_LOGIT_MAX = 10.0


def gumbel_activation(cls_score: Tensor) -> Tensor:
    """``exp(-exp(-z))`` element-wise, unclamped (test-time scores)."""
    return 1 / torch.exp(torch.exp(-cls_score))


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
    target = F.one_hot(labels, num_classes + 1)[:, :num_classes].bool()
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
    target = F.one_hot(labels, num_classes + 1)[:, :num_classes]
    loss = gumbel_bce(cls_score, target)
    if elem_weight is not None:
        loss = loss * elem_weight
    loss = loss.sum(dim=1)
    if weight is not None:
        weight = weight.float()
    return weight_reduce_loss(loss, weight, reduction, avg_factor)
