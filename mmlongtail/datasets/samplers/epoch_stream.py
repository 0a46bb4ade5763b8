"""The machinery every image-level sampler of mmlongtail shares.

A sampler here draws one *epoch stream* of dataset indices from nothing but
``(seed, epoch)`` and splits it across ranks. That one rule gives each
sampler the same guarantees:

* **shared by ranks**: every rank computes the same stream without
  communicating (``seed=None`` is synchronized once with mmengine's
  ``sync_random_seed``);
* **disjoint shards**: rank ``k`` of ``W`` takes positions ``k, k + W, ...``
  (the stream padded to a multiple of ``W`` with ``round_up``, as mmengine's
  ``DefaultSampler``);
* **exact resume**: a fresh sampler told ``set_epoch(e)`` replays epoch
  ``e`` bit for bit;
* **epoch and infinite modes**: one epoch per ``iter()`` for
  ``EpochBasedTrainLoop``, or (``infinite=True``) the concatenation of epochs
  ``epoch, epoch + 1, ...`` split across ranks for ``IterBasedTrainLoop``.

A subclass implements :meth:`EpochStreamSampler._draw` (the whole, unsharded
stream of one epoch from a seeded ``torch.Generator``).
"""
import math
from typing import Iterator, Optional, Sized, Tuple

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.logging import MMLogger
from torch.utils.data import Sampler


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch)``."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(
        1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def check_seed(seed) -> int:
    """``seed`` as an int, drawn and synchronized across ranks when None.

    Raises:
        ValueError: ``seed`` is not a non-negative int.
    """
    if seed is None:
        seed = sync_random_seed()
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
            or seed < 0:
        raise ValueError(f'seed must be a non-negative int or None, got '
                         f'{seed!r}')
    return int(seed)


class EpochStreamSampler(Sampler):
    """Base of the samplers whose epoch stream depends only on
    ``(seed, epoch)`` (see the module docstring).

    Args:
        dataset (Sized): The training dataset.
        seed (int, optional): Base seed, the same on every rank; None draws
            one and synchronizes it across ranks.
        infinite (bool): Endless stream of consecutive epochs (for
            ``IterBasedTrainLoop``). Defaults to False.
        round_up (bool): Pad each epoch to a multiple of the world size.
            Ignored when ``infinite``. Defaults to True.
    """

    def __init__(self,
                 dataset: Sized,
                 seed: Optional[int] = None,
                 infinite: bool = False,
                 round_up: bool = True) -> None:
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.infinite = infinite
        self.round_up = round_up
        self.seed = check_seed(seed)
        self.epoch = 0
        self._cached: Optional[Tuple[int, torch.Tensor]] = None

    # ------------------------------------------------------ subclass API --
    def _draw(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        """The whole stream of ``epoch``: ``(L,)`` int64 dataset indices,
        drawn only from ``generator`` (seeded by ``(seed, epoch)``)."""
        raise NotImplementedError

    def _log_epoch(self, stream: torch.Tensor) -> None:
        """Called on rank 0 at each epoch-mode ``iter()``."""
        MMLogger.get_current_instance().info(
            f'{type(self).__name__}: epoch {self.epoch} draws '
            f'{stream.shape[0]} samples ({self.world_size} rank(s), '
            f'{len(self)} per rank)')

    # ------------------------------------------------------------ epochs --
    def epoch_generator(self, epoch: int) -> torch.Generator:
        """The generator an epoch's stream is drawn from."""
        g = torch.Generator()
        g.manual_seed(epoch_seed(self.seed, epoch))
        return g

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """The whole (unsharded, unpadded) index stream of ``epoch``.

        Depends only on ``(seed, epoch)``.

        Returns:
            Tensor: ``(L,)`` int64 dataset indices.
        """
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        indices = self._draw(epoch, self.epoch_generator(epoch))
        self._cached = (epoch, indices)
        return indices

    def _rank_share(self, stream: torch.Tensor) -> torch.Tensor:
        total = stream.shape[0]
        if self.round_up and total % self.world_size:
            padded = math.ceil(total / self.world_size) * self.world_size
            reps = math.ceil(padded / max(total, 1))
            stream = stream.repeat(reps)[:padded]
        return stream[self.rank::self.world_size]

    def _infinite(self) -> Iterator[int]:
        epoch = self.epoch
        offset = self.rank  # position of this rank's next index in the epoch
        while True:
            stream = self.epoch_indices(epoch)
            total = stream.shape[0]
            if offset < total:
                yield from stream[offset::self.world_size].tolist()
                taken = (total - 1 - offset) // self.world_size + 1
                offset += taken * self.world_size
            offset -= total
            epoch += 1

    def __iter__(self) -> Iterator[int]:
        if self.infinite:
            return self._infinite()
        stream = self.epoch_indices(self.epoch)
        if self.rank == 0:
            self._log_epoch(stream)
        return iter(self._rank_share(stream).tolist())

    def __len__(self) -> int:
        """This rank's number of indices in the current epoch (in infinite
        mode, its share of the current epoch)."""
        total = int(self.epoch_indices(self.epoch).shape[0])
        if self.round_up and not self.infinite:
            return math.ceil(total / self.world_size)
        return len(range(self.rank, total, self.world_size))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose stream the next ``iter()`` yields."""
        self.epoch = int(epoch)
