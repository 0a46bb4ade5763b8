"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection",
ICCV 2017), usable both in dense heads and as the RoI classification loss."""
from typing import Optional, Tuple

import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from torch import Tensor

from mmlongtail.registry import MODELS
from .frame import ClassificationLoss
from .protocol import (SigmoidClassifierProtocol, check_labels,
                       sigmoid_targets)
from .sigmoid_kernels import lean_focal_loss


def _weight_view(weight: Optional[Tensor],
                 shape: Tuple[int, int]) -> Optional[Tensor]:
    """``(N,)``, ``(N, C)`` or ``(N * C,)`` weights as ``(N, 1)`` or
    ``(N, C)`` (mmdet's rule); ``ValueError`` for any other shape."""
    if weight is None or tuple(weight.shape) == shape:
        return weight
    if weight.dim() == 1 and weight.size(0) == shape[0]:
        return weight.view(-1, 1)
    if weight.numel() == shape[0] * shape[1]:
        return weight.view(shape[0], -1)
    raise ValueError(
        f'focal loss: weight of shape {tuple(weight.shape)} fits neither '
        f'(N,)=({shape[0]},) nor (N, C)={shape}')


def sigmoid_focal_loss(pred: Tensor,
                       target: Tensor,
                       weight: Optional[Tensor] = None,
                       gamma: float = 2.0,
                       alpha: float = 0.25,
                       reduction: str = 'mean',
                       avg_factor: Optional[float] = None,
                       lean: bool = True) -> Tensor:
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
        lean (bool): With ``(N,)`` labels, compute it with
            :func:`~mmlongtail.models.losses.sigmoid_kernels.lean_focal_loss`
            (one ``(N, C)`` temporary, the closed-form gradient, mmcv's
            fused kernel on CUDA; float32 for lower-precision logits).
            False: the autograd formula below, as mmdet's python path
            (always used for ``(N, C)`` targets). Defaults to True.

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
        check_labels(target, pred.size(0), num_classes, 'FocalLoss')
        if lean:
            weight = _weight_view(weight, tuple(pred.shape))
            if pred.numel() == 0 and reduction != 'none':
                return pred.sum() * 0
            return lean_focal_loss(
                pred, target.long(), weight, gamma, alpha,
                reduction=reduction, avg_factor=avg_factor)[0]
        # one column per class plus one for background, which is then dropped
        target = sigmoid_targets(target, num_classes)
        target = target.type_as(pred)
    prob = pred.sigmoid()
    # one minus the probability of the true outcome, (1 - p_t)
    one_minus_pt = (1 - prob) * target + prob * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) *
                    (1 - target)) * one_minus_pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(
        pred, target, reduction='none') * focal_weight
    weight = _weight_view(weight, tuple(loss.shape))
    if loss.numel() == 0 and reduction != 'none':
        return pred.sum() * 0
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@MODELS.register_module()
class FocalLoss(SigmoidClassifierProtocol, ClassificationLoss):
    """Sigmoid focal loss (Lin et al., ICCV 2017).

    Numerically the same as mmdet 3.3.0's ``FocalLoss(use_sigmoid=True)``
    python path (loss and gradient; bit for bit with ``lean=False``, to
    float rounding with the default lean kernel, which keeps one ``(N, C)``
    temporary instead of about eight and uses mmcv's fused kernel on CUDA;
    that kernel clamps ``log(p)`` at float32's smallest normal number, so
    on CUDA an element with ``|logit| > ~87`` on its wrong side adds about
    ``alpha * 87.3`` to the loss instead of ``alpha * |logit|``, as in
    mmdet's CUDA path; the gradient is not affected), in dense heads and
    as an RoI classifier with ``C`` channels and background label ``C``.
    It also implements the ``BBoxHead`` classifier protocol, so a
    ``Shared2FCBBoxHead`` gets a ``C``-channel ``fc_cls`` and
    ``(N, C + 1)`` probability scores at test time (mmdet's own focal loss
    does neither). Unlike mmdet, an empty batch
    gives 0 instead of NaN.

    Args:
        gamma (float): Focusing parameter. Defaults to 2.0.
        alpha (float): Balance factor. Defaults to 0.25.
        num_classes (int, optional): If given, checked against the head's
            ``num_classes`` when the head sizes ``fc_cls``.
        lean (bool): Compute ``(N,)``-label calls with the lean kernel (one
            ``(N, C)`` temporary; mmcv's fused op on CUDA), see
            :func:`sigmoid_focal_loss`. False: the autograd formula (as
            before; kept as the reference). Defaults to True.
        reduction, loss_weight, use_sigmoid, dense_head: As
            :class:`~mmlongtail.models.losses.frame.ClassificationLoss`
            takes them.
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 gamma: float = 2.0,
                 alpha: float = 0.25,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 num_classes: Optional[int] = None,
                 dense_head: Optional[bool] = None,
                 lean: bool = True) -> None:
        super().__init__(
            num_classes, reduction, loss_weight, use_sigmoid,
            dense_head=dense_head)
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.lean = bool(lean)

    def check_inputs(self, cls_score: Tensor, labels: Tensor,
                     label_weights: Optional[Tensor]) -> None:
        """Checked by :func:`sigmoid_focal_loss`, which also takes one-hot
        targets and ``(N, C)`` weights (dense heads)."""

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: Optional[float],
              reduction: str) -> Tensor:
        """``labels`` may also be ``(N, C)`` one-hot targets and
        ``label_weights`` ``(N, C)``; ``'none'`` gives ``(N, C)``."""
        return sigmoid_focal_loss(
            cls_score,
            labels,
            label_weights,
            gamma=self.gamma,
            alpha=self.alpha,
            reduction=reduction,
            avg_factor=avg_factor,
            lean=self.lean)
