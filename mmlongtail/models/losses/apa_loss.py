"""Adaptive Parametric Activation (APA; Alexandridis, Deng, Nguyen and Luo,
"Adaptive Parametric Activation", ECCV 2024) on the box classifier, trained
with binary cross-entropy and, optionally, DropLoss as in GOL
(:class:`~mmlongtail.models.losses.GumbelLoss`).

APA turns a logit ``z`` into a probability with two learned scalars, the
shape ``lambda`` and the slope ``kappa``:

.. math::
    \\mathrm{APA}(z; \\lambda, \\kappa)
        = (\\lambda e^{-\\kappa z} + 1)^{-1/\\lambda}

``lambda = kappa = 1`` is the sigmoid and ``lambda -> 0, kappa = 1`` the
Gumbel CDF ``exp(-exp(-z))`` of GOL. The values and gradients (with respect
to the logits, ``lambda`` and ``kappa``) are those of the official module
``Unified`` (kostas1515/AGLU, ``mmdetection_v3.2/mmdet/models/backbones/
se_resnet.py`` and the repository README): ``lambda`` is clamped below at
``1e-4`` (so it gets no gradient once it falls under that floor) and the
power is computed as ``exp(softplus_{beta=-1}(kappa z - log lambda) /
lambda)`` with torch's softplus (threshold 20).

**What is ours.** The official detector (configs/activations/
mask_rcnn_r50_fpn_8x2_sample1e-3_mstrain_lvis_2x.py, the published LVIS
rows) uses APA inside its SE-ResNet backbone (AGLU and the SE attention),
while its box classifier keeps GOL's fixed Gumbel activation
(``DropLoss(use_classif='gumbel')``); no official code applies APA to the
classifier logits. This loss is that application: the activation the paper
proposes, on the layer whose activation the paper analyses (Gumbel vs
sigmoid for rare classes). Its published numbers are not this loss's.

**Where the parameters live.** ``lambda_param`` and ``kappa_param`` are
``nn.Parameter`` s of the loss, so they sit in the box head (``loss_cls``
is its submodule): the optimizer trains them with the head, checkpoints
save them (``roi_head.bbox_head.loss_cls.lambda_param``) and ``.to()`` moves
them. The loss owns the test-time activation in mmlongtail's protocol
(:meth:`get_activation`), so training, the classifier layout and scoring
use one set of parameters, with no second owner to keep in sync (a
classifier layer that held them would need the loss to ask it for every
score). The official training scripts give ``lambda_param`` and
``kappa_param`` no weight decay; the configs do the same
(``paramwise_cfg.custom_keys``).

**The loss.** Binary cross-entropy of ``C`` APA probabilities against the
one-hot targets (background = all zero), computed as GOL computes its
Gumbel BCE (float32, autocast off, ``F.binary_cross_entropy`` on the
probabilities, whose log is clamped at -100 and whose gradient divides by
``max(p (1 - p), 1e-12)``), after clamping the logits to ``logit_clamp``:
GOL's ``[-4, 10]`` by default, so that APA at its Gumbel limit trains as
GOL; ``None`` for the plain form. With ``drop_loss`` the terms are
DropLoss-weighted exactly as in GOL. Test-time scores are the APA of the
unclamped logits, as GOL scores its Gumbel, with ``1 - max_j p_j`` as the
background column.

Further differences from the official ``Unified``:

* the initial ``lambda`` and ``kappa`` are arguments (the official module
  draws them from ``U(0, 1)`` with the global RNG); the default starts at
  GOL's activation (``lambda = 1e-3``, ``kappa = 1``) so that APA+GOL begins
  as GOL;
* ``per_class=True`` learns one ``(lambda, kappa)`` per class (the official
  ``num_parameters > 1`` is per channel of an SE block);
* the activation runs in float32 with autocast off (APA's power underflows
  in half precision).

Not for dense heads: mmdet's RetinaNet/ATSS/FCOS heads score their logits
with a sigmoid themselves and never ask the loss, so the learned APA would
train but not score (the consistency hook refuses it there).
"""
import math
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.datasets.category_stats import StatsSource
from mmlongtail.registry import MODELS
from .frame import ClassificationLoss
from .gumbel_loss import (GUMBEL_LOGIT_MAX, GUMBEL_LOGIT_MIN,
                          reduce_class_losses,
                          drop_loss_weights, rare_positive_ratio)
