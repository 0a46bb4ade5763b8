"""Equalization Loss (Tan et al., "Equalization Loss for Long-Tailed Object
Recognition", CVPR 2020)."""
from typing import Any, Optional

import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.datasets.category_stats import StatsSource
from mmlongtail.registry import MODELS
from .frame import ClassificationLoss
from .protocol import SigmoidClassifierProtocol, empty_loss, sigmoid_targets
from .sigmoid_kernels import bce_terms, lean_bce_loss


def eql_loss(cls_score: Tensor,
             labels: Tensor,
             tail_mask: Tensor,
             weight: Optional[Tensor] = None,
             reduction: str = 'mean',
             avg_factor: Optional[float] = None) -> Tensor:
    r"""Equalization loss of a ``C``-channel sigmoid classifier.

    For proposal :math:`i` and class :math:`j`,

    .. math::
        w_{ij} = 1 - E(r_i)\, T_\lambda(f_j)\, (1 - y_{ij}),\qquad
        L = \frac{1}{N} \sum_i \sum_j w_{ij}\,
            \mathrm{BCE}(x_{ij}, y_{ij})

    where :math:`E(r_i)` is 1 for a foreground proposal and 0 for background,
    and :math:`T_\lambda(f_j)` is 1 for the classes whose image frequency is
    below :math:`\lambda` (Tan et al., CVPR 2020, Eq. 6-8). So the negative
    gradients that foreground proposals send to rare classes are dropped;
    background proposals still suppress every class.

    Args:
        cls_score (Tensor): ``(N, C)`` logits.
        labels (Tensor): ``(N,)`` in ``[0, C]``; ``C`` is background (all-zero
            target).
        tail_mask (Tensor): ``(C,)`` bool, :math:`T_\lambda(f_j)`.
        weight (Tensor, optional): ``(N,)`` per-proposal weights.
        reduction (str): ``'none'`` gives the ``(N,)`` per-proposal loss
            (summed over classes); ``'mean'`` averages it over ``N`` (the
            paper's :math:`\Sigma/N`); ``'sum'`` sums it.
        avg_factor (float, optional): With ``'mean'``, divide the sum by this
            instead of ``N``.

    Returns:
        Tensor: Reduced loss.
    """
    num, num_classes = cls_score.shape
    if num == 0:
        return empty_loss(cls_score, reduction, (0, ))
    target = sigmoid_targets(labels, num_classes)
    target = target.to(cls_score.dtype)
    is_fg = (labels < num_classes).to(cls_score.dtype)  # E(r)
    tail = tail_mask.to(cls_score.dtype)  # T_lambda(f)
    eql_w = 1 - is_fg[:, None] * tail[None, :] * (1 - target)
    loss = F.binary_cross_entropy_with_logits(
        cls_score, target, reduction='none') * eql_w
    loss = loss.sum(dim=1)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@MODELS.register_module()
class EQLLoss(SigmoidClassifierProtocol, ClassificationLoss):
    """Equalization Loss (Tan et al., CVPR 2020).

    A sigmoid classifier with ``C`` channels; background is label ``C`` (an
    all-zero target). With ``label_weights=None`` and ``avg_factor=None`` the
    loss is the paper's ``sum(BCE * w) / N``; mmdet's ``BBoxHead`` passes
    all-one ``label_weights`` and ``avg_factor=N``, which gives the same value.

    It also takes the frame's keyword arguments, ``reduction``,
    ``loss_weight``, ``use_sigmoid``, ``dense_head`` (see
    :class:`~mmlongtail.models.losses.frame.ClassificationLoss`).

    Args:
        num_classes (int): ``C``. Must match the category statistics.
        category_stats: ``'lvis_v1'``, a path to a stats JSON or an LVIS/COCO
            annotation file, a dict, or a ``CategoryStats`` (see
            :func:`mmlongtail.datasets.load_category_stats`).
        freq_thr (float): :math:`\\lambda`. Classes whose image frequency
            ``image_count / num_images`` is strictly below it get no negative
            gradients from foreground proposals. Defaults to 1.76e-3 (the
            paper's value for LVIS v0.5; 1.1e-3 is the official LVIS v1
            setting).
        lean (bool): In a dense head, compute the loss with
            :func:`~mmlongtail.models.losses.sigmoid_kernels.lean_bce_loss`
            (one ``(N, C)`` temporary, the closed-form gradient; float32 for
            lower-precision logits). False, or in an R-CNN head:
            :func:`eql_loss` through autograd. Defaults to True.
    """

    def __init__(self,
                 num_classes: int,
                 category_stats: StatsSource,
                 freq_thr: float = 1.76e-3,
                 lean: bool = True,
                 **frame: Any) -> None:
        if not freq_thr >= 0:
            raise ValueError(f'EQLLoss: freq_thr must be >= 0, got '
                             f'{freq_thr}')
        super().__init__(num_classes, category_stats=category_stats,
                         **frame)
        self.freq_thr = float(freq_thr)
        self.lean = bool(lean)
        tail = torch.from_numpy(self.stats.image_frequency < self.freq_thr)
        # derived from the statistics, not trained: not saved in checkpoints
        self.register_buffer('tail_mask', tail, persistent=False)
        MMLogger.get_current_instance().info(
            f'EQLLoss: {int(tail.sum())} of {self.num_classes} classes have '
            f'image frequency < {self.freq_thr} (from {self.stats.source})')

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: Optional[float],
              reduction: str) -> Tensor:
        """``(N, C)`` logits; ``'none'`` gives ``(N,)``."""
        if self.lean and self.dense_head and cls_score.size(0) > 0:
            # foreground rows send no negative gradient to tail classes
            terms = bce_terms(cls_score,
                              fg_neg_coef=1 - self.tail_mask.float())
            return lean_bce_loss(cls_score, labels, label_weights, terms,
                                 reduction, avg_factor)
        return eql_loss(cls_score, labels, self.tail_mask, label_weights,
                        reduction, avg_factor)
