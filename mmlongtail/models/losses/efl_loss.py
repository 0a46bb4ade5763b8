"""Equalized Focal Loss (Li et al., "Equalized Focal Loss for Dense Long-Tailed
Object Detection", CVPR 2022), for mmdet's dense heads (RetinaNet, ATSS,
FCOS) and, through the sigmoid classifier protocol, R-CNN box heads."""
from typing import Any, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.registry import MODELS
from .focal_loss import sigmoid_focal_loss
from .frame import AvgFactor, ClassificationLoss, GradientStatistics
from .protocol import SigmoidClassifierProtocol, empty_loss, sigmoid_targets
from .sigmoid_kernels import lean_focal_loss

#: Initial positive/negative gradient ratio g_j: 1, so that every class starts
#: with the base focusing factor and weight 1 (plain focal loss), as in the
#: official implementation.
INITIAL_POS_NEG_RATIO = 1.0
#: Added to the accumulated negative gradient before dividing (official value).
#: mmdet's ``weight_reduce_loss`` divides by ``avg_factor + eps``.
_AVG_EPS = torch.finfo(torch.float32).eps


def efl_factors(pos_neg: Tensor, gamma: float,
                scale_factor: float) -> Tuple[Tensor, Tensor]:
    r"""Per-class focusing and weighting factors of EFL.

    :math:`\gamma_j = \gamma_b + s\,(1 - g_j)` and :math:`w_j = \gamma_j /
    \gamma_b` with :math:`g_j` the accumulated positive-to-negative gradient
    ratio of class :math:`j` (Li et al., CVPR 2022, Eq. 5 and 7).

    Args:
        pos_neg (Tensor): ``(C,)`` ratio :math:`g_j` in ``[0, 1]``.
        gamma (float): :math:`\gamma_b`, the base focusing factor.
        scale_factor (float): :math:`s`.

    Returns:
        tuple[Tensor, Tensor]: ``(gammas, weights)``, each ``(C,)`` float32,
        new tensors (later updates of ``pos_neg`` do not change them).
    """
    gammas = gamma + scale_factor * (1 - pos_neg.detach().float())
    return gammas, gammas / gamma


def _at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32, or float64 if it already is."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def equalized_focal_loss(cls_score: Tensor,
                         labels: Tensor,
                         gammas: Tensor,
                         class_weights: Tensor,
                         alpha: float = 0.25,
                         weight: Optional[Tensor] = None,
                         reduction: str = 'mean',
                         avg_factor: AvgFactor = None) -> Tensor:
    r"""Equalized focal loss of a ``C``-channel sigmoid classifier.

    .. math::
        EFL(p_t) = -\sum_j \alpha_t \frac{\gamma_j}{\gamma_b}
                   (1 - p_t)^{\gamma_j} \log p_t

    per element: the sigmoid focal loss (:func:`sigmoid_focal_loss`) with
    focusing factor ``gammas[j]``, times ``class_weights[j]``. Computed in
    float32 (float64 for float64 logits) whatever the logits' dtype: the
    exponent reaches :math:`\gamma_b + s = 10`.

    Args:
        cls_score (Tensor): ``(N, C)`` logits.
        labels (Tensor): ``(N,)`` in ``[0, C]``; ``C`` is background
            (all-zero target).
        gammas (Tensor): ``(C,)`` focusing factors :math:`\gamma_j`.
        class_weights (Tensor): ``(C,)`` weighting factors.
        alpha (float): Positive/negative balance. Defaults to 0.25.
        weight (Tensor, optional): ``(N,)`` per-sample weights (0 drops a
            sample: mmdet's way of ignoring an anchor).
        reduction (str): ``'none'`` (``(N, C)``), ``'mean'`` or ``'sum'``.
        avg_factor (float | Tensor, optional): With ``'mean'``, divide the
            sum by this instead of ``N * C``.

    Returns:
        Tensor: Reduced loss, float32 (float64 for float64 logits).
    """
    pred = _at_least_float32(cls_score)
    if pred.size(0) == 0:
        return empty_loss(pred, reduction, tuple(pred.shape))
    loss = sigmoid_focal_loss(
        pred, labels, None, gamma=gammas.to(pred.dtype), alpha=alpha,
        reduction='none', lean=False) * class_weights.to(pred.dtype)
    if weight is not None:
        weight = weight.to(pred.dtype).view(-1, 1)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@torch.no_grad()
