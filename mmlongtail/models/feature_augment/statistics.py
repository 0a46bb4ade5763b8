"""Per-class running mean and variance of RoI features (the input of a bbox
head's ``fc_cls``), shared by the feature generators of
:mod:`mmlongtail.models.feature_augment`."""
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from mmlongtail.datasets.category_stats import check_num_classes
from mmlongtail.utils.dist import all_reduce_sum_


class ClassFeatureStatistics(nn.Module):
    """Running per-class mean and (unbiased) variance of ``D``-dim features.

    Buffers (saved in checkpoints, resumed exactly, moved by ``.to()``):

    * ``count`` ``(C,)`` float64: samples seen per class (summed over ranks);
    * ``mean`` ``(C, D)`` float32;
    * ``var`` ``(C, D)`` float32, the unbiased per-dimension variance.

    Memory: ``(2 D + 2) C`` numbers, ``8 C (D + 1)`` bytes; at LVIS v1's
    ``C = 1203`` classes and ``D = 1024`` features that is 9.9 MB of buffers,
    and :meth:`update` reduces one ``(C, 2 D + 1)`` float32 tensor (9.9 MB)
    per step.

    One step (:meth:`update`, under ``no_grad``, vectorised with
    ``index_add_``) sums, per class, the count and the first two moments of
    the features *shifted by the current running mean* (identical on every
    rank, and numerically stable when the shift is near the mean). When a
    multi-rank process group is initialised those sums are all-reduced in one
    collective, so every rank holds the same statistics; without one nothing
    is communicated. Then, for each class present in the step:

    * ``momentum=m`` (FASA's ``decay_ratio``; Zang et al., ICCV 2021): the
      first time a class is seen its mean and variance are the step's;
      afterwards ``mean <- m * step_mean + (1 - m) * mean`` and likewise for
      the variance. The step's variance of one sample is 0 (as in the
      official code).
    * ``momentum=None``: exact statistics of every sample seen so far
      (Chan et al.'s pairwise merge of counts, means and squared deviations).

    Args:
        num_classes (int): ``C``, foreground classes.
        dim (int): ``D``, feature width.
        momentum (float, optional): See above. Defaults to None.
        use_distributed (bool): All-reduce across ranks when a process group
            is initialised. Defaults to True.
    """

    def __init__(self,
                 num_classes: int,
                 dim: int,
                 momentum: Optional[float] = None,
                 use_distributed: bool = True) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes,
                                             'ClassFeatureStatistics')
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f'ClassFeatureStatistics needs a positive '
                             f'feature dim, got {dim!r}')
        if momentum is not None and not 0 < float(momentum) <= 1:
            raise ValueError(
                f'momentum must be in (0, 1] or None, got {momentum}')
        self.dim = dim
        self.momentum = None if momentum is None else float(momentum)
        self.use_distributed = use_distributed
        self.register_buffer('count',
                             torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer('mean', torch.zeros(num_classes, dim))
        self.register_buffer('var', torch.zeros(num_classes, dim))

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, dim={self.dim}, '
                f'momentum={self.momentum}')

    @property
    def seen(self) -> Tensor:
        """``(C,)`` bool: classes with at least one sample so far."""
        return self.count > 0

    def check_inputs(self, feats: Tensor, labels: Tensor) -> None:
        """Raise ``ValueError`` on a wrong shape or a label outside
        ``[0, C)``."""
        if feats.dim() != 2 or feats.size(1) != self.dim:
            raise ValueError(f'features must be (N, {self.dim}), got '
                             f'{tuple(feats.shape)}')
        if labels.shape != feats.shape[:1]:
            raise ValueError(f'labels must be ({feats.size(0)},), got '
                             f'{tuple(labels.shape)}')
        if labels.numel() and (int(labels.min()) < 0
                               or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f'labels must be foreground classes in [0, '
                f'{self.num_classes}), got min {int(labels.min())} and max '
                f'{int(labels.max())}')

    @torch.no_grad()
    def update(self, feats: Tensor, labels: Tensor) -> None:
        """Add one step of features.

        Args:
            feats (Tensor): ``(N, D)`` features (detached here).
            labels (Tensor): ``(N,)`` int64 foreground labels in ``[0, C)``.
                Every rank must call this once per step (the all-reduce),
                with ``N = 0`` if it has no sample.
        """
        self.check_inputs(feats, labels)
        C, D = self.num_classes, self.dim
        shift = self.mean
        x = feats.detach().to(shift.dtype) - shift[labels]
        sums = x.new_zeros(C, 2 * D + 1)
        sums[:, 0].index_add_(0, labels, x.new_ones(len(labels)))
        sums[:, 1:D + 1].index_add_(0, labels, x)
        sums[:, D + 1:].index_add_(0, labels, x * x)
        all_reduce_sum_(sums, self.use_distributed)
        n = sums[:, 0:1]
        present = n[:, 0] > 0
        dmean = sums[:, 1:D + 1] / n.clamp(min=1)
        step_mean = shift + dmean
        # squared deviations from the step mean; round-off can make the
        # difference slightly negative, so it is floored at 0
        step_m2 = (sums[:, D + 1:] - n * dmean * dmean).clamp(min=0)
        step_var = torch.where(n > 1, step_m2 / (n - 1).clamp(min=1),
                               torch.zeros_like(step_m2))
        old_n = self.count.to(n.dtype)[:, None]
        if self.momentum is not None:
            m = self.momentum
            new_mean = torch.where(old_n > 0,
                                   m * step_mean + (1 - m) * self.mean,
                                   step_mean)
            new_var = torch.where(old_n > 0,
                                  m * step_var + (1 - m) * self.var,
                                  step_var)
        else:
            tot = old_n + n
            delta = dmean  # step mean minus the old mean
            new_mean = self.mean + delta * (n / tot.clamp(min=1))
            m2 = (self.var * (old_n - 1).clamp(min=0) + step_m2 +
                  delta * delta * (old_n * n / tot.clamp(min=1)))
            new_var = torch.where(tot > 1, m2 / (tot - 1).clamp(min=1),
                                  torch.zeros_like(m2))
        keep = present[:, None]
        self.mean.copy_(torch.where(keep, new_mean, self.mean))
        self.var.copy_(torch.where(keep, new_var, self.var))
        self.count.add_(sums[:, 0].to(self.count.dtype))
