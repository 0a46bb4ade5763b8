"""LDAM loss with deferred re-weighting (Cao et al., "Learning Imbalanced
Datasets with Label-Distribution-Aware Margin Loss", NeurIPS 2019,
arXiv:1906.07413; official code kaidic/LDAM-DRW).

**LDAM.** Class ``j`` with ``n_j`` training samples gets the margin

.. math::
    \\Delta_j = m_{max} \\frac{n_j^{-1/4}}{\\max_k n_k^{-1/4}},

so the rarest class gets ``m_max`` (0.5 in the official code) and the others
less. The softmax cross-entropy is taken on cosine logits ``x`` (a normalized
linear classifier) with the true class's margin subtracted, then scaled by
``s`` (30 in the official code): ``CE(s (x - Delta_y e_y), y)``.

**DRW** (deferred re-weighting). Plain LDAM until epoch ``drw_epoch``, then
every sample of class ``y`` is weighted by the class-balanced weight of Cui et
al. (CVPR 2019) with ``beta = 0.9999``, normalized so that the ``C`` class
weights sum to ``C`` (:func:`~.class_balanced_loss.class_balanced_weights`,
the one owner of that formula). The official CIFAR code switches at epoch 160
of 200 (0-based: epochs 0-159 unweighted), where its learning rate first
drops. :class:`mmlongtail.DRWHook` tells the loss the epoch.
"""
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.datasets.category_stats import StatsSource
from mmlongtail.registry import MODELS
from .class_balanced_loss import class_balanced_weights
from .frame import ClassificationLoss
from .protocol import (SOFTMAX_SCORING, ClassifierLayout, ScoringFamily,
                       empty_loss, host_is_dense_head, host_kind, watch_host)

#: Which count is a class's number of samples (CategoryStats attribute).
COUNTS = {'instance': 'instance_count', 'image': 'image_count'}

#: The official code's values (kaidic/LDAM-DRW, cifar_train.py).
DEFAULT_MAX_MARGIN = 0.5
DEFAULT_SCALE = 30.0
DEFAULT_DRW_BETA = 0.9999


def ldam_margins(counts: np.ndarray, max_margin: float) -> np.ndarray:
    """``(C,)`` float64 margins ``m_max n_j^(-1/4) / max_k n_k^(-1/4)``.

    Args:
        counts (np.ndarray): ``(C,)`` samples per class.
        max_margin (float): The margin of the rarest class, > 0.

    Raises:
        ValueError: ``max_margin <= 0`` or a class without samples (its
            margin would be infinite).
    """
    if not max_margin > 0:
        raise ValueError(f'LDAMLoss: max_margin must be > 0, got '
                         f'{max_margin}')
    n = np.asarray(counts, dtype=np.float64)
    if (n <= 0).any():
        empty = np.flatnonzero(n <= 0)[:10].tolist()
        raise ValueError(
            f'LDAMLoss: classes {empty} have no training sample; their '
            'margin n^(-1/4) would be infinite')
    m = n**-0.25
    return m * (max_margin / m.max())