from .protocol import (ClassifierLayout, ScoringFamily, empty_loss,
                       sigmoid_targets, with_max_background)

#: The official floor of ``lambda`` (``torch.clamp(lambda, min=1e-4)``).
APA_LAMBDA_MIN = 1e-4
#: GOL's clamp of the logits before its activation (the default here).
GOL_LOGIT_CLAMP = (GUMBEL_LOGIT_MIN, GUMBEL_LOGIT_MAX)

#: Why a dense head cannot hold this loss (the consistency hook's message).
DENSE_HEAD_REFUSAL = (
    'mmdet\'s dense heads score their logits with a sigmoid themselves and '
    'never ask the loss for its activation, so the learned APA would be '
    'trained but not used for scores; use it in an R-CNN box head '
    '(Shared2FCBBoxHead)')


def apa_activation(cls_score: Tensor, lambda_param: Tensor,
                   kappa_param: Tensor) -> Tensor:
    """``(lambda e^{-kappa z} + 1)^{-1/lambda}`` element-wise.

    The official evaluation order (``Unified.forward``): ``lambda`` clamped
    at :data:`APA_LAMBDA_MIN`, then ``exp(softplus_{beta=-1}(kappa z - log
    lambda) / lambda)``. Computed in float32 with autocast off; gradients
    reach ``cls_score`` and both parameters.

    Args:
        cls_score (Tensor): ``(N, C)`` logits.
        lambda_param (Tensor): ``(1,)`` or ``(C,)``.
        kappa_param (Tensor): ``(1,)`` or ``(C,)``.

    Returns:
        Tensor: ``(N, C)`` float32 probabilities in ``[0, 1]``.
    """
    with torch.autocast(cls_score.device.type, enabled=False):
        z = cls_score.float()
        lam = torch.clamp(lambda_param.float(), min=APA_LAMBDA_MIN)
        shifted = kappa_param.float() * z - torch.log(lam)
        return torch.exp((1 / lam) *
                         F.softplus(shifted, beta=-1.0, threshold=20.0))


def apa_bce(cls_score: Tensor, target: Tensor, lambda_param: Tensor,
            kappa_param: Tensor,
            logit_clamp: Optional[Sequence[float]] = GOL_LOGIT_CLAMP
            ) -> Tensor:
    """Element-wise BCE of APA probabilities, GOL's way (float32).

    Args:
        cls_score (Tensor): ``(N, C)`` logits.
        target (Tensor): ``(N, C)`` 0/1 targets.
        lambda_param, kappa_param (Tensor): ``(1,)`` or ``(C,)``.
        logit_clamp (tuple, optional): ``(min, max)`` applied to the logits
            before the activation (no gradient outside it); None: none.

    Returns:
        Tensor: ``(N, C)`` float32 loss.
    """
    with torch.autocast(cls_score.device.type, enabled=False):
        z = cls_score.float()
        if logit_clamp is not None:
            z = z.clamp(logit_clamp[0], logit_clamp[1])
        prob = apa_activation(z, lambda_param, kappa_param)
        return F.binary_cross_entropy(prob, target.float(), reduction='none')


