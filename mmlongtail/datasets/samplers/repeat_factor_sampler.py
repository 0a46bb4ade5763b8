"""Repeat-factor sampling (RFS) as a distributed sampler.

LVIS (Gupta et al., CVPR 2019, appendix B.2) over-samples images that contain
rare categories: image ``I`` is visited ``r(I)`` times per epoch on average
(see :mod:`mmlongtail.datasets.repeat_factors`). This sampler draws the epoch's
index stream from the repeat factors, shuffles it and gives every rank a
disjoint share, for mmengine's ``EpochBasedTrainLoop`` (``set_epoch``) and
``IterBasedTrainLoop`` (``infinite=True``).
"""
import time
from typing import Optional, Sized, Tuple

import numpy as np
import torch
from mmengine.logging import MMLogger

from mmlongtail.registry import DATA_SAMPLERS
from ..category_stats import FREQUENCY_GROUPS, frequency_group
from ..image_categories import SOURCES, image_categories
from ..repeat_factors import RepeatFactors, repeat_factors_from_pairs
from .epoch_stream import EpochStreamSampler

ROUNDING_MODES = ('stochastic', 'ceil')


def dataset_repeat_factors(dataset: Sized,
                           repeat_thr: float,
                           sqrt: bool = True,
                           category_source: str = 'auto'
                           ) -> Tuple[RepeatFactors, str]:
    """Repeat factors of every index of ``dataset``.

    The categories of each image come from
    :func:`mmlongtail.datasets.image_categories.image_categories`; the
    factors from :func:`~mmlongtail.datasets.repeat_factors.
    repeat_factors_from_pairs`.

    Args:
        dataset (Sized): A dataset :func:`image_categories` can read.
        repeat_thr (float): The threshold ``t``.
        sqrt (bool): Square-root rule. Defaults to True.
        category_source (str): ``'auto'``, ``'annotations'`` or
            ``'get_cat_ids'``; see :mod:`mmlongtail.datasets.image_categories`.

    Returns:
        tuple: ``(RepeatFactors, description of the source used)``; its
        ``category_ids`` are contiguous labels.
    """
    if category_source not in SOURCES:
        raise ValueError(f'category_source must be one of {SOURCES}, got '
                         f'{category_source!r}')
    cats = image_categories(dataset, category_source)
    factors = repeat_factors_from_pairs(
        cats.image_index(),
        cats.labels,
        num_images=cats.num_images,
        repeat_thr=repeat_thr,
        sqrt=sqrt,
        grouped_by='image')
    return factors, cats.source


