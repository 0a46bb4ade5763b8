"""Class-balanced weights (Cui et al., "Class-balanced loss based on
effective number of samples", CVPR 2019).

The effective number of samples of a class with ``n`` samples is
``(1 - beta^n) / (1 - beta)``; the class-balanced loss weighs each sample of
class ``y`` by the inverse, ``(1 - beta) / (1 - beta^n_y)``, normalized (as
the official code, richardaecn/class-balanced-loss, does) so that the ``C``
class weights sum to ``C``. The weight is per sample, that of its
ground-truth class, for softmax, sigmoid and focal losses alike (paper,
Sec. 4), so it is given to any loss as a per-RoI weight.

:class:`ClassBalancedLoss` wraps any classification loss (mmdet's
``CrossEntropyLoss``, ``mmlongtail.FocalLoss``, the sigmoid losses ...) and
multiplies its ``label_weights`` by these weights, so no new loss class is
needed per combination. Background RoIs (label ``C``), which the paper does
not have, get ``bg_weight`` (default 1, the mean class weight).
"""
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.losses.accuracy import accuracy
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.datasets.category_stats import StatsSource
from mmlongtail.registry import MODELS
from .frame import ClassificationLoss
from .protocol import (ClassifierLayout, ClassifierProtocol,
                       check_label_weights, check_labels, host_is_dense_head,
                       host_kind, loss_layout, unwatch_host, watch_host)


def class_balanced_weights(counts: np.ndarray, beta: float) -> np.ndarray:
    """``(C,)`` float64 ``(1 - beta) / (1 - beta^n_c)``, scaled to sum to C.

    Args:
        counts (np.ndarray): ``(C,)`` samples per class.
        beta (float): In ``[0, 1)``; 0 gives equal weights, ``beta -> 1``
            inverse-frequency weights. Cui et al. use 0.9 - 0.9999.

    Raises:
        ValueError: ``beta`` outside ``[0, 1)`` or a class without samples
            (its weight would be infinite).
    """
    if not 0 <= beta < 1:
        raise ValueError(f'class-balanced weights: beta must lie in [0, 1), '
                         f'got {beta}')
    n = np.asarray(counts, dtype=np.float64)
    if (n <= 0).any():
        empty = np.flatnonzero(n <= 0)[:10].tolist()
        raise ValueError(
            f'class-balanced weights: classes {empty} have no training '
            'sample; their weight would be infinite')
    # 1 - beta^n as -expm1(n log beta): exact also for beta close to 1
    effective = -np.expm1(n * np.log(beta)) if beta > 0 else np.ones_like(n)
    w = (1 - beta) / effective
    return w / w.sum() * len(n)


def roi_class_weights(labels: Tensor, class_weight: Tensor,
                      bg_weight: float) -> Tensor:
    """``(N,)`` weight of each RoI: its class's weight, ``bg_weight`` for
    background (label ``C``)."""
    table = torch.cat([class_weight, class_weight.new_full((1, ), bg_weight)])
    return table[labels]


#: Which count is a class's number of samples (CategoryStats attribute).
_COUNTS = {'image': 'image_count', 'instance': 'instance_count'}


