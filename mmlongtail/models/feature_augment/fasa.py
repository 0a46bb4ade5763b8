"""FASA: Feature Augmentation and Sampling Adaptation (Zang, Huang and Loy,
"FASA: Feature Augmentation and Sampling Adaptation for Long-Tailed Instance
Segmentation", ICCV 2021, arXiv:2102.12867; official code
https://github.com/yuhangzang/FASA, ``fasa/fasa_bbox_head.py``)."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.datasets.category_stats import StatsSource, load_category_stats
from mmlongtail.registry import MODELS
from mmlongtail.utils.dist import all_reduce_sum_
from .affinity_propagation import affinity_propagation
from .base import FeatureAugmentation
from .statistics import ClassFeatureStatistics


def fasa_initial_rates(instance_count: Tensor,
                       power: float = 1.0,
                       scale: float = 1.0) -> Tensor:
    """FASA's initial sampling rate of each class.

    ``p_c = clamp(scale * (q_c / sum_k q_k) ** power, 0, 1)`` with
    ``q_c = 1 / n_c`` and ``n_c`` the class's training instance count (the
    official ``instance_prob``).

    Args:
        instance_count (Tensor): ``(C,)`` training instances per class,
            all positive.
        power (float): ``instance_prob_power``.
        scale (float): ``instance_prob_scale``.

    Returns:
        Tensor: ``(C,)`` float32 rates in ``[0, 1]``.
    """
    count = instance_count.to(torch.float64)
    if bool((count <= 0).any()):
        bad = (count <= 0).nonzero().flatten()[:10].tolist()
        raise ValueError('FASA needs every class to have training instances '
                         f'(its rate is 1 / count); classes {bad} have none')
    q = 1 / count
    return (scale * (q / q.sum()).pow(power)).clamp(0, 1).float()


def fasa_adapt_rates(rates: Tensor, loss_prev: Tensor, loss_now: Tensor,
                     groups: Tensor, up: float = 1.1,
                     down: float = 0.9) -> Tensor:
    """FASA's sampling adaptation (Sec. 3.3): a group of classes whose
    summed validation-loss share rose since the previous evaluation gets
    its rates multiplied by ``down``; one whose share fell, by ``up``;
    rates stay in ``[0, 1]``.

    Args:
        rates (Tensor): ``(C,)`` current rates.
        loss_prev (Tensor): ``(C,)`` previous per-class loss shares.
        loss_now (Tensor): ``(C,)`` current per-class loss shares.
        groups (Tensor): ``(C,)`` int64 group of each class.
        up (float): ``dynamic_up``.
        down (float): ``dynamic_down``.

    Returns:
        Tensor: ``(C,)`` new rates.
    """
    num_groups = int(groups.max()) + 1 if groups.numel() else 0
    delta = (loss_now - loss_prev).to(torch.float64)
    group_delta = delta.new_zeros(num_groups).index_add_(0, groups, delta)
    d = group_delta[groups]
    factor = torch.where(d > 0, torch.full_like(d, down),
                         torch.where(d < 0, torch.full_like(d, up),
                                     torch.ones_like(d)))
    return (rates.to(torch.float64) * factor).clamp(0, 1).to(rates.dtype)


@MODELS.register_module()
class FASA(FeatureAugmentation):
    """Feature augmentation and sampling adaptation (Zang et al., ICCV
    2021).

    Per class ``c`` a running mean ``mu_c`` and variance ``s2_c`` of the
    positive RoI features fed to ``fc_cls`` (momentum ``decay_ratio``; see
    :class:`ClassFeatureStatistics`). From ``start_epoch`` on, each step
    draws ``u_c ~ U(0, 1)`` for every class and, for each class already
    seen with ``u_c < p_c``, one virtual feature ``mu_c + sqrt(s2_c) * z``,
    ``z ~ N(0, I_D)``; the virtual features are scored by ``fc_cls`` and
    ``loss_cls`` with weight ``loss_weight`` each, averaged over them. They
    come from buffers, so only the classifier learns from them.

    The rates start at :func:`fasa_initial_rates` of the training instance
    counts (``category_stats``) and are adapted by
    :class:`~mmlongtail.engine.hooks.FASASamplingHook`, which measures each
    class's classification loss on a validation set after each training
    epoch and calls :meth:`adapt` (:func:`fasa_adapt_rates` over groups of
    classes clustered by affinity propagation on their feature means).

    Given the same statistics and the same draws (``torch.rand(C)`` then
    ``torch.randn`` for the chosen classes in class order), a step generates
    exactly what the official ``fa_update``/``fa_generate`` generate, and
    :meth:`adapt` given the same groups changes the rates as the official
    ``dynamic_sampling`` does (tests/models/feature_augment/test_fasa.py).

    Deliberate differences from the official code:

    * the statistics are all-reduced across ranks (officially each rank
      keeps its own), so every rank samples from the same distribution;
    * the rate buffers are checkpointed and resume exactly (officially the
      loss history is a plain attribute and restarts at 0);
    * affinity propagation gets the *negative* squared distances between
      class means as similarities; the official code passes the positive
      distances to scikit-learn's ``affinity='precomputed'``, which reads
      them as similarities and so groups each class with the classes
      *farthest* from it. ``similarity='distance'`` reproduces that.
      Clustering runs in torch (no scikit-learn). With scikit-learn's
      damping 0.5 and 200 iterations the messages often oscillate (they do
      on Gaussian blobs in 64-1024 dimensions, also in a re-typed copy of
      scikit-learn's loop), and scikit-learn (>= 0.23) then labels every
      class -1, so the official loop adapts no rate at all; hence damping
      0.9 and up to 1000 iterations here.
      When it still does not converge the rates stay, with a warning, as
      officially;
    * the virtual features' loss is logged as ``loss_cls_aug`` rather than
      added into ``loss_cls`` (the total is the same).

    Memory: the statistics hold ``8 C (D + 1)`` bytes, 9.9 MB at
    ``C = 1203``, ``D = 1024``; one ``(C, 2 D + 1)`` all-reduce per step.

    Published (official README, LVIS v1 val, Mask R-CNN R50-FPN, 24 epochs,
    random sampler): mask AP 18.8 -> 22.2, AP_r 1.2 -> 10.5.

    Args:
        num_classes (int): ``C``.
        feat_dim (int): ``D``.
        category_stats: Training statistics (for the instance counts).
        decay_ratio (float): Momentum of the running statistics.
            Defaults to 0.1.
        loss_weight (float): ``loss_aug_weight``. Defaults to 0.1.
        instance_prob_power (float): See :func:`fasa_initial_rates`.
        instance_prob_scale (float): See :func:`fasa_initial_rates`.
        dynamic_up (float): Defaults to 1.1.
        dynamic_down (float): Defaults to 0.9.
        similarity (str): ``'neg_sqdist'`` (default) or ``'distance'``
            (the official code's input; see above).
        clustering (bool): Group classes by affinity propagation; if False
            every class is its own group. Defaults to True.
        ap_damping (float): Damping of affinity propagation. Defaults to
            0.9 (scikit-learn's default, which the official code uses, is
            0.5; see below).
        ap_max_iter (int): Its iteration limit. Defaults to 1000 (200).
        start_epoch (int): Defaults to 1 (official: ``epoch >= 1``).
        seed (int): Generator seed.
        use_distributed (bool): All-reduce the statistics.
    """

    def __init__(self,
                 num_classes: int,
                 feat_dim: int,
                 category_stats: StatsSource,
                 decay_ratio: float = 0.1,
                 loss_weight: float = 0.1,
                 instance_prob_power: float = 1.0,
                 instance_prob_scale: float = 1.0,
                 dynamic_up: float = 1.1,
                 dynamic_down: float = 0.9,
                 similarity: str = 'neg_sqdist',
                 clustering: bool = True,
                 ap_damping: float = 0.9,
                 ap_max_iter: int = 1000,
                 start_epoch: int = 1,
                 seed: int = 0,
                 use_distributed: bool = True) -> None:
        super().__init__(num_classes, feat_dim, loss_weight, start_epoch,
                         seed, use_distributed)
        if similarity not in ('neg_sqdist', 'distance'):
            raise ValueError("similarity must be 'neg_sqdist' or "
                             f"'distance', got {similarity!r}")
        stats = load_category_stats(category_stats, num_classes, 'FASA')
        self.stats = ClassFeatureStatistics(num_classes, feat_dim,
                                            decay_ratio, use_distributed)
        self.dynamic_up = float(dynamic_up)
        self.dynamic_down = float(dynamic_down)
        self.similarity = similarity
        self.clustering = clustering
        self.ap_damping = float(ap_damping)
        self.ap_max_iter = int(ap_max_iter)
        self.register_buffer(
            'rates',
            fasa_initial_rates(
                torch.as_tensor(stats.instance_count), instance_prob_power,
                instance_prob_scale))
        # per-class validation-loss share at the previous adaptation
        # (C + 1 entries: the last is background, as officially)
        self.register_buffer('loss_prev', torch.zeros(num_classes + 1))
        # non-persistent accumulators of a validation pass
        self.register_buffer(
            'val_loss', torch.zeros(num_classes + 1, dtype=torch.float64),
            persistent=False)
        self.register_buffer(
            'val_count', torch.zeros(num_classes + 1, dtype=torch.float64),
            persistent=False)

    def observe(self, feats: Tensor, labels: Tensor,
                fc_cls: nn.Module) -> None:
        self.stats.update(feats, labels)

    def sample(self, uniform: Tensor, normal: Tensor) -> Tuple[Tensor,
                                                                 Tensor]:
        """Virtual features from given draws.

        Args:
            uniform (Tensor): ``(C,)`` draws in ``[0, 1)``.
            normal (Tensor): ``(K, D)`` standard normal draws, ``K`` the
                number of chosen classes (seen, ``uniform < rates``).

        Returns:
            tuple: ``(K, D)`` features and ``(K,)`` labels, in class order.
        """
        chosen = ((uniform < self.rates) & self.stats.seen).nonzero()
        chosen = chosen.flatten()
        std = self.stats.var[chosen].sqrt()
        return self.stats.mean[chosen] + std * normal, chosen

    def generate(self, feats: Tensor, labels: Tensor, fc_cls: nn.Module,
                 generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        dev = self.rates.device
        uniform = torch.rand(
            self.num_classes, generator=generator, device=dev)
        k = int(((uniform < self.rates) & self.stats.seen).sum())
        normal = torch.randn(
            k, self.feat_dim, generator=generator, device=dev)
        return self.sample(uniform, normal)

    # -- sampling adaptation ------------------------------------------------
    @torch.no_grad()
    def accumulate_val_loss(self, loss: Tensor, labels: Tensor) -> None:
        """Add per-RoI classification losses ``(N,)`` of RoIs with labels
        ``(N,)`` in ``[0, C]`` to the validation accumulators."""
        self.val_loss.index_add_(0, labels, loss.detach().to(
            self.val_loss.dtype))
        self.val_count.index_add_(
            0, labels, torch.ones_like(labels, dtype=self.val_count.dtype))

    def reset_val_loss(self) -> None:
        """Zero the validation accumulators."""
        self.val_loss.zero_()
        self.val_count.zero_()

    def class_groups(self) -> Optional[Tensor]:
        """``(C,)`` group of each class: affinity propagation on the class
        means (see the class docstring), or one group per class; None if
        affinity propagation did not converge."""
        C = self.num_classes
        if not self.clustering:
            return torch.arange(C, device=self.rates.device)
        mean = self.stats.mean.to(torch.float64)
        sq = mean.square().sum(1)
        dist2 = sq[:, None] - 2 * mean @ mean.T + sq[None, :]
        sim = -dist2 if self.similarity == 'neg_sqdist' else dist2
        groups, converged = affinity_propagation(
            sim,
            damping=self.ap_damping,
            max_iter=self.ap_max_iter,
            seed=self.seed)
        return groups if converged else None

    @torch.no_grad()
    def adapt(self, groups: Optional[Union[Tensor, Sequence[int]]] = None
              ) -> None:
        """Update the rates from the accumulated validation losses (all-
        reduced across ranks) and reset the accumulators.

        Args:
            groups: ``(C,)`` group per class; computed by
                :meth:`class_groups` when None.
        """
        loss = all_reduce_sum_(self.val_loss.clone(), self.use_distributed)
        count = all_reduce_sum_(self.val_count.clone(),
                                self.use_distributed)
        self.reset_val_loss()
        total = float(count.sum())
        if total == 0:
            MMLogger.get_current_instance().warning(
                'FASA: no validation RoI was scored, the sampling rates '
                'stay as they are')
            return
        now = (loss / total).to(self.loss_prev.dtype)
        if float(self.loss_prev.sum()) == 0:
            self.loss_prev.copy_(now)
        if groups is None:
            groups = self.class_groups()
        if groups is None:
            MMLogger.get_current_instance().warning(
                'FASA: affinity propagation did not converge '
                f'(damping {self.ap_damping}, {self.ap_max_iter} '
                'iterations); the sampling rates stay as they are')
            self.loss_prev.copy_(now)
            return
        groups = torch.as_tensor(groups, device=self.rates.device)
        C = self.num_classes
        self.rates.copy_(
            fasa_adapt_rates(self.rates, self.loss_prev[:C], now[:C],
                             groups, self.dynamic_up, self.dynamic_down))
        self.loss_prev.copy_(now)