def efl_logit_gradient(cls_score: Tensor,
                       labels: Tensor,
                       gammas: Tensor,
                       class_weights: Tensor,
                       alpha: float = 0.25,
                       weight: Optional[Tensor] = None,
                       scale: Union[float, Tensor] = 1.0
                       ) -> Tuple[Tensor, Tensor]:
    r"""Positive and negative gradient magnitudes of EFL per class.

    The derivative of one element :math:`\alpha_t w_j (1 - p_t)^{\gamma_j}
    (-\log p_t)` with respect to its logit has magnitude

    .. math::
        \alpha_t\, w_j\, q^{\gamma_j} \left(q - \gamma_j\, p_t \log p_t
        \right), \qquad q = 1 - p_t,

    times the sample's ``weight`` and ``scale`` (``loss_weight`` over the
    reduction's divisor). Summed over samples separately where the class is
    the target (positive) and where it is not (negative), this is what the
    official code accumulates from a backward hook on the classifier's
    output: the closed form of that hook's gradient, computed in float32
    without autograd.

    Args:
        cls_score (Tensor): ``(N, C)`` logits.
        labels (Tensor): ``(N,)`` in ``[0, C]``.
        gammas (Tensor): ``(C,)`` focusing factors in force for this batch.
        class_weights (Tensor): ``(C,)`` weighting factors.
        alpha (float): Positive/negative balance.
        weight (Tensor, optional): ``(N,)`` per-sample weights.
        scale (float | Tensor): Multiplies every element (scalar).

    Returns:
        tuple[Tensor, Tensor]: ``(pos_grad, neg_grad)``, each ``(C,)``
        float32.
    """
    x = cls_score.detach().float()
    num_classes = x.size(1)
    target = sigmoid_targets(labels, num_classes).float()
    # z is the logit of the true outcome: p_t = sigmoid(z), q = sigmoid(-z)
    z = x * (2 * target - 1)
    log_pt = F.logsigmoid(z)
    q = torch.sigmoid(-z)
    gammas = gammas.float()
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    grad = alpha_t * class_weights.float() * q.pow(gammas) * (
        q - gammas * log_pt.exp() * log_pt)
    if weight is not None:
        grad = grad * weight.detach().float().view(-1, 1)
    grad = grad * scale
    return (grad * target).sum(dim=0), (grad * (1 - target)).sum(dim=0)


def _reduction_scale(reduction: str, numel: int,
                     avg_factor: AvgFactor) -> Union[float, Tensor]:
    """d(reduced loss) / d(one element) of mmdet's ``weight_reduce_loss``."""
    if reduction != 'mean':
        return 1.0
    if avg_factor is None:
        return 1.0 / max(numel, 1)
    if isinstance(avg_factor, Tensor):
        return 1.0 / (avg_factor.detach().float() + _AVG_EPS)
    return 1.0 / (float(avg_factor) + _AVG_EPS)