@MODELS.register_module()
class ClassBalancedLoss(ClassificationLoss):
    """Class-balanced weights (Cui et al., CVPR 2019) for any classification
    loss.

    ``forward`` gives the wrapped loss ``label_weights * w[labels]``, with
    ``w`` from :func:`class_balanced_weights` and ``bg_weight`` for
    background, and passes ``avg_factor`` and ``reduction_override`` on. The
    classifier protocol (channels, test-time scores, accuracy) is the wrapped
    loss's: a loss with its own protocol keeps it, any other (mmdet's
    ``CrossEntropyLoss``) gets mmdet's ``BBoxHead`` default of ``C + 1``
    rows scored with softmax.

    Example::

        loss_cls=dict(
            type='mmlongtail.ClassBalancedLoss',
            num_classes=1203, category_stats='lvis_v1', beta=0.999,
            loss=dict(type='mmlongtail.FocalLoss', num_classes=1203))

    Args:
        loss (dict): Config of the wrapped loss (built in mmlongtail's
            registry, which falls back to mmdet's).
        num_classes (int): ``C``. Must match the category statistics.
        category_stats: ``'lvis_v1'``, a path to a stats JSON or an LVIS/COCO
            annotation file, a dict, or a ``CategoryStats``.
        beta (float): In ``[0, 1)``. Defaults to 0.999.
        count (str): ``'instance'`` (training instances per class, the
            samples an RoI classifier sees) or ``'image'``. Defaults to
            ``'instance'``.
        bg_weight (float): Weight of background RoIs. Defaults to 1.0.
        loss_weight (float): Multiplier on top of the wrapped loss's own.
            Defaults to 1.0.
    """

    def __init__(self,
                 loss: dict,
                 num_classes: int,
                 category_stats: StatsSource,
                 beta: float = 0.999,
                 count: str = 'instance',
                 bg_weight: float = 1.0,
                 loss_weight: float = 1.0) -> None:
        owner = 'ClassBalancedLoss'
        if count not in _COUNTS:
            raise ValueError(f"{owner}: count must be 'instance' or 'image', "
                             f'got {count!r}')
        if not bg_weight >= 0:
            raise ValueError(f'{owner}: bg_weight must be >= 0, got '
                             f'{bg_weight}')
        if not isinstance(loss, dict) or 'type' not in loss:
            raise ValueError(f'{owner}: loss must be the config dict of the '
                             f'wrapped loss, got {loss!r}')
        # reduction None: reduction_override goes on to the wrapped loss
        super().__init__(num_classes, None, loss_weight,
                         category_stats=category_stats)
        stats = self.stats
        self.beta = float(beta)
        self.count = count
        self.bg_weight = float(bg_weight)
        weights = class_balanced_weights(
            getattr(stats, _COUNTS[count]), self.beta)
        self.loss = MODELS.build(loss)
        # registered under this wrapper, never by a head: the BBoxHead
        # protocol stays, and the wrapper answers for it (below)
        unwatch_host(self.loss)
        # the wrapped loss must lay out C classes too (raises otherwise)
        loss_layout(self.loss, self.num_classes)
        self.use_sigmoid = getattr(self.loss, 'use_sigmoid', False)
        # refuse a dense head when one registers the wrapper (below)
        watch_host(self)
        # derived from the statistics, not trained: not saved in checkpoints
        self.register_buffer(
            'class_weight', torch.from_numpy(weights).float(),
            persistent=False)
        MMLogger.get_current_instance().info(
            f'ClassBalancedLoss around {type(self.loss).__name__}: beta '
            f'{self.beta} on {count} counts (from {stats.source}), weights '
            f'{weights.min():.3g} .. {weights.max():.3g}, background '
            f'{self.bg_weight}')

    def _layout(self, num_classes: int) -> ClassifierLayout:
        return loss_layout(self.loss, num_classes)

    def host_registered(self, host: torch.nn.Module) -> bool:
        """Refuse a dense head (RetinaNet, ATSS, FCOS): the weights are per
        RoI of an R-CNN ``BBoxHead``, and mmdet's dense heads size their
        classifier from the config's ``use_sigmoid``, which this wrapper's
        config does not carry, so the wrapped loss would get ``C + 1``
        columns. A query-based head (DETR family) reads ``use_sigmoid``
        from the built wrapper (the wrapped loss's): there the weights are
        per query and the wrapped loss takes the query-head mode (or the
        wrapper is refused with its reason). Other modules are accepted.

        Raises:
            ValueError: ``host`` is a dense head.
        """
        if host_kind(host) == 'query':
            reason = self.query_head_refusal(host)
            if reason is None:  # the wrapped loss takes the query layout
                self.loss.host_registered(host)
            self.enter_query_head(host)
            return True
        dense = host_is_dense_head(host)
        if dense:
            raise ValueError(
                f'ClassBalancedLoss is the loss_cls of {type(host).__name__}, '
                'a dense head: it weights the RoIs of an R-CNN BBoxHead. In '
                'a dense head use the long-tail loss itself, e.g. '
                "dict(type='mmlongtail.EqualizedFocalLoss', num_classes=C)")
        return dense is not None

    def query_head_refusal(self, host: torch.nn.Module) -> Optional[str]:
        """The wrapped loss's reason, if it has one: in a query head the
        weights are per query (matched queries weighted by their class,
        unmatched ones by ``bg_weight``)."""
        if isinstance(self.loss, ClassifierProtocol):
            reason = self.loss.query_head_refusal(host)
        else:
            reason = ('it is not an mmlongtail loss, which a query head '
                      'needs for its per-class probabilities (wrap '
                      "dict(type='mmlongtail.FocalLoss') instead)")
        if reason:
            return (f'it wraps {type(self.loss).__name__}, and {reason}')
        return None

    def class_probabilities(self, cls_score: Tensor) -> Tensor:
        """The wrapped loss's per-class probabilities."""
        return self.loss.class_probabilities(cls_score)

    def _activation(self, cls_score: Tensor) -> Tensor:
        if getattr(self.loss, 'custom_activation', False):
            return self.loss.get_activation(cls_score)
        return F.softmax(cls_score, dim=-1)

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """The wrapped loss's accuracy (mmdet's top-1 on the logits for a
        loss without the protocol)."""
        if getattr(self.loss, 'custom_accuracy', False):
            return self.loss.get_accuracy(cls_score, labels)
        return dict(acc=accuracy(cls_score, labels))

    def roi_weights(self, labels: Tensor) -> Tensor:
        """``(N,)`` class-balanced weight of each RoI."""
        return roi_class_weights(labels, self.class_weight, self.bg_weight)

    def check_inputs(self, cls_score: Tensor, labels: Tensor,
                     label_weights: Optional[Tensor]) -> None:
        """Labels and ``label_weights``; the wrapped loss checks
        ``cls_score``."""
        owner = 'ClassBalancedLoss'
        check_labels(labels, cls_score.size(0), self.num_classes, owner)
        check_label_weights(label_weights, cls_score.size(0), owner)

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: Optional[float],
              reduction: Optional[str]) -> Tensor:
        """The wrapped loss (logits as it takes them, its own output shape)
        with ``label_weights * w[labels]``; ``avg_factor`` and the
        reduction override are passed on."""
        weight = self.roi_weights(labels).to(cls_score.dtype)
        if label_weights is not None:
            weight = weight * label_weights
        return self.loss(
            cls_score,
            labels,
            weight,
            avg_factor=avg_factor,
            reduction_override=reduction)
