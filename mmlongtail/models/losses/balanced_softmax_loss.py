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

Background (softmax variant): the annotations give no frequency for
background, yet in a detector it is the most frequent label. It gets the
count ``fg_bg_ratio * sum(n)`` (default 6.3313, the ratio of background to
foreground that the ECM authors measured on Mask R-CNN's sampled RoIs), so
its logit is adjusted like any class's. Softmax is invariant to a common
shift, so only the ratios ``pi_c / pi_bg = n_c / (fg_bg_ratio * sum(n))``
matter.
"""
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.datasets.category_stats import StatsSource
from mmlongtail.registry import MODELS
from .frame import ClassificationLoss
from .protocol import (SOFTMAX_SCORING, ClassifierLayout, ClassifierProtocol,
                       ScoringFamily, SigmoidClassifierProtocol, empty_loss,
                       sigmoid_targets)
from .sigmoid_kernels import bce_terms, compute_dtype, lean_bce_loss

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
    target = sigmoid_targets(labels, num_classes)
    target = target.to(cls_score.dtype)
    fg = (labels < num_classes).to(cls_score.dtype)[:, None]
    logits = cls_score - fg * (tau * log_odds.to(cls_score.dtype))[None, :]
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction='none')
    return weight_reduce_loss(loss.sum(dim=1), weight, reduction, avg_factor)


#: Which count gives a class's frequency (CategoryStats attribute).
_COUNTS = {'image': 'image_count', 'instance': 'instance_count'}


@MODELS.register_module()
class BalancedSoftmaxLoss(SigmoidClassifierProtocol, ClassificationLoss):
    """Balanced softmax / logit-adjusted cross-entropy, or BALMS's sigmoid
    variant (``use_sigmoid=True``).

    Softmax variant: ``C + 1`` outputs, background last, trained with
    ``CE(z + tau log pi, y)`` (:func:`softmax_log_prior`); at test time the
    head scores with plain softmax, i.e. the balanced posterior. Exact to the
    formula (Ren et al., Eq. 4; Menon et al., Eq. 10).

    Sigmoid variant: ``C`` outputs, equal to BALMS's
    ``BalancedSoftmaxFastRCNNOutputs`` (cunjunyu/BalancedMetaSoftmax-
    InstanceSeg) for ``tau = 1``, without its meta re-weighter. Differences:
    ``label_weights``, ``avg_factor`` and ``reduction_override`` are honoured
    (BALMS ignores them); the logits are not modified in place; test-time
    scores have ``1 - max_j p_j`` as background column instead of BALMS's
    dummy 0 (class scores equal); frequencies come from category statistics.

    It also takes the frame's keyword arguments, ``reduction``, ``loss_weight``
    (see :class:`~mmlongtail.models.losses.frame.ClassificationLoss`).

    Args:
        num_classes (int): ``C``. Must match the category statistics.
        category_stats: ``'lvis_v1'``, a path to a stats JSON or an LVIS/COCO
            annotation file, a dict, or a ``CategoryStats``.
        use_sigmoid (bool): BALMS's sigmoid variant. Defaults to False.
        tau (float): Scale of the adjustment; 1 is balanced softmax, 0 plain
            cross-entropy. Defaults to 1.0.
        fg_bg_ratio (float): Softmax variant: background count per
            foreground count. Defaults to 6.3313.
        count (str): Softmax variant: ``'image'`` (training images per
            class, LVIS's frequency) or ``'instance'``. Defaults to
            ``'image'``. The sigmoid variant always uses image frequencies.
        lean (bool): The sigmoid variant in a dense head: compute it with
            :func:`~mmlongtail.models.losses.sigmoid_kernels.lean_bce_loss`
            (one ``(N, C)`` temporary, the closed-form gradient; float32 for
            lower-precision logits). False, or elsewhere: the autograd
            functions above. Defaults to True.
    """

    #: either kind: ``use_sigmoid`` picks the variant
    SIGMOID = None

    def __init__(self,
                 num_classes: int,
                 category_stats: StatsSource,
                 use_sigmoid: bool = False,
                 tau: float = 1.0,
                 fg_bg_ratio: float = DEFAULT_FG_BG_RATIO,
                 count: str = 'image',
                 lean: bool = True,
                 **frame: Any) -> None:
        owner = 'BalancedSoftmaxLoss'
        if count not in _COUNTS:
            raise ValueError(f"{owner}: count must be 'image' or 'instance', "
                             f'got {count!r}')
        if use_sigmoid and count != 'image':
            raise ValueError(f'{owner}: the sigmoid variant uses image '
                             f"frequencies; count must be 'image', got "
                             f'{count!r}')
        super().__init__(num_classes, use_sigmoid=use_sigmoid,
                         category_stats=category_stats, **frame)
        stats = self.stats
        self.tau = float(tau)
        self.lean = bool(lean)
        self.fg_bg_ratio = float(fg_bg_ratio)
        self.count = count
        if self.use_sigmoid:
            adjust = sigmoid_log_odds(stats.image_frequency)
        else:
            adjust = softmax_log_prior(
                getattr(stats, _COUNTS[count]), self.fg_bg_ratio)
        # derived from the statistics, not trained: not saved in checkpoints
        self.register_buffer(
            'adjustment', torch.from_numpy(adjust).float(), persistent=False)
        variant = 'sigmoid (BALMS)' if self.use_sigmoid else \
            f'softmax, {count} counts, fg_bg_ratio {self.fg_bg_ratio}'
        MMLogger.get_current_instance().info(
            f'BalancedSoftmaxLoss: {variant}, tau {self.tau} (from '
            f'{stats.source})')

    def _layout(self, num_classes: int) -> ClassifierLayout:
        if self.use_sigmoid:
            return super()._layout(num_classes)
        return ClassifierLayout.classes_first(
            'BalancedSoftmaxLoss', num_classes, ('background', ),
            scoring=SOFTMAX_SCORING, family=ScoringFamily.SOFTMAX)

    def _activation(self, cls_score: Tensor) -> Tensor:
        if self.use_sigmoid:
            return super()._activation(cls_score)
        return F.softmax(cls_score, dim=-1)

    def class_probabilities(self, cls_score: Tensor) -> Tensor:
        """Sigmoid variant: the sigmoid of each of the ``C`` logits. The
        softmax variant (``C + 1`` rows) has none: refused."""
        if not self.use_sigmoid:
            return ClassifierProtocol.class_probabilities(self, cls_score)
        return cls_score.sigmoid()

    def query_head_refusal(self, host: torch.nn.Module) -> Optional[str]:
        """The softmax variant cannot sit in a query head; the sigmoid
        variant (BALMS) can."""
        if not self.use_sigmoid:
            return ('its softmax variant lays out C + 1 rows with a '
                    'background row; set use_sigmoid=True for BALMS\'s '
                    'sigmoid variant, which a query head holds')
        return None

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: Optional[float],
              reduction: str) -> Tensor:
        """``(N, C + 1)`` logits (softmax variant) or ``(N, C)`` (sigmoid
        variant); ``'none'`` gives ``(N,)``."""
        if self.lean and self.use_sigmoid and self.dense_head and \
                cls_score.size(0) > 0:
            adjustment = self.adjustment.to(compute_dtype(cls_score))
            terms = bce_terms(cls_score, fg_shift=self.tau * adjustment)
            return lean_bce_loss(cls_score, labels, label_weights, terms,
                                 reduction, avg_factor)
        fn = balanced_sigmoid_loss if self.use_sigmoid else \
            balanced_softmax_loss
        return fn(cls_score, labels, self.adjustment, self.tau,
                  label_weights, reduction, avg_factor)
