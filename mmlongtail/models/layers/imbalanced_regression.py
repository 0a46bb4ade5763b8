"""Label and feature distribution smoothing for imbalanced box regression.

Yang et al., "Delving into Deep Imbalanced Regression", ICML 2021
(official code: https://github.com/YyzHarry/imbalanced-regression).

* :class:`LabelDistributionSmoothing` (LDS) keeps a histogram of regression
  targets, smooths it with a symmetric kernel and turns the smoothed density
  into loss weights (inverse or inverse square root, mean weight one over
  the histogram).
* :class:`FeatureDistributionSmoothing` (FDS) keeps per-bin feature means and
  variances, smooths them over neighbouring bins with the same kind of kernel
  and re-colours a feature from its bin's statistics to the smoothed ones.

Both hold their state in registered buffers (saved, resumed and moved with
the model), update it in one vectorised operation per step under
``no_grad`` and sum it over ranks with one ``all_reduce`` per step when a
process group is initialised, so every rank holds the same state.
:class:`mmlongtail.models.roi_heads.LDSFDSShared2FCBBoxHead` applies them to
the RoI box regression.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmlongtail.registry import MODELS
from mmlongtail.utils.dist import all_reduce_sum_

KERNELS = ('gaussian', 'triang', 'laplace')
REWEIGHTS = ('sqrt_inv', 'inverse')


def _reflect_index(index: Tensor, n: int) -> Tensor:
    """Indices outside ``[0, n)`` mirrored about the half-sample edges
    (``d c b a | a b c d | d c b a``, scipy.ndimage's ``'reflect'``)."""
    index = index % (2 * n)
    return torch.where(index >= n, 2 * n - 1 - index, index)


def kernel_window(kernel: str, size: int, sigma: float,
                  normalize: str = 'max') -> Tensor:
    """The symmetric smoothing window of LDS and FDS (Yang et al. 2021).

    * ``'gaussian'``: a unit impulse of length ``size`` filtered by a
      Gaussian of standard deviation ``sigma`` (truncated at 4 sigma, the
      signal mirrored at its ends), as the official code obtains it with
      ``scipy.ndimage.gaussian_filter1d``;
    * ``'triang'``: ``1 - |j| / ((size + 1) / 2)``, scipy's ``triang``;
    * ``'laplace'``: ``exp(-|j| / sigma)``.

    Args:
        kernel (str): One of :data:`KERNELS`.
        size (int): Odd window length (5 in the paper).
        sigma (float): Width in bins of the Gaussian and Laplace kernels
            (unused by ``'triang'``).
        normalize (str): ``'max'`` (largest value 1, as the official LDS
            code) or ``'sum'`` (values sum to 1, as its FDS code).

    Returns:
        Tensor: ``(size,)`` float64 window.
    """
    if kernel not in KERNELS:
        raise ValueError(f'kernel must be one of {KERNELS}, got {kernel!r}')
    if size < 1 or size % 2 != 1:
        raise ValueError(f'kernel size must be a positive odd number, got '
                         f'{size}')
    if kernel != 'triang' and not sigma > 0:
        raise ValueError(f'sigma must be > 0 for the {kernel} kernel, got '
                         f'{sigma}')
    if normalize not in ('max', 'sum'):
        raise ValueError(f"normalize must be 'max' or 'sum', got "
                         f'{normalize!r}')
    half = (size - 1) // 2
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    if kernel == 'gaussian':
        radius = int(4.0 * sigma + 0.5)
        taps = torch.arange(-radius, radius + 1)
        gauss = torch.exp(-0.5 * (taps.double() / sigma)**2)
        # out[i] = sum_j gauss[j] * impulse[reflect(i + j)]: the filtered
        # impulse is the total Gaussian mass that lands on the centre.
        positions = torch.arange(size)[:, None] + taps[None, :]
        hits = _reflect_index(positions, size) == half
        window = (gauss[None, :] * hits).sum(1)
    elif kernel == 'triang':
        window = 1.0 - offsets.abs() / ((size + 1) / 2)
    else:
        window = torch.exp(-offsets.abs() / sigma)
    return window / (window.max() if normalize == 'max' else window.sum())


def _check_range(value_range: Sequence[float], num_bins: int,
                 what: str) -> Tuple[float, float]:
    low, high = (float(v) for v in value_range)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f'{what} range must be finite with low < high, got '
                         f'{tuple(value_range)}')
    if num_bins < 2:
        raise ValueError(f'{what} needs num_bins >= 2, got {num_bins}')
    return low, high