@DATA_SAMPLERS.register_module()
class RepeatFactorSampler(EpochStreamSampler):
    """Repeat-factor sampler (Gupta et al., LVIS, CVPR 2019, appendix B.2).

    Each epoch, image ``I`` appears ``floor(r(I))`` times plus once more with
    probability ``r(I) - floor(r(I))`` (stochastic rounding, so ``r(I)`` is
    met in expectation, as in detectron2's ``RepeatFactorTrainingSampler``),
    or ``ceil(r(I))`` times with ``rounding='ceil'``, which reproduces the
    repeat counts of mmengine's ``ClassBalancedDataset``. The epoch's stream
    is shuffled, then rank ``k`` of ``W`` takes positions ``k, k + W, ...``.

    All randomness of an epoch comes from one ``torch.Generator`` seeded by
    ``(seed, epoch)``, identical on every rank, so ranks agree on the stream
    without communicating and a resumed epoch (mmengine calls ``set_epoch``)
    replays exactly (the shared machinery of
    :class:`~mmlongtail.datasets.samplers.epoch_stream.EpochStreamSampler`).

    With ``round_up=True`` (default) the stream is padded by repeating its
    beginning until its length is a multiple of the world size, as mmengine's
    ``DefaultSampler`` does, so every rank yields ``ceil(L / W)`` indices and
    at most ``W - 1`` draws of an epoch appear twice; with ``round_up=False``
    nothing is added and ranks may differ by one index.

    Build it from a config::

        train_dataloader = dict(
            sampler=dict(type='mmlongtail.RepeatFactorSampler',
                         repeat_thr=1e-3))

    Args:
        dataset (Sized): The training dataset (passed by the Runner).
        repeat_thr (float): The threshold ``t``; categories in fewer than a
            fraction ``t`` of the images are over-sampled. Defaults to 1e-3.
        sqrt (bool): ``r(c) = max(1, sqrt(t / f(c)))`` if True, else
            ``max(1, t / f(c))``. Defaults to True.
        seed (int, optional): Base seed, the same on every rank. None draws
            one and synchronizes it across ranks (mmengine's
            ``sync_random_seed``). Defaults to None.
        shuffle (bool): Shuffle each epoch's stream. Without shuffling the
            stream lists each index ``reps`` times in dataset order.
            Defaults to True.
        rounding (str): ``'stochastic'`` or ``'ceil'``. Defaults to
            ``'stochastic'``.
        infinite (bool): Yield an endless stream for mmengine's
            ``IterBasedTrainLoop``, like ``InfiniteSampler``: epochs
            ``epoch, epoch + 1, ...`` (each freshly drawn) are concatenated
            and the concatenation is split across ranks. Iteration loops do
            not call ``set_epoch``; every ``iter()`` restarts the stream from
            the current epoch. Defaults to False (one epoch per ``iter()``,
            for ``EpochBasedTrainLoop``).
        round_up (bool): Pad each epoch to a multiple of the world size (see
            above). Ignored when ``infinite``. Defaults to True.
        category_source (str): ``'auto'``, ``'annotations'`` or
            ``'get_cat_ids'``: where each image's categories come from; see
            :mod:`mmlongtail.datasets.image_categories`, which also lists the
            supported datasets and wrappers. Defaults to ``'auto'``.
    """

    def __init__(self,
                 dataset: Sized,
                 repeat_thr: float = 1e-3,
                 sqrt: bool = True,
                 seed: Optional[int] = None,
                 shuffle: bool = True,
                 rounding: str = 'stochastic',
                 infinite: bool = False,
                 round_up: bool = True,
                 category_source: str = 'auto') -> None:
        if rounding not in ROUNDING_MODES:
            raise ValueError(f'rounding must be one of {ROUNDING_MODES}, got '
                             f'{rounding!r}')
        super().__init__(dataset, seed, infinite, round_up)
        self.repeat_thr = repeat_thr
        self.sqrt = sqrt
        self.shuffle = shuffle
        self.rounding = rounding

        tic = time.perf_counter()
        factors, how = dataset_repeat_factors(dataset, repeat_thr, sqrt,
                                              category_source)
        self.build_time = time.perf_counter() - tic
        self.factor_info = factors
        self.category_source_used = how
        self.repeat_factors = torch.from_numpy(factors.image.copy())
        self._int_part = torch.floor(self.repeat_factors)
        self._frac_part = self.repeat_factors - self._int_part
        if self.rank == 0:
            self._log_summary()

    # ------------------------------------------------------------ epochs --
    def _repeats(self, generator: torch.Generator) -> torch.Tensor:
        if self.rounding == 'ceil':
            return torch.ceil(self.repeat_factors).long()
        draw = torch.rand(
            self._frac_part.shape, generator=generator, dtype=torch.float64)
        return (self._int_part + (draw < self._frac_part)).long()

    def _draw(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        """Each index ``reps`` times (drawn from the factors), shuffled."""
        reps = self._repeats(generator)
        # np.repeat: torch.repeat_interleave costs milliseconds even on
        # tiny inputs when intra-op threads are contended
        indices = torch.from_numpy(
            np.repeat(np.arange(reps.shape[0], dtype=np.int64),
                      reps.numpy()))
        if self.shuffle:
            indices = indices[torch.randperm(
                indices.shape[0], generator=generator)]
        return indices

    def _log_epoch(self, stream: torch.Tensor) -> None:
        MMLogger.get_current_instance().info(
            f'RepeatFactorSampler: epoch {self.epoch} draws '
            f'{stream.shape[0]} samples from {len(self.repeat_factors)} '
            f'images ({self.world_size} rank(s), {len(self)} per rank)')

    def __len__(self) -> int:
        """This rank's number of indices in the current epoch.

        With stochastic rounding the epoch length varies slightly from epoch
        to epoch; it is exact for the epoch last passed to ``set_epoch``.
        In infinite mode, this rank's share of the current epoch.
        """
        return super().__len__()

    # ----------------------------------------------------------- logging --
    def _log_summary(self) -> None:
        logger = MMLogger.get_current_instance()
        f = self.factor_info
        r = f.image
        expected = float(r.sum()) if self.rounding == 'stochastic' else float(
            np.ceil(r).sum())
        logger.info(
            f'RepeatFactorSampler: {f.num_images} images, repeat_thr='
            f'{self.repeat_thr}, sqrt={self.sqrt}, rounding={self.rounding}; '
            f'categories from {self.category_source_used} in '
            f'{self.build_time:.3f}s; {int((r > 1).sum())} images repeated, '
            f'expected epoch size {expected:.0f} '
            f'({expected / max(f.num_images, 1):.3f}x)')
        if f.category.size == 0:
            logger.info('RepeatFactorSampler: no annotated images; nothing '
                        'is repeated')
            return
        # LVIS's rule on the image counts of the dataset being sampled
        groups = np.array([frequency_group(int(c)) for c in f.image_count])
        parts = []
        for g in FREQUENCY_GROUPS:
            mask = groups == g
            if mask.any():
                parts.append(f'{g}: {int(mask.sum())} categories, mean '
                             f'r(c)={float(f.category[mask].mean()):.3f}')
        logger.info('RepeatFactorSampler: mean category repeat factor per '
                    'frequency group (groups by LVIS rule on this dataset\'s '
                    'image counts: r <= 10 images < c <= 100 < f): ' +
                    '; '.join(parts))