def apa_loss(cls_score: Tensor,
             labels: Tensor,
             lambda_param: Tensor,
             kappa_param: Tensor,
             elem_weight: Optional[Tensor] = None,
             weight: Optional[Tensor] = None,
             reduction: str = 'mean',
             avg_factor: Optional[float] = None,
             logit_clamp: Optional[Sequence[float]] = GOL_LOGIT_CLAMP
             ) -> Tensor:
    r"""APA binary cross-entropy of a ``C``-channel classifier, optionally
    DropLoss-weighted.

    .. math::
        L = \frac{1}{N} \sum_i \sum_j w_{ij}\,
            \mathrm{BCE}(\mathrm{APA}(\mathrm{clamp}(z_{ij});
            \lambda, \kappa), y_{ij})

    Args:
        cls_score (Tensor): ``(N, C)`` logits.
        labels (Tensor): ``(N,)`` in ``[0, C]``; ``C`` is background.
        lambda_param, kappa_param (Tensor): ``(1,)`` or ``(C,)``.
        elem_weight (Tensor, optional): ``(N, C)`` DropLoss weights
            :math:`w_{ij}`; all one if None.
        weight (Tensor, optional): ``(N,)`` per-RoI weights.
        reduction (str): ``'none'`` (``(N,)``, summed over classes),
            ``'mean'`` (sum over ``N`` or ``avg_factor``) or ``'sum'``.
        avg_factor (float, optional): Normalizer for ``'mean'``.
        logit_clamp (tuple, optional): See :func:`apa_bce`.

    Returns:
        Tensor: Reduced float32 loss.
    """
    num, num_classes = cls_score.shape
    if num == 0:
        # keep the parameters in the graph (DDP expects their gradients)
        anchor = (lambda_param.sum() + kappa_param.sum()).float() * 0
        return empty_loss(cls_score.float(), reduction, (0, )) + anchor
    target = sigmoid_targets(labels, num_classes)
    loss = apa_bce(cls_score, target, lambda_param, kappa_param, logit_clamp)
    return reduce_class_losses(loss, elem_weight, weight, reduction,
                               avg_factor)