def bin_index(values: Tensor, low: float, high: float,
              num_bins: int) -> Tensor:
    """Bin of each value among ``num_bins`` equal bins over
    ``[low, high)``; values below ``low`` fall in the first bin and values
    at or above ``high`` in the last, as the official code puts labels
    beyond its first and last bucket in those buckets."""
    width = (high - low) / num_bins
    index = torch.floor((values.detach().double() - low) / width).long()
    return index.clamp_(0, num_bins - 1)


@MODELS.register_module()
class LabelDistributionSmoothing(nn.Module):
    """Loss weights from the smoothed density of regression targets (LDS).

    Yang et al., "Delving into Deep Imbalanced Regression", ICML 2021,
    Sec. 3.1. Each of the ``num_targets`` target columns (e.g. the four
    encoded box deltas) has its own histogram ``n_k`` of ``num_bins`` bins
    over ``value_range``. The effective density is the histogram convolved
    with a max-normalised kernel window (zero beyond the ends):
    ``s_k = conv(g(n_k), window)``, ``g = sqrt`` for ``'sqrt_inv'`` (the
    paper's default) and the identity for ``'inverse'`` (counts first clipped
    to ``count_clip`` when given). A target in bin ``b`` of column ``k``
    gets the weight ``c_k / s_k[b]``, where ``c_k`` makes the mean weight
    over the histogram one: ``c_k = sum_b n_k[b] / sum_b (n_k[b] / s_k[b])``.
    This is the official ``_prepare_weights`` with the histogram in place of
    its pass over the dataset.

    Deliberate differences from the official code:

    * the histogram is a running buffer of every target seen in training
      (summed over ranks each step), not a pass over the training set before
      training: box regression targets depend on the proposals, which the
      detector produces and changes while it trains, so there is no fixed
      set of targets to count beforehand. The current batch is counted
      before it is weighted, so every weighted bin has a count.
    * ``'inverse'`` clips counts only when ``count_clip`` is given; the
      official ``(5, 1000)`` is sized for IMDB-WIKI's ~200k ages and would
      flatten a detection histogram of millions of boxes.

    Args:
        num_targets (int): Target columns, each with its own histogram.
        value_range (tuple[float, float]): ``(low, high)`` of the bins;
            values outside go to the first / last bin.
        num_bins (int): Number of equal-width bins.
        kernel (str): ``'gaussian'``, ``'triang'`` or ``'laplace'``.
        kernel_size (int): Odd window length in bins. Defaults to 5.
        sigma (float): Kernel width in bins. Defaults to 2.
        reweight (str): ``'sqrt_inv'`` or ``'inverse'``.
        count_clip (tuple[float, float], optional): Clip of the counts
            before smoothing for ``'inverse'``. Defaults to None.
        sync (bool): Sum the histogram update over ranks. Defaults to True.
    """

    def __init__(self,
                 num_targets: int = 4,
                 value_range: Sequence[float] = (-4.0, 4.0),
                 num_bins: int = 80,
                 kernel: str = 'gaussian',
                 kernel_size: int = 5,
                 sigma: float = 2.0,
                 reweight: str = 'sqrt_inv',
                 count_clip: Optional[Sequence[float]] = None,
                 sync: bool = True) -> None:
        super().__init__()
        if reweight not in REWEIGHTS:
            raise ValueError(
                f'reweight must be one of {REWEIGHTS}, got {reweight!r}')
        if count_clip is not None and reweight != 'inverse':
            raise ValueError('count_clip applies to reweight=\'inverse\' '
                             f'only, got reweight={reweight!r}')
        if num_targets < 1:
            raise ValueError(f'num_targets must be >= 1, got {num_targets}')
        self.low, self.high = _check_range(value_range, num_bins, 'LDS')
        self.num_targets = num_targets
        self.num_bins = num_bins
        self.reweight = reweight
        self.count_clip = (None if count_clip is None else tuple(
            float(c) for c in count_clip))
        self.sync = sync
        window = kernel_window(kernel, kernel_size, sigma, normalize='max')
        # Recomputed from the arguments: not part of the checkpoint.
        self.register_buffer('window', window, persistent=False)
        self.register_buffer(
            'counts', torch.zeros(num_targets, num_bins, dtype=torch.long))

    def extra_repr(self) -> str:
        return (f'num_targets={self.num_targets}, range=({self.low}, '
                f'{self.high}), num_bins={self.num_bins}, '
                f'reweight={self.reweight}')

    def bins(self, targets: Tensor) -> Tensor:
        """``(N, K)`` bin of each target."""
        return bin_index(targets, self.low, self.high, self.num_bins)

    @torch.no_grad()
    def update(self, targets: Tensor) -> None:
        """Count ``targets`` ``(N, K)`` into the histogram (one bincount and,
        with a process group, one ``all_reduce``)."""
        if targets.dim() != 2 or targets.size(1) != self.num_targets:
            raise ValueError(
                f'LDS expects targets of shape (N, {self.num_targets}), got '
                f'{tuple(targets.shape)}')
        if not torch.isfinite(targets).all():
            raise ValueError('LDS got non-finite regression targets')
        offset = torch.arange(
            self.num_targets, device=targets.device) * self.num_bins
        flat = (self.bins(targets) + offset).flatten()
        hist = torch.bincount(
            flat, minlength=self.num_targets * self.num_bins).view_as(
                self.counts).to(self.counts.device)
        self.counts += all_reduce_sum_(hist, enabled=self.sync)

    @torch.no_grad()
    def smoothed_density(self) -> Tensor:
        """``(K, B)`` float64 kernel-smoothed (transformed) counts."""
        values = self.counts.double()
        if self.reweight == 'sqrt_inv':
            values = values.sqrt()
        elif self.count_clip is not None:
            values = values.clamp(*self.count_clip)
        half = (self.window.numel() - 1) // 2
        return F.conv1d(
            values[:, None], self.window.to(values)[None, None],
            padding=half)[:, 0]

    @torch.no_grad()
    def bin_weights(self) -> Tensor:
        """``(K, B)`` float64 weight of a target in each bin (0 where the
        smoothed density is 0), mean one over the histogram."""
        density = self.smoothed_density()
        inv = torch.where(density > 0, 1.0 / density.clamp(min=1e-300),
                          torch.zeros_like(density))
        counts = self.counts.double()
        scale = counts.sum(1, keepdim=True) / (counts * inv).sum(
            1, keepdim=True).clamp(min=1e-300)
        return inv * scale

    @torch.no_grad()
    def weights(self, targets: Tensor) -> Tensor:
        """``(N, K)`` loss weights of ``targets`` from the current
        histogram, in the dtype of ``targets``."""
        table = self.bin_weights()
        index = self.bins(targets).to(table.device)
        return table.gather(1, index.t()).t().to(targets.dtype)

    def forward(self, targets: Tensor, update: bool = True) -> Tensor:
        """Count ``targets`` (when ``update``) and return their weights.

        Args:
            targets (Tensor): ``(N, K)`` regression targets.
            update (bool): Add them to the histogram first.

        Returns:
            Tensor: ``(N, K)`` weights, no gradient.
        """
        if update:
            self.update(targets)
        return self.weights(targets)


