"""Balanced softmax / logit-adjusted cross-entropy (Ren et al., "Balanced
meta-softmax for long-tailed visual recognition", NeurIPS 2020; Menon et al.,
"Long-tail learning via logit adjustment", ICLR 2021).

Softmax variant: the cross-entropy of the logits shifted by the log prior,
``CE(z + tau log pi, y)``, so that the network learns the balanced
(prior-free) posterior; at test time the head scores with plain softmax.
With ``tau = 1`` this is balanced softmax; Menon et al. call the general form
the logit-adjusted loss.

Sigmoid variant (BALMS's LVIS instance-segmentation code,
cunjunyu/BalancedMetaSoftmax-InstanceSeg, ``BalancedSoftmaxFastRCNNOutputs``):
a ``C``-channel sigmoid classifier whose logits, for foreground RoIs only,
are shifted by ``-log((1 - f_j) / f_j)`` with ``f_j`` the image frequency of
class ``j``; background RoIs are left as they are. Test-time scores are plain
sigmoids.
"""
from typing import Optional

import numpy as np
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from torch import Tensor

from .protocol import empty_loss

#: Background RoIs per foreground count used for the background prior of the
#: softmax variant by default: the ECM authors' measurement of Mask R-CNN's
#: sampled RoIs (see ``ecm_loss.ECM_FG_BG_RATIO``).
DEFAULT_FG_BG_RATIO = 6.3313


def softmax_log_prior(counts: np.ndarray, fg_bg_ratio: float) -> np.ndarray:
    """``(C + 1,)`` float64 ``log pi`` of the softmax variant.

    Background has no frequency in the annotations; it gets the count
    ``fg_bg_ratio * sum(counts)``, i.e. the prior
    ``pi_bg = fg_bg_ratio / (1 + fg_bg_ratio)``, and the classes share the
    rest in proportion to ``counts``.

    Raises:
        ValueError: A class has a zero count (its log prior is -inf) or
            ``fg_bg_ratio <= 0``.
    """
    n = np.asarray(counts, dtype=np.float64)
    if (n <= 0).any():
        empty = np.flatnonzero(n <= 0)[:10].tolist()
        raise ValueError(
            f'BalancedSoftmaxLoss: classes {empty} have a zero count; the '
            'log prior needs every class to occur in training')
    if not fg_bg_ratio > 0:
        raise ValueError(f'BalancedSoftmaxLoss: fg_bg_ratio must be > 0, '
                         f'got {fg_bg_ratio}')
    n = np.concatenate([n, [n.sum() * float(fg_bg_ratio)]])
    return np.log(n / n.sum())


def sigmoid_log_odds(image_frequency: np.ndarray) -> np.ndarray:
    """``(C,)`` float64 ``log((1 - f) / f)`` of the sigmoid variant.

    Raises:
        ValueError: A frequency is not in ``(0, 1)``.
    """
    f = np.asarray(image_frequency, dtype=np.float64)
    bad = (f <= 0) | (f >= 1)
    if bad.any():
        raise ValueError(
            f'BalancedSoftmaxLoss: image frequencies must lie in (0, 1), '
            f'classes {np.flatnonzero(bad)[:10].tolist()} do not')
    return np.log((1 - f) / f)


def balanced_softmax_loss(cls_score: Tensor,
                          labels: Tensor,
                          log_prior: Tensor,
                          tau: float = 1.0,
                          weight: Optional[Tensor] = None,
                          reduction: str = 'mean',
                          avg_factor: Optional[float] = None) -> Tensor:
    r"""Logit-adjusted softmax cross-entropy.

    .. math::
        L_i = -\log \frac{e^{z_{iy} + \tau \log \pi_y}}
                         {\sum_j e^{z_{ij} + \tau \log \pi_j}}

    Args:
        cls_score (Tensor): ``(N, C + 1)`` logits, background last.
        labels (Tensor): ``(N,)`` in ``[0, C]``.
        log_prior (Tensor): ``(C + 1,)`` :math:`\log \pi`.
        tau (float): Scale of the adjustment. Defaults to 1.
        weight (Tensor, optional): ``(N,)`` per-RoI weights.
        reduction (str): ``'none'`` (``(N,)``), ``'mean'`` or ``'sum'``.
        avg_factor (float, optional): Normalizer for ``'mean'``.

    Returns:
        Tensor: Reduced loss.
    """
    if cls_score.size(0) == 0:
        return empty_loss(cls_score, reduction, (0, ))
    logits = cls_score + tau * log_prior.to(cls_score.dtype)[None, :]
    loss = F.cross_entropy(logits, labels, reduction='none')
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def balanced_sigmoid_loss(cls_score: Tensor,
                          labels: Tensor,
                          log_odds: Tensor,
                          tau: float = 1.0,
                          weight: Optional[Tensor] = None,
                          reduction: str = 'mean',
                          avg_factor: Optional[float] = None) -> Tensor:
    r"""BALMS's sigmoid variant of balanced softmax.

    .. math::
        L_i = \sum_j \mathrm{BCE}(z_{ij} - [y_i < C]\,\tau
              \log\frac{1 - f_j}{f_j},\ y_{ij})

    Args:
        cls_score (Tensor): ``(N, C)`` logits.
        labels (Tensor): ``(N,)`` in ``[0, C]``; ``C`` is background.
        log_odds (Tensor): ``(C,)`` :math:`\log((1 - f) / f)`.
        tau (float): Scale of the adjustment; 1 in BALMS. Defaults to 1.
        weight (Tensor, optional): ``(N,)`` per-RoI weights.
        reduction (str): ``'none'`` gives the ``(N,)`` per-RoI loss (summed
            over classes); ``'mean'`` divides the sum by ``N`` (or
            ``avg_factor``); ``'sum'`` sums it.
        avg_factor (float, optional): Normalizer for ``'mean'``.

    Returns:
        Tensor: Reduced loss.
    """
    num, num_classes = cls_score.shape
    if num == 0:
        return empty_loss(cls_score, reduction, (0, ))
    target = F.one_hot(labels, num_classes + 1)[:, :num_classes]
    target = target.to(cls_score.dtype)
    fg = (labels < num_classes).to(cls_score.dtype)[:, None]
    logits = cls_score - fg * (tau * log_odds.to(cls_score.dtype))[None, :]
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction='none')
    return weight_reduce_loss(loss.sum(dim=1), weight, reduction, avg_factor)