@MODELS.register_module()
class EqualizedFocalLoss(SigmoidClassifierProtocol, GradientStatistics,
                         ClassificationLoss):
    r"""Equalized Focal Loss (Li et al., CVPR 2022).

    Focal loss with a per-class focusing factor :math:`\gamma_j = \gamma_b +
    s (1 - g_j)` and weighting factor :math:`\gamma_j / \gamma_b`, where
    :math:`g_j = \mathrm{clamp}(\sum \text{pos grad}_j / \sum \text{neg
    grad}_j, 0, 1)` accumulates the gradient of the classification logits
    over training. Exact to the official ``EqualizedFocalLoss`` of ModelTC/EOD
    (loss, gradient and statistics) on the same logits and targets.

    The statistics come from the gradient of this loss's output with respect
    to its input logits, in closed form (float32, so autocast and loss
    scaling leave them alone; the lean kernel's forward pass, or
    :func:`efl_logit_gradient` with ``lean=False``), and are applied when
    that output is backpropagated: every call made in forward (mmdet's
    RetinaNet and ATSS heads call the loss once per FPN level) uses the
    factors of the previous steps, and the backward pass adds all levels'
    gradients, as the official hook on the classifier conv does. A call whose
    output is never backpropagated (evaluation, ``no_grad``) changes nothing.

    Differences from the official code, none of which changes its numbers:

    * mmdet's conventions: labels ``[0, C]`` with background ``C``, ignored
      samples have ``label_weights`` 0 (the official code drops label -1),
      ``avg_factor`` is the normalizer;
    * log-sigmoid instead of ``log(sigmoid)`` (finite for large logits);
    * the statistics are persistent float32 buffers (``pos_grad``,
      ``neg_grad``, ``pos_neg``), saved in checkpoints; each call's
      contribution is all-reduced in forward (every rank calls the loss the
      same number of times), only when a multi-rank process group exists;
    * no hook on the head's classifier, so it works in any head that calls
      its ``loss_cls`` on the logits.

    In a query-based head (DINO, Deformable DETR) the same design covers
    every classification output of a step: each decoder layer's matched
    queries, the encoder proposals and each layer's denoising queries feed
    the statistics (all train the classes' classifiers, whose gradient
    ratio EFL equalizes; the official hook sees them all on a shared
    classifier), each call all-reduced in forward (one collective per
    call) and added on backward, all at the factors of the previous steps.

    It also takes the frame's keyword arguments, ``reduction``,
    ``loss_weight``, ``use_sigmoid``, ``dense_head`` (see
    :class:`~mmlongtail.models.losses.frame.ClassificationLoss`).

    Args:
        num_classes (int): ``C``.
        gamma (float): :math:`\gamma_b`, the base focusing factor. Defaults
            to 2.0.
        scale_factor (float): :math:`s`. Defaults to 8.0.
        alpha (float): Positive/negative balance. Defaults to 0.25.
        use_distributed (bool): All-reduce the statistics when distributed.
            Defaults to True.
        lean (bool): Compute the loss, its gradient and the statistics with
            :func:`~mmlongtail.models.losses.sigmoid_kernels.lean_focal_loss`
            (one ``(N, C)`` temporary instead of about ten; same values).
            False: :func:`equalized_focal_loss` through autograd and
            :func:`efl_logit_gradient` (as before; kept as the reference).
            Defaults to True.
    """

    def __init__(self,
                 num_classes: int,
                 gamma: float = 2.0,
                 scale_factor: float = 8.0,
                 alpha: float = 0.25,
                 use_distributed: bool = True,
                 lean: bool = True,
                 **frame: Any) -> None:
        super().__init__(num_classes, **frame)
        if gamma <= 0:
            raise ValueError(f'EqualizedFocalLoss: gamma must be > 0 (the '
                             f'weighting factor divides by it), got {gamma}')
        if scale_factor < 0:
            raise ValueError(f'EqualizedFocalLoss: scale_factor must be >= '
                             f'0, got {scale_factor}')
        self.gamma = float(gamma)
        self.scale_factor = float(scale_factor)
        self.alpha = float(alpha)
        self.lean = bool(lean)
        self.init_gradient_statistics(
            self.num_classes, INITIAL_POS_NEG_RATIO, use_distributed,
            clamp_ratio=True)
        MMLogger.get_current_instance().info(
            f'EqualizedFocalLoss: gamma={self.gamma}, scale_factor='
            f'{self.scale_factor}, alpha={self.alpha}')

    def get_factors(self) -> Tuple[Tensor, Tensor]:
        """Current ``(gammas, weights)``, each ``(C,)`` float32."""
        return efl_factors(self.pos_neg, self.gamma, self.scale_factor)

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: AvgFactor,
              reduction: str) -> Tensor:
        """float32 loss (``'none'``: ``(N, C)``); its backward adds this
        batch's statistics."""
        gammas, weights = self.get_factors()
        if self.lean:
            return self._lean_loss(cls_score, labels, label_weights,
                                   avg_factor, reduction, gammas, weights)
        loss = equalized_focal_loss(cls_score, labels, gammas, weights,
                                    self.alpha, label_weights, reduction,
                                    avg_factor)
        if loss.requires_grad:
            # this output will be backpropagated by a training step: its
            # logit gradient, summed over all ranks now (every rank makes
            # the same calls in forward), enters the statistics when
            # backward reaches it
            scale = self.loss_weight * _reduction_scale(
                reduction, cls_score.numel(), avg_factor)
            pos, neg = efl_logit_gradient(cls_score, labels, gammas, weights,
                                          self.alpha, label_weights, scale)
            self.add_gradient_sums_on_backward(loss, pos, neg)
        return loss

    def _lean_loss(self, cls_score: Tensor, labels: Tensor,
                   label_weights: Optional[Tensor], avg_factor: AvgFactor,
                   reduction: str, gammas: Tensor, weights: Tensor) -> Tensor:
        """:meth:`_loss` with the lean kernel: the statistics come from the
        forward pass's closed-form gradient, all-reduced now and added when
        backward reaches the output, as in the autograd path."""
        tracked = cls_score.requires_grad and torch.is_grad_enabled()
        if cls_score.size(0) == 0:
            loss = empty_loss(_at_least_float32(cls_score), reduction,
                              tuple(cls_score.shape))
            if tracked:  # every rank makes the same collective calls
                zeros = cls_score.new_zeros(cls_score.size(1),
                                            dtype=torch.float32)
                self.add_gradient_sums_on_backward(loss, zeros,
                                                   zeros.clone())
            return loss
        scale = None
        if tracked:
            scale = self.loss_weight * _reduction_scale(
                reduction, cls_score.numel(), avg_factor)
        weight = None if label_weights is None else label_weights.view(-1, 1)
        loss, stats = lean_focal_loss(
            cls_score, labels, weight, gammas, self.alpha, weights,
            reduction, avg_factor, stats_scale=scale)
        if tracked:
            self.add_gradient_sums_on_backward(loss, *stats)
        return loss