def ldam_loss(cls_score: Tensor,
              labels: Tensor,
              margin: Tensor,
              scale: float,
              weight: Optional[Tensor] = None,
              reduction: str = 'mean',
              avg_factor: Optional[float] = None) -> Tensor:
    r"""LDAM cross-entropy of already scaled logits.

    .. math::
        L_i = -\log \frac{e^{z_{iy} - s\Delta_y}}
                         {e^{z_{iy} - s\Delta_y} + \sum_{j \ne y} e^{z_{ij}}},
        \qquad z = s x,

    which is the official ``CE(s (x - Delta_y e_y), y)`` of the cosine
    logits ``x``.

    Args:
        cls_score (Tensor): ``(N, C + 1)`` logits ``s x`` (a
            ``NormedLinear`` with ``temperature=s``), background last.
        labels (Tensor): ``(N,)`` in ``[0, C]``.
        margin (Tensor): ``(C + 1,)`` margins in cosine units; the
            background's is 0.
        scale (float): ``s``; the logit margin is ``s Delta_y``.
        weight (Tensor, optional): ``(N,)`` per-RoI weights (DRW's class
            weights times ``label_weights``).
        reduction (str): ``'none'`` (``(N,)``), ``'mean'`` or ``'sum'``.
        avg_factor (float, optional): Normalizer for ``'mean'``.

    Returns:
        Tensor: Reduced loss.
    """
    if cls_score.size(0) == 0:
        return empty_loss(cls_score, reduction, (0, ))
    shift = (scale * margin.to(cls_score.dtype))[labels]
    logits = cls_score.scatter_add(1, labels[:, None], -shift[:, None])
    loss = F.cross_entropy(logits, labels, reduction='none')
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@MODELS.register_module()
class LDAMLoss(ClassificationLoss):
    """LDAM loss (Cao et al., NeurIPS 2019) with optional deferred
    re-weighting (DRW), for the softmax RoI classifier of an R-CNN
    ``BBoxHead``.

    ``C + 1`` outputs, background last, scored with plain softmax at test
    time (no margin). Class ``y``'s margin ``Delta_y`` (:func:`ldam_margins`)
    is subtracted from the true-class logit, in units of the cosine, and the
    cross-entropy taken (:func:`ldam_loss`). With ``drw_epoch`` set, from
    that (0-based) epoch on every RoI of class ``y`` also weighs ``w_y``,
    the class-balanced weight (``drw_beta``, normalized to sum to ``C``);
    background RoIs weigh ``drw_bg_weight``. Register
    ``dict(type='mmlongtail.DRWHook')`` in ``custom_hooks``: it tells the
    loss each epoch (:meth:`set_epoch`), from the runner's epoch, so every
    rank agrees and a resumed run switches exactly where an uninterrupted one
    does. The active weights and the epoch are buffers (saved in
    checkpoints).

    Classifier: the official code trains LDAM on a normalized (cosine)
    linear classifier without bias and multiplies by ``s``; here the scale
    sits in the classifier, ``cls_predictor_cfg=dict(type=
    'mmlongtail.NormedLinear', temperature=s, bias=False)``, and the loss
    subtracts ``s Delta_y``: the same loss, but the head's logits are the
    ones softmax is taken of, so test-time scores, the score calibration of
    :mod:`mmlongtail.models.scorers` and analysis read them as those of any
    softmax classifier. :class:`~mmlongtail.engine.LongTailConsistencyHook`
    checks that the classifier's temperature equals ``scale``.

    Background is exempt from the margin (``Delta_bg = 0``): it has no sample
    count comparable to the classes (every unmatched proposal is one; its
    count dwarfs every class's), so ``n^(-1/4)`` would give it almost no
    margin anyway, and any margin on it would shift foreground against
    background for every class alike, i.e. act as a global objectness
    threshold rather than a per-class rebalancing.

    Where it differs from the official code (besides background and where
    the scale sits): DRW's weighted mean divides by ``avg_factor`` (the
    number of RoIs, as mmdet's ``class_weight`` and
    :class:`~mmlongtail.ClassBalancedLoss` do), where PyTorch's weighted
    ``cross_entropy`` of the official code divides by the batch's sum of
    weights; ``label_weights`` and ``reduction_override`` are honoured;
    counts come from category statistics (instances by default: the samples
    an RoI classifier sees).

    It also takes the frame's keyword arguments, ``reduction``,
    ``loss_weight`` (see
    :class:`~mmlongtail.models.losses.frame.ClassificationLoss`).

    Example::

        bbox_head=dict(
            cls_predictor_cfg=dict(type='mmlongtail.NormedLinear',
                                   temperature=30, bias=False),
            loss_cls=dict(type='mmlongtail.LDAMLoss', num_classes=1203,
                          category_stats='lvis_v1', drw_epoch=10))
        custom_hooks = [dict(type='mmlongtail.LongTailConsistencyHook'),
                        dict(type='mmlongtail.DRWHook')]

    Args:
        num_classes (int): ``C``. Must match the category statistics.
        category_stats: ``'lvis_v1'``, a path to a stats JSON or an LVIS/COCO
            annotation file, a dict, or a ``CategoryStats``.
        max_margin (float): ``m_max``, the rarest class's margin in cosine
            units. Defaults to 0.5 (official).
        scale (float): ``s``, the classifier's temperature. Defaults to 30
            (official).
        count (str): ``'instance'`` (training instances per class) or
            ``'image'``, for the margins and the DRW weights. Defaults to
            ``'instance'``.
        drw_epoch (int, optional): First (0-based) epoch with class-balanced
            weights; None: no re-weighting (LDAM alone). Defaults to None.
        drw_beta (float): ``beta`` of the class-balanced weights. Defaults
            to 0.9999 (official).
        drw_bg_weight (float): Weight of background RoIs once re-weighting
            is on (the mean class weight is 1). Defaults to 1.0.
    """
    SIGMOID = False

    def __init__(self,
                 num_classes: int,
                 category_stats: StatsSource,
                 max_margin: float = DEFAULT_MAX_MARGIN,
                 scale: float = DEFAULT_SCALE,
                 count: str = 'instance',
                 drw_epoch: Optional[int] = None,
                 drw_beta: float = DEFAULT_DRW_BETA,
                 drw_bg_weight: float = 1.0,
                 **frame: Any) -> None:
        owner = 'LDAMLoss'
        if frame.get('use_sigmoid'):
            raise ValueError(
                f'{owner} is a softmax over C + 1 RoI classes (its margin '
                'acts on the true class against all the others) and has no '
                'sigmoid form: drop use_sigmoid; for a sigmoid classifier use '
                "e.g. dict(type='mmlongtail.EQLv2Loss', num_classes=C)")
        if count not in COUNTS:
            raise ValueError(f"{owner}: count must be 'instance' or 'image', "
                             f'got {count!r}')
        if not scale > 0:
            raise ValueError(f'{owner}: scale must be > 0, got {scale}')
        if drw_epoch is not None and (isinstance(drw_epoch, bool) or
                                      not isinstance(drw_epoch, int)
                                      or drw_epoch < 0):
            raise ValueError(f'{owner}: drw_epoch must be None or an int >= '
                             f'0 (the first re-weighted epoch, 0-based), got '
                             f'{drw_epoch!r}')
        if not drw_bg_weight >= 0:
            raise ValueError(f'{owner}: drw_bg_weight must be >= 0, got '
                             f'{drw_bg_weight}')
        super().__init__(num_classes, category_stats=category_stats,
                         **frame)
        stats = self.stats
        self.max_margin = float(max_margin)
        self.scale = float(scale)
        self.count = count
        self.drw_epoch = drw_epoch
        self.drw_beta = float(drw_beta)
        self.drw_bg_weight = float(drw_bg_weight)
        self._counts = getattr(stats, COUNTS[count]).copy()
        margins = np.append(ldam_margins(self._counts, self.max_margin), 0.0)
        # derived from the statistics, not trained: not saved in checkpoints
        self.register_buffer(
            'margin', torch.from_numpy(margins).float(), persistent=False)
        # the weights of the current epoch and that epoch (-1: not told):
        # saved in checkpoints, set again by DRWHook every epoch
        self.register_buffer('class_weight',
                             self.drw_weights(False).float())
        self.register_buffer('epoch', torch.tensor(-1, dtype=torch.int64))
        #: whether set_epoch was called in this process (not a buffer: a
        #: resumed run must be told again)
        self._epoch_told = False
        if drw_epoch is not None:  # fail at build, not at the switch
            self.drw_weights(True)
        # refuse a dense head when one registers the loss (below)
        watch_host(self)
        drw = 'off' if drw_epoch is None else \
            f'from epoch {drw_epoch} (0-based), beta {self.drw_beta}'
        MMLogger.get_current_instance().info(
            f'LDAMLoss: {count} counts (from {stats.source}), margins '
            f'{margins[:-1].min():.3g} .. {margins[:-1].max():.3g}, scale '
            f'{self.scale}, DRW {drw}')

    def drw_weights(self, active: bool) -> Tensor:
        """``(C + 1,)`` float64 weights of each label: all 1 before the switch
        (the official code's ``beta = 0``), the class-balanced weights and
        ``drw_bg_weight`` for background after it."""
        if not active:
            weights = class_balanced_weights(self._counts, 0.0)
            return torch.from_numpy(np.append(weights, 1.0))
        weights = class_balanced_weights(self._counts, self.drw_beta)
        return torch.from_numpy(np.append(weights, self.drw_bg_weight))

    def drw_active(self, epoch: int) -> bool:
        """Whether (0-based) ``epoch`` is re-weighted."""
        return self.drw_epoch is not None and epoch >= self.drw_epoch

    @torch.no_grad()
    def set_epoch(self, epoch: int) -> None:
        """Set the (0-based) epoch about to be trained; the class weights
        follow it (called by :class:`mmlongtail.DRWHook`)."""
        self.class_weight.copy_(self.drw_weights(self.drw_active(epoch)))
        self.epoch.fill_(int(epoch))
        self._epoch_told = True

    def host_registered(self, host: nn.Module) -> bool:
        """Refuse a dense head: the margins and weights act on the softmax
        of an R-CNN ``BBoxHead``'s RoIs.

        Raises:
            ValueError: ``host`` is a dense head.
        """
        if host_kind(host) == 'query':  # refused there, naming the fix
            self.enter_query_head(host)
        dense = host_is_dense_head(host)
        if dense:
            raise ValueError(
                f'LDAMLoss is the loss_cls of {type(host).__name__}, a dense '
                'head: it is a softmax over the C + 1 RoI classes of an '
                'R-CNN BBoxHead (use it there, with a NormedLinear '
                'classifier). In a dense head use '
                "dict(type='mmlongtail.EqualizedFocalLoss', num_classes=C)")
        return dense is not None

    def _layout(self, num_classes: int) -> ClassifierLayout:
        return ClassifierLayout.classes_first(
            'LDAMLoss', num_classes, ('background', ),
            scoring=SOFTMAX_SCORING, family=ScoringFamily.SOFTMAX)

    def _activation(self, cls_score: Tensor) -> Tensor:
        return F.softmax(cls_score, dim=-1)

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: Optional[float],
              reduction: str) -> Tensor:
        """``(N, C + 1)`` logits; ``'none'`` gives ``(N,)``.

        Raises:
            RuntimeError: Training with ``drw_epoch`` set, but no epoch was
                set in this process (no ``DRWHook``).
        """
        if self.drw_epoch is not None and self.training and \
                not self._epoch_told:
            raise RuntimeError(
                f'LDAMLoss has drw_epoch={self.drw_epoch} but was never told '
                'the epoch, so it cannot switch its re-weighting on: add '
                "dict(type='mmlongtail.DRWHook') to custom_hooks (or call "
                'set_epoch(epoch) before each epoch)')
        weight = self.class_weight.to(cls_score.dtype)[labels]
        if label_weights is not None:
            weight = weight * label_weights
        return ldam_loss(cls_score, labels, self.margin, self.scale, weight,
                         reduction, avg_factor)
