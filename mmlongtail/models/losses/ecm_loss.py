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

Differences from the official code:

* the margins and weights are computed in float64 (then stored as float32).
  The official float32 ``a log((1 + a) / a)`` loses the weight of classes
  with very few images (``(1 + a) / a`` rounds to 1 or ``1 + 2^-23`` when
  ``a ~ 1e6``): on LVIS v1 its weights of classes with 1-2 images are off by
  up to 5 % (0.946 or 1.05 instead of 0.9999996); with the same counts in
  float64 the two agree to rounding;
* the loss is computed as the binary cross-entropy of ``2 z + m+ - m-``
  with logits, which equals the official exp/ratio/log form but does not
  overflow for ``|z| > ~88``;
* ``label_weights``, ``avg_factor`` and ``reduction_override`` are honoured
  (the official forward ignores them); in mmdet's ``BBoxHead`` (all-one
  weights, ``avg_factor = N``) this changes nothing;
* the counts come from category statistics (``'lvis_v1'`` or an
  annotation file), not from a ``.pkl`` in the working directory;
* accuracy is the top-1 of the test-time scores over ``C + 1`` outcomes
  (the official ``get_accuracy`` takes the arg-max of raw logits, split into
  objectness and class accuracy).
"""
from typing import Any, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.datasets.category_stats import StatsSource
from mmlongtail.registry import MODELS
from .frame import ClassificationLoss
from .protocol import (ClassifierLayout, ScoringFamily, empty_loss,
                       sigmoid_scores_times_objectness)

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


#: ECM's test-time scores: ``(N, C + 1)`` logits -> ``sigmoid(z_c) (1 -
#: sigmoid(z_bg))`` for the classes, ``sigmoid(z_bg)`` last (the shared
#: helper, also EQLv2's).
ecm_scores = sigmoid_scores_times_objectness


@MODELS.register_module()
class ECMLoss(ClassificationLoss):
    """Effective Class-Margin loss (Cho and Krähenbühl, ECCV 2022).

    Equal (loss, gradient and test-time scores) to the official
    ``EffectiveClassMarginLoss`` of janghyuncho/ECM-Loss given the same
    counts, up to the float32 rounding of the official weights (see the
    module docstring). ``C + 1`` outputs: rows ``0 .. C - 1`` are the
    classes, row ``C`` background.

    It also takes the frame's keyword arguments, ``reduction``,
    ``loss_weight``, ``use_sigmoid`` (see
    :class:`~mmlongtail.models.losses.frame.ClassificationLoss`).

    Args:
        num_classes (int): ``C``. Must match the category statistics.
        category_stats: ``'lvis_v1'``, a path to a stats JSON or an LVIS/COCO
            annotation file, a dict, or a ``CategoryStats``. The margins use
            the training image counts.
        fg_bg_ratio (float): Background count per foreground image count.
            Defaults to 6.3313 (the authors' measurement on Mask R-CNN).
    """

    SIGMOID = True

    def __init__(self,
                 num_classes: int,
                 category_stats: StatsSource,
                 fg_bg_ratio: float = ECM_FG_BG_RATIO,
                 **frame: Any) -> None:
        super().__init__(num_classes, category_stats=category_stats,
                         **frame)
        stats = self.stats
        self.fg_bg_ratio = float(fg_bg_ratio)
        offset, weight = ecm_margins(
            ecm_counts(stats.image_count, self.fg_bg_ratio))
        # derived from the statistics, not trained: not saved in checkpoints
        self.register_buffer(
            'offset', torch.from_numpy(offset).float(), persistent=False)
        self.register_buffer(
            'class_weight', torch.from_numpy(weight).float(),
            persistent=False)
        MMLogger.get_current_instance().info(
            f'ECMLoss: margins from {stats.source}, background count '
            f'{self.fg_bg_ratio} x {int(stats.image_count.sum())}')

    def _layout(self, num_classes: int) -> ClassifierLayout:
        return ClassifierLayout.classes_first(
            'ECMLoss', num_classes, ('background', ),
            scoring='sigmoid per row; classes times 1 - sigmoid(background)',
            family=ScoringFamily.SIGMOID_OBJECTNESS)

    def _activation(self, cls_score: Tensor) -> Tensor:
        return ecm_scores(cls_score)

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: Optional[float],
              reduction: str) -> Tensor:
        """``(N, C + 1)`` logits; ``'none'`` gives ``(N,)``."""
        return ecm_loss(cls_score, labels, self.offset, self.class_weight,
                        label_weights, reduction, avg_factor)
