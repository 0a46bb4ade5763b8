"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection",
ICCV 2017), usable both in dense heads and as the RoI classification loss.

Also hosts the small input checks and the sigmoid classifier protocol shared by
the sigmoid losses of this package (EQL, focal).
"""
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.losses.accuracy import accuracy
from mmdet.models.losses.utils import weight_reduce_loss
from torch import Tensor

from mmlongtail.registry import MODELS

_REDUCTIONS = (None, 'none', 'mean', 'sum')


def check_labels(labels: Tensor, max_label: int, owner: str) -> None:
    """Raise if ``labels`` is not a 1-D integer tensor in ``[0, max_label]``.

    On CPU this raises ``ValueError`` naming the offending range. On an
    accelerator it uses ``torch._assert_async`` so that the check does not
    synchronize the device (the failure then surfaces at the next sync).

    Args:
        labels (Tensor): ``(N,)`` integer labels.
        max_label (int): Largest valid label (the background label ``C``).
        owner (str): Name used in the message.
    """
    if labels.dim() != 1:
        raise ValueError(f'{owner}: labels must have shape (N,), got '
                         f'{tuple(labels.shape)}')
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f'{owner}: labels must be an integer tensor, got '
                         f'{labels.dtype}')
    if labels.numel() == 0:
        return
    if labels.device.type == 'cpu':
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi > max_label:
            raise ValueError(
                f'{owner}: labels must lie in [0, {max_label}] (background '
                f'is {max_label}), got values in [{lo}, {hi}]')
    else:
        torch._assert_async(((labels >= 0) & (labels <= max_label)).all())


def check_label_weights(label_weights: Optional[Tensor], num: int,
                        owner: str) -> None:
    """Raise ``ValueError`` unless ``label_weights`` is None or ``(N,)``."""
    if label_weights is not None and tuple(label_weights.shape) != (num, ):
        raise ValueError(f'{owner}: label_weights must have shape ({num},), '
                         f'got {tuple(label_weights.shape)}')


def check_reduction(reduction: str, owner: str) -> None:
    """Raise ``ValueError`` unless ``reduction`` is none/mean/sum."""
    if reduction not in ('none', 'mean', 'sum'):
        raise ValueError(f"{owner}: reduction must be 'none', 'mean' or "
                         f"'sum', got {reduction!r}")


def check_cls_channels(expected: int, got: int, owner: str) -> None:
    """Raise ``ValueError`` naming both numbers if the channels disagree."""
    if int(expected) != int(got):
        raise ValueError(f'{owner}: cls_score has {got} channels, expected '
                         f'{expected}')


def empty_loss(cls_score: Tensor, reduction: str, none_shape: tuple) -> Tensor:
    """Loss of an empty batch: zeros connected to the graph (no NaN)."""
    if reduction == 'none':
        return cls_score.new_zeros(none_shape) + cls_score.sum() * 0
    return cls_score.sum() * 0


def sigmoid_scores_with_background(cls_score: Tensor) -> Tensor:
    """``(N, C)`` logits of a sigmoid classifier -> ``(N, C + 1)`` scores.

    Columns ``0..C-1`` are the per-class sigmoid probabilities. A sigmoid
    classifier has no background output, so the last column is
    ``1 - max_j p_j``: the arg-max over the ``C + 1`` columns predicts
    background exactly when no class probability exceeds 0.5. mmdet drops that
    column before NMS, so it never affects detections.
    """
    prob = cls_score.sigmoid()
    if prob.shape[0] == 0:
        bg = prob.new_zeros((0, 1))
    else:
        bg = 1 - prob.max(dim=1, keepdim=True).values
    return torch.cat([prob, bg], dim=1)


class SigmoidClassifierMixin:
    """Classifier protocol of mmdet's ``BBoxHead`` for ``C``-channel sigmoid
    classifiers (background = label ``C`` = all-zero target).

    ``BBoxHead`` reads ``custom_cls_channels`` / ``custom_activation`` /
    ``custom_accuracy`` and then calls ``get_cls_channels``,
    ``get_activation`` (test-time scores, ``(N, C + 1)`` probabilities) and
    ``get_accuracy``. Dense heads ignore all of this.
    """
    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True
    num_classes: Optional[int] = None

    def get_cls_channels(self, num_classes: int) -> int:
        """``C`` output channels; checks ``num_classes`` when the loss has
        one."""
        if self.num_classes is not None and num_classes != self.num_classes:
            raise ValueError(
                f'{type(self).__name__} was built with num_classes='
                f'{self.num_classes}, but the head has num_classes='
                f'{num_classes}')
        return num_classes

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """``(N, C)`` logits -> ``(N, C + 1)`` scores in [0, 1]."""
        return sigmoid_scores_with_background(cls_score)

    def get_accuracy(self, cls_score: Tensor, labels: Tensor) -> Dict[str,
                                                                     Tensor]:
        """Top-1 accuracy over ``C + 1`` outcomes (background = no class
        above 0.5)."""
        return dict(acc=accuracy(self.get_activation(cls_score), labels))


def sigmoid_focal_loss(pred: Tensor,
                       target: Tensor,
                       weight: Optional[Tensor] = None,
                       gamma: float = 2.0,
                       alpha: float = 0.25,
                       reduction: str = 'mean',
                       avg_factor: Optional[float] = None) -> Tensor:
    r"""Sigmoid focal loss, per element, then mmdet's weighted reduction.

    .. math::
        FL = -\alpha_t (1 - p_t)^\gamma \log p_t

    with :math:`\alpha_t = \alpha` for positives and :math:`1 - \alpha` for
    negatives (Lin et al., ICCV 2017, Eq. 5).

    Args:
        pred (Tensor): ``(N, C)`` logits.
        target (Tensor): ``(N,)`` labels in ``[0, C]`` (``C`` = background,
            an all-zero target), or ``(N, C)`` one-hot / soft targets.
        weight (Tensor, optional): ``(N,)``, ``(N, C)`` or ``(N * C,)``.
        gamma (float): Focusing parameter. Defaults to 2.0.
        alpha (float): Positive/negative balance. Defaults to 0.25.
        reduction (str): ``'none'`` (``(N, C)``), ``'mean'`` or ``'sum'``.
        avg_factor (float, optional): Divide the sum by this instead of
            averaging (``'mean'`` only).

    Returns:
        Tensor: Reduced loss.
    """
    num_classes = pred.size(1)
    if target.dim() == pred.dim():
        if target.shape != pred.shape:
            raise ValueError(
                f'focal loss: target of shape {tuple(target.shape)} does '
                f'not match pred {tuple(pred.shape)}')
        target = target.type_as(pred)
    else:
        check_labels(target, num_classes, 'FocalLoss')
        # one column per class plus one for background, which is then dropped
        target = F.one_hot(target, num_classes + 1)[:, :num_classes]
        target = target.type_as(pred)
    prob = pred.sigmoid()
    # one minus the probability of the true outcome, (1 - p_t)
    one_minus_pt = (1 - prob) * target + prob * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) *
                    (1 - target)) * one_minus_pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(
        pred, target, reduction='none') * focal_weight
    if weight is not None:
        if weight.shape != loss.shape:
            if weight.dim() == 1 and weight.size(0) == loss.size(0):
                weight = weight.view(-1, 1)
            elif weight.numel() == loss.numel():
                weight = weight.view(loss.size(0), -1)
            else:
                raise ValueError(
                    f'focal loss: weight of shape {tuple(weight.shape)} fits '
                    f'neither (N,)=({loss.size(0)},) nor (N, C)='
                    f'{tuple(loss.shape)}')
    if loss.numel() == 0 and reduction != 'none':
        return pred.sum() * 0
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@MODELS.register_module()
class FocalLoss(SigmoidClassifierMixin, nn.Module):
    """Sigmoid focal loss (Lin et al., ICCV 2017).

    Numerically the same as mmdet 3.3.0's ``FocalLoss(use_sigmoid=True)``
    python path (loss and gradient), in dense heads and as an RoI classifier
    with ``C`` channels and background label ``C``. It also implements the
    ``BBoxHead`` classifier protocol, so a ``Shared2FCBBoxHead`` gets a
    ``C``-channel ``fc_cls`` and ``(N, C + 1)`` probability scores at test
    time (mmdet's own focal loss does neither). Unlike mmdet, an empty batch
    gives 0 instead of NaN.

    Args:
        use_sigmoid (bool): Must be True; kept because mmdet's dense heads
            read it from the config. Defaults to True.
        gamma (float): Focusing parameter. Defaults to 2.0.
        alpha (float): Balance factor. Defaults to 0.25.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Defaults to
            ``'mean'``.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
        num_classes (int, optional): If given, checked against the head's
            ``num_classes`` when the head sizes ``fc_cls``.
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 gamma: float = 2.0,
                 alpha: float = 0.25,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 num_classes: Optional[int] = None) -> None:
        super().__init__()
        if use_sigmoid is not True:
            raise ValueError('mmlongtail.FocalLoss is a sigmoid focal loss; '
                             'use_sigmoid must be True')
        check_reduction(reduction, 'FocalLoss')
        self.use_sigmoid = True
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)
        self.num_classes = num_classes

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Compute the loss.

        Args:
            cls_score (Tensor): ``(N, C)`` logits.
            labels (Tensor): ``(N,)`` labels in ``[0, C]`` or ``(N, C)``
                one-hot targets.
            label_weights (Tensor, optional): ``(N,)`` or ``(N, C)``.
            avg_factor (float, optional): Normalizer for ``'mean'``.
            reduction_override (str, optional): ``'none'``, ``'mean'`` or
                ``'sum'``.

        Returns:
            Tensor: Scalar, or ``(N, C)`` with ``'none'``.
        """
        assert reduction_override in _REDUCTIONS
        reduction = reduction_override or self.reduction
        loss = sigmoid_focal_loss(
            cls_score,
            labels,
            label_weights,
            gamma=self.gamma,
            alpha=self.alpha,
            reduction=reduction,
            avg_factor=avg_factor)
        return self.loss_weight * loss
