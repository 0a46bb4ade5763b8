"""Effective Class-Margin loss, ECM (Cho and Krähenbühl, "Long-tail detection
with effective class-margins", ECCV 2022), as in janghyuncho/ECM-Loss's
``EffectiveClassMarginLoss``.

``C + 1`` sigmoid outputs (the classes, then background). Every output ``j``
is a binary classifier with ``n_j`` positives and ``n_neg_j = sum(n) - n_j``
negatives, where ``n`` holds the training image count of each class and, for
background, ``fg_bg_ratio`` times their total. The margins and weights of the
paper's Theorem 2 follow from these counts:

* positive margin ``m+_j = log((n_j^(1/4) + n_neg_j^(1/4)) / n_neg_j^(1/4))``,
* negative margin ``m-_j = log((n_j^(1/4) + n_neg_j^(1/4)) / n_j^(1/4))``,
* weight ``w_j = a_j log((1 + a_j) / a_j)`` with ``a_j = n_neg_j / n_j``.

The official loss is the binary cross-entropy of
``p_j = e^(z_j + m+_j) / (e^(z_j + m+_j) + e^(-z_j + m-_j))``, that is of the
logit ``2 z_j + m+_j - m-_j`` (the logit enters twice), weighted by ``w_j``
and divided by ``N``; test-time scores are ``sigmoid(z_c) (1 -
sigmoid(z_bg))``.
"""
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from torch import Tensor

from .protocol import empty_loss

#: Background RoIs per foreground image count, measured by the ECM authors on
#: Mask R-CNN's sampled RoIs (the official default).
ECM_FG_BG_RATIO = 6.3313


def ecm_counts(image_count: np.ndarray, fg_bg_ratio: float) -> np.ndarray:
    """``(C + 1,)`` float64: the image counts, then ``fg_bg_ratio`` times
    their sum for background.

    Raises:
        ValueError: A class has no training image (its margin and weight
            would be infinite).
    """
    n = np.asarray(image_count, dtype=np.float64)
    if (n <= 0).any():
        empty = np.flatnonzero(n <= 0)[:10].tolist()
        raise ValueError(
            f'ECMLoss: classes {empty} have no training image; ECM margins '
            'need every class to have image_count >= 1')
    if not fg_bg_ratio > 0:
        raise ValueError(f'ECMLoss: fg_bg_ratio must be > 0, got '
                         f'{fg_bg_ratio}')
    return np.concatenate([n, [n.sum() * float(fg_bg_ratio)]])


def ecm_margins(counts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Logit offset and weight of each output from its counts.

    Args:
        counts (np.ndarray): ``(C + 1,)`` positives per output (see
            :func:`ecm_counts`); each output's negatives are the rest.

    Returns:
        tuple[np.ndarray, np.ndarray]: ``(offset, weight)``, each
        ``(C + 1,)`` float64: ``offset = m+ - m- = log(n_pos^(1/4) /
        n_neg^(1/4))`` and ``weight = a log((1 + a) / a)``,
        ``a = n_neg / n_pos``.
    """
    n_pos = np.asarray(counts, dtype=np.float64)
    n_neg = n_pos.sum() - n_pos
    root_pos, root_neg = n_pos**0.25, n_neg**0.25
    pos_margin = np.log((root_pos + root_neg) / root_neg)
    neg_margin = np.log((root_pos + root_neg) / root_pos)
    a = n_neg / n_pos
    weight = a * np.log((1 + a) / a)
    return pos_margin - neg_margin, weight


def ecm_loss(cls_score: Tensor,
             labels: Tensor,
             offset: Tensor,
             class_weight: Tensor,
             weight: Optional[Tensor] = None,
             reduction: str = 'mean',
             avg_factor: Optional[float] = None) -> Tensor:
    r"""ECM loss of a ``C + 1``-output sigmoid classifier.

    .. math::
        L = \frac{1}{N} \sum_i \sum_j w_j\,
            \mathrm{BCE}(2 z_{ij} + m^+_j - m^-_j,\ y_{ij})

    with :math:`y_{ij} = 1` iff RoI :math:`i` has label :math:`j` (a
    background RoI is a positive of the last output).

    Args:
        cls_score (Tensor): ``(N, C + 1)`` logits.
        labels (Tensor): ``(N,)`` in ``[0, C]``.
        offset (Tensor): ``(C + 1,)`` margins ``m+ - m-``.
        class_weight (Tensor): ``(C + 1,)`` weights ``w``.
        weight (Tensor, optional): ``(N,)`` per-RoI weights.
        reduction (str): ``'none'`` gives ``(N,)`` (summed over outputs);
            ``'mean'`` divides the sum by ``N`` (or ``avg_factor``).
        avg_factor (float, optional): Normalizer for ``'mean'``.

    Returns:
        Tensor: Reduced loss.
    """
    num, channels = cls_score.shape
    if num == 0:
        return empty_loss(cls_score, reduction, (0, ))
    target = F.one_hot(labels, channels).to(cls_score.dtype)
    logit = 2 * cls_score + offset.to(cls_score.dtype)[None, :]
    loss = F.binary_cross_entropy_with_logits(logit, target, reduction='none')
    loss = (loss * class_weight.to(loss.dtype)[None, :]).sum(dim=1)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def ecm_scores(cls_score: Tensor) -> Tensor:
    """``(N, C + 1)`` logits -> ``(N, C + 1)`` scores: ``sigmoid(z_c) (1 -
    sigmoid(z_bg))`` for the classes, ``sigmoid(z_bg)`` last."""
    prob = cls_score.sigmoid()
    return torch.cat([prob[:, :-1] * (1 - prob[:, -1:]), prob[:, -1:]], 1)