@MODELS.register_module()
class FeatureDistributionSmoothing(nn.Module):
    """Per-bin feature statistics, smoothed over bins, to re-colour features
    (FDS; Yang et al., "Delving into Deep Imbalanced Regression", ICML 2021,
    Sec. 3.2).

    During an epoch every training feature is counted into its target bin
    (:meth:`accumulate`: per-bin count, sum and sum of squares, float64).
    At the end of the epoch (:meth:`end_epoch`, called by
    :class:`mmlongtail.engine.FeatureDistributionSmoothingHook`) each bin
    that saw features folds the epoch's mean and unbiased variance into its
    running statistics with ``momentum`` (the first folded epoch,
    ``start_update``, replaces them), and the running statistics are
    smoothed over the bins with the sum-normalised kernel window (the ends
    mirrored, ``F.pad(mode='reflect')``), as the official ``fds.py``. From
    epoch ``start_smooth`` on, :meth:`calibrate` maps a training feature
    ``x`` of bin ``b`` to ``(x - mu_b) * sqrt(clamp(s2~_b / s2_b, 0.1, 10))
    + mu~_b`` (running ``mu, s2``, smoothed ``mu~, s2~``), leaving feature
    dimensions with zero variance, and bins whose variances sum to
    < 1e-10, unchanged (the official ``calibrate_mean_var``).

    Buffers (``B`` bins, ``D`` features): running and smoothed mean and
    variance, four ``(B, D)`` float32; the epoch's accumulators, count
    ``(B,)`` and sum and sum of squares ``(B, D)`` float64; the samples
    folded per bin ``(B,)``; the epoch counter. All are saved and resumed,
    and the per-step accumulation is summed over ranks with one
    ``all_reduce`` of ``B * (2D + 1)`` float64, so every rank folds the same
    statistics and a checkpoint written mid-epoch resumes exactly. For
    ``B = 50, D = 1024``: 0.8 MB of float32 statistics, 0.8 MB of
    accumulators, 0.8 MB all-reduced per step.

    Deliberate differences from the official code:

    * the epoch's statistics come from the features of the training steps
      themselves, not from a second, no-grad pass over the training set
      after the epoch (which would cost an extra epoch of detector forwards
      and see other proposals);
    * epoch ``e >= start_smooth`` is calibrated with the statistics folded
      up to epoch ``e - 1``, both the running and the smoothed ones. The
      official code snapshots them one epoch late and aliases the running
      and "last epoch" buffers, so its first calibrated epoch is the
      identity and later ones mix the statistics of two epochs.
    * ``momentum=None`` (the official cumulative average) is not offered.

    Args:
        feature_dim (int): ``D``.
        value_range (tuple[float, float]): ``(low, high)`` of the bins of
            the value the features are grouped by; values outside go to the
            first / last bin.
        num_bins (int): Number of equal-width bins, more than half the
            kernel window.
        kernel (str): ``'gaussian'``, ``'triang'`` or ``'laplace'``.
        kernel_size (int): Odd window length in bins. Defaults to 5.
        sigma (float): Kernel width in bins. Defaults to 2.
        momentum (float): Weight of the old running statistics. Defaults
            to 0.9, as the official code.
        start_update (int): First epoch whose features are collected.
            Defaults to 0.
        start_smooth (int): First epoch whose features are calibrated.
            Defaults to 1.
        clip (tuple[float, float]): Clamp of the variance ratio. Defaults
            to (0.1, 10).
        sync (bool): Sum the accumulation over ranks. Defaults to True.
    """

    def __init__(self,
                 feature_dim: int,
                 value_range: Sequence[float] = (0.5, 1.0),
                 num_bins: int = 50,
                 kernel: str = 'gaussian',
                 kernel_size: int = 5,
                 sigma: float = 2.0,
                 momentum: float = 0.9,
                 start_update: int = 0,
                 start_smooth: int = 1,
                 clip: Sequence[float] = (0.1, 10.0),
                 sync: bool = True) -> None:
        super().__init__()
        self.low, self.high = _check_range(value_range, num_bins, 'FDS')
        if feature_dim < 1:
            raise ValueError(f'feature_dim must be >= 1, got {feature_dim}')
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f'momentum must be in [0, 1), got {momentum}')
        if not 0 <= start_update < start_smooth:
            raise ValueError(
                'FDS needs 0 <= start_update < start_smooth (statistics '
                'before they calibrate), got start_update='
                f'{start_update}, start_smooth={start_smooth}')
        if num_bins <= (kernel_size - 1) // 2:
            raise ValueError(
                f'FDS needs more bins ({num_bins}) than half its kernel '
                f'window ({(kernel_size - 1) // 2}) to mirror the ends')
        low_clip, high_clip = (float(c) for c in clip)
        if not 0 < low_clip <= high_clip:
            raise ValueError(f'clip must be 0 < low <= high, got {clip}')
        self.feature_dim = feature_dim
        self.num_bins = num_bins
        self.momentum = float(momentum)
        self.start_update = start_update
        self.start_smooth = start_smooth
        self.clip = (low_clip, high_clip)
        self.sync = sync
        self.register_buffer(
            'window',
            kernel_window(kernel, kernel_size, sigma, normalize='sum'),
            persistent=False)
        shape = (num_bins, feature_dim)
        self.register_buffer('epoch', torch.zeros((), dtype=torch.long))
        self.register_buffer('running_mean', torch.zeros(shape))
        self.register_buffer('running_var', torch.ones(shape))
        self.register_buffer('smoothed_mean', torch.zeros(shape))
        self.register_buffer('smoothed_var', torch.ones(shape))
        self.register_buffer('num_samples_tracked',
                             torch.zeros(num_bins, dtype=torch.long))
        self.register_buffer('acc_count',
                             torch.zeros(num_bins, dtype=torch.float64))
        self.register_buffer('acc_sum', torch.zeros(shape,
                                                    dtype=torch.float64))
        self.register_buffer('acc_sq_sum',
                             torch.zeros(shape, dtype=torch.float64))

    def extra_repr(self) -> str:
        return (f'feature_dim={self.feature_dim}, range=({self.low}, '
                f'{self.high}), num_bins={self.num_bins}, momentum='
                f'{self.momentum}, start_update={self.start_update}, '
                f'start_smooth={self.start_smooth}')

    @property
    def collecting(self) -> bool:
        """Whether this epoch's features are collected."""
        return int(self.epoch) >= self.start_update

    @property
    def calibrating(self) -> bool:
        """Whether this epoch's features are calibrated."""
        return int(self.epoch) >= self.start_smooth

    def bins(self, values: Tensor) -> Tensor:
        """``(N,)`` bin of each value."""
        return bin_index(values, self.low, self.high, self.num_bins)

    def _check(self, features: Tensor, values: Tensor) -> None:
        if (features.dim() != 2 or features.size(1) != self.feature_dim
                or values.shape != features.shape[:1]):
            raise ValueError(
                f'FDS expects features (N, {self.feature_dim}) and values '
                f'(N,), got {tuple(features.shape)} and '
                f'{tuple(values.shape)}')

    @torch.no_grad()
    def accumulate(self, features: Tensor, values: Tensor) -> None:
        """Count ``features`` ``(N, D)`` into the bins of ``values``
        ``(N,)`` (one ``index_add_`` and, with a process group, one
        ``all_reduce``); nothing before epoch ``start_update``."""
        self._check(features, values)
        if not self.collecting:
            return
        index = self.bins(values).to(self.acc_sum.device)
        x = features.detach().to(self.acc_sum)
        packed = torch.zeros(
            self.num_bins, 1 + 2 * self.feature_dim, dtype=torch.float64,
            device=self.acc_sum.device)
        packed.index_add_(0, index,
                          torch.cat([torch.ones_like(x[:, :1]), x, x * x], 1))
        all_reduce_sum_(packed, enabled=self.sync)
        count, total, sq = packed.split([1, self.feature_dim,
                                         self.feature_dim], 1)
        self.acc_count += count[:, 0]
        self.acc_sum += total
        self.acc_sq_sum += sq

    def _smooth(self, stats: Tensor) -> Tensor:
        """``(B, D)`` statistics convolved over the bins, ends mirrored."""
        half = (self.window.numel() - 1) // 2
        padded = F.pad(stats.t()[:, None], (half, half), mode='reflect')
        return F.conv1d(padded, self.window.to(stats)[None, None])[:, 0].t()

    @torch.no_grad()
    def end_epoch(self, epoch: int) -> None:
        """Fold the accumulated epoch ``epoch`` into the running statistics,
        smooth them, clear the accumulators and move to epoch ``epoch + 1``.

        Raises:
            ValueError: ``epoch`` is not the epoch the module is in.
        """
        if epoch != int(self.epoch):
            raise ValueError(
                f'FDS was told that epoch {epoch} ended, but it is in epoch '
                f'{int(self.epoch)}; FeatureDistributionSmoothingHook keeps '
                'the two in step')
        if self.collecting:
            n = self.acc_count[:, None]
            present = self.acc_count > 0
            mean = self.acc_sum / n.clamp(min=1)
            # unbiased, and 0 for a single sample (torch.var as the official)
            var = ((self.acc_sq_sum - self.acc_sum * mean) /
                   (n - 1).clamp(min=1)).clamp(min=0)
            factor = 0.0 if epoch == self.start_update else self.momentum
            new_mean = (1 - factor) * mean + factor * self.running_mean
            new_var = (1 - factor) * var + factor * self.running_var
            self.running_mean.copy_(
                torch.where(present[:, None], new_mean, self.running_mean))
            self.running_var.copy_(
                torch.where(present[:, None], new_var, self.running_var))
            self.smoothed_mean.copy_(self._smooth(self.running_mean))
            self.smoothed_var.copy_(self._smooth(self.running_var))
            self.num_samples_tracked += self.acc_count.long()
        self.acc_count.zero_()
        self.acc_sum.zero_()
        self.acc_sq_sum.zero_()
        self.epoch.fill_(epoch + 1)

    @torch.no_grad()
    def set_epoch(self, epoch: int) -> bool:
        """Align the epoch counter with the training loop's ``epoch`` (a
        model loaded from another run's weights); the accumulators of
        another epoch are dropped. Returns whether anything changed."""
        if epoch == int(self.epoch):
            return False
        self.acc_count.zero_()
        self.acc_sum.zero_()
        self.acc_sq_sum.zero_()
        self.epoch.fill_(epoch)
        return True

    def calibrate(self, features: Tensor, values: Tensor) -> Tensor:
        """Re-colour ``features`` ``(N, D)`` from the statistics of their
        bins to the smoothed ones (identity before ``start_smooth``).

        Gradients flow through ``x``; the statistics are constants.

        Returns:
            Tensor: ``(N, D)``, dtype of ``features``.
        """
        self._check(features, values)
        if not self.calibrating:
            return features
        index = self.bins(values).to(self.running_mean.device)
        m1, v1 = self.running_mean[index], self.running_var[index]
        m2, v2 = self.smoothed_mean[index], self.smoothed_var[index]
        valid = (v1 != 0) & (self.running_var.sum(1)[index] >= 1e-10)[:, None]
        ratio = torch.where(valid, v2 / torch.where(valid, v1, 1.0), 1.0)
        scale = ratio.clamp(*self.clip).sqrt()
        x = features.float()
        out = torch.where(valid, (x - m1) * scale + m2, x)
        return out.to(features.dtype)

    def forward(self, features: Tensor, values: Tensor) -> Tensor:
        """:meth:`accumulate` (uncalibrated ``features``) then
        :meth:`calibrate`."""
        self.accumulate(features, values)
        return self.calibrate(features, values)