@MODELS.register_module()
class APALoss(ClassificationLoss):
    """APA on the box classifier with BCE, with or without DropLoss
    (APA+GOL): see the module docstring for the formula, where the learned
    parameters live and what is ours.

    ``C`` outputs, background = label ``C`` = all-zero target. DropLoss as
    in :class:`~mmlongtail.models.losses.GumbelLoss` (one ``torch.rand``
    draw per RoI and class). Use GOL's ``fc_cls`` init (weights 0.001, bias
    -2) through the box head's ``init_cfg``, and no weight decay on the
    parameters (``paramwise_cfg=dict(custom_keys={'loss_cls.lambda_param':
    dict(decay_mult=0.), 'loss_cls.kappa_param': dict(decay_mult=0.)})``).

    It also takes the frame's keyword arguments, ``reduction``,
    ``loss_weight``, ``use_sigmoid`` (see
    :class:`~mmlongtail.models.losses.frame.ClassificationLoss`).

    Args:
        num_classes (int): ``C``.
        category_stats (optional): Statistics source; required with
            ``drop_loss``.
        drop_loss (bool): Apply DropLoss (APA+GOL). Defaults to True.
        lambda_ (float): DropLoss's image-frequency threshold. Defaults to
            1.1e-3 (GOL's LVIS v1 setting).
        init_lambda (float): Initial ``lambda``, >= 1e-4. Defaults to 1e-3
            (close to the Gumbel limit; 1.0 with ``init_kappa=1`` starts as
            the sigmoid).
        init_kappa (float): Initial ``kappa``. Defaults to 1.0.
        per_class (bool): One ``(lambda, kappa)`` per class (``(C,)``
            parameters) instead of one pair (``(1,)``, the official
            ``num_parameters=1``). Defaults to False.
        logit_clamp (tuple, optional): ``(min, max)`` of the training
            logits; GOL's ``(-4, 10)`` by default, None for none.
    """

    SIGMOID = True
    #: Read by the consistency hook, which refuses the loss in dense heads.
    DENSE_HEAD_REFUSAL = DENSE_HEAD_REFUSAL
    #: Why a query-based (DETR-family) head cannot hold it.
    QUERY_HEAD_REFUSAL = (
        'its activation has parameters learned in the loss, while mmdet\'s '
        'DETR heads score and match with a sigmoid of the logits; its '
        'dense-head reason applies as well: ' + DENSE_HEAD_REFUSAL)

    def __init__(self,
                 num_classes: int,
                 category_stats: Optional[StatsSource] = None,
                 drop_loss: bool = True,
                 lambda_: float = 1.1e-3,
                 init_lambda: float = 1e-3,
                 init_kappa: float = 1.0,
                 per_class: bool = False,
                 logit_clamp: Optional[Sequence[float]] = GOL_LOGIT_CLAMP,
                 **frame: Any) -> None:
        owner = 'APALoss'
        if drop_loss and category_stats is None:
            raise ValueError(f'{owner}: drop_loss=True needs category_stats '
                             "(e.g. 'lvis_v1' or an annotation file), or "
                             'set drop_loss=False')
        if drop_loss and not lambda_ >= 0:
            raise ValueError(f'{owner}: lambda_ must be >= 0, got '
                             f'{lambda_}')
        if not APA_LAMBDA_MIN <= init_lambda < math.inf:
            raise ValueError(
                f'{owner}: init_lambda must be finite and >= '
                f'{APA_LAMBDA_MIN} (the official floor of lambda), got '
                f'{init_lambda}')
        if not torch.isfinite(torch.tensor(float(init_kappa))):
            raise ValueError(f'{owner}: init_kappa must be finite, got '
                             f'{init_kappa}')
        if logit_clamp is not None:
            if len(logit_clamp) != 2 or not logit_clamp[0] < logit_clamp[1]:
                raise ValueError(
                    f'{owner}: logit_clamp must be (min, max) with min < '
                    f'max, or None; got {logit_clamp!r}')
            logit_clamp = (float(logit_clamp[0]), float(logit_clamp[1]))
        super().__init__(
            num_classes,
            category_stats=category_stats if drop_loss else None,
            **frame)
        self.drop_loss = bool(drop_loss)
        self.lambda_ = float(lambda_)
        self.per_class = bool(per_class)
        self.logit_clamp = logit_clamp
        size = self.num_classes if self.per_class else 1
        self.lambda_param = nn.Parameter(
            torch.full((size, ), float(init_lambda)))
        self.kappa_param = nn.Parameter(
            torch.full((size, ), float(init_kappa)))
        if not self.drop_loss:
            self.rare_mask = None
            return
        rare = torch.from_numpy(self.stats.image_frequency < self.lambda_)
        # derived from the statistics, not trained: not saved in checkpoints
        self.register_buffer('rare_mask', rare, persistent=False)
        MMLogger.get_current_instance().info(
            f'APALoss with DropLoss: {int(rare.sum())} of '
            f'{self.num_classes} classes have image frequency < '
            f'{self.lambda_} (from {self.stats.source})')

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, drop_loss='
                f'{self.drop_loss}, per_class={self.per_class}, '
                f'logit_clamp={self.logit_clamp}')

    def _layout(self, num_classes: int) -> ClassifierLayout:
        return ClassifierLayout.classes_first(
            'APALoss', num_classes,
            scoring='(lambda exp(-kappa z) + 1)^(-1/lambda) per class, '
            'lambda and kappa learned in the loss; background column '
            '1 - max_j p_j', family=ScoringFamily.APA)

    def activation_probs(self, cls_score: Tensor) -> Tensor:
        """``(N, C)`` logits -> ``(N, C)`` float32 APA probabilities with
        the loss's current parameters (unclamped logits)."""
        return apa_activation(cls_score, self.lambda_param, self.kappa_param)

    def _activation(self, cls_score: Tensor) -> Tensor:
        return with_max_background(
            self.activation_probs(cls_score).to(cls_score.dtype))

    def drop_weights(self, labels: Tensor,
                     label_weights: Optional[Tensor]) -> Tensor:
        """DropLoss's ``(N, C)`` weights for this batch (draws from torch's
        RNG), as :meth:`GumbelLoss.drop_weights`."""
        valid = None if label_weights is None else label_weights > 0
        ratio = rare_positive_ratio(labels, self.rare_mask, valid)
        rand = torch.rand((labels.numel(), self.num_classes),
                          device=labels.device)
        return drop_loss_weights(labels, self.rare_mask, ratio, rand)

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: Optional[float],
              reduction: str) -> Tensor:
        """``(N, C)`` logits -> float32 loss (``'none'``: ``(N,)``)."""
        elem_weight = None
        if self.drop_loss and cls_score.size(0) > 0:
            elem_weight = self.drop_weights(labels, label_weights)
        return apa_loss(cls_score, labels, self.lambda_param,
                        self.kappa_param, elem_weight, label_weights,
                        reduction, avg_factor, self.logit_clamp)
