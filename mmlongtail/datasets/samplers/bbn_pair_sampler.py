"""The paired sampler of BBN (Zhou et al., CVPR 2020): a uniform and a
reversed stream of images, interleaved.

BBN's re-balancing branch reads the *reversed* sampler: class ``j`` with
probability ``w_j / sum_k w_k``, ``w_j = n_max / n_j`` (official code,
``lib/dataset/baseset.py``), i.e. ``p_j ∝ 1 / n_j``, then an image of that
class uniformly. Here that is :class:`ClassAwareSampler`'s rule with
``q = -1``, ``n_j`` the number of training images containing ``j`` (the
project's per-image categories, :mod:`mmlongtail.datasets.image_categories`).
The conventional branch reads the uniform sampler: a random permutation of
the images each epoch.

Images hold many classes, so the reversed *image* stream does not reverse
the *instance* (RoI) distribution: a rare-class image drawn for its rare
class brings its frequent-class objects along. The drawn class follows
``1 / n_j`` exactly; the instances do not (docs: BBN-style cumulative
learning).
"""
import math
from typing import Iterator, Optional, Sized, Tuple

import torch
from mmengine.logging import MMLogger

from mmlongtail.registry import DATA_SAMPLERS
from .class_aware_sampler import ClassAwareSampler


@DATA_SAMPLERS.register_module()
class BBNPairSampler(ClassAwareSampler):
    """Interleaved ``(uniform, reversed)`` image pairs over a
    :class:`~mmlongtail.datasets.BBNStreamDataset`.

    Epoch ``e`` draws, from one generator seeded by ``(seed, e)``, a random
    permutation ``u`` of the ``N`` images (the conventional stream, index
    ``u_k``) and ``num_samples`` reversed draws ``r`` (class ``∝ n_j^q``,
    ``q = -1``; index ``N + r_k``), and yields ``u_0, N + r_0, u_1,
    N + r_1, ...``. Ranks take disjoint shares of whole *pairs*, so with an
    even ``batch_size`` (and ``batch_sampler=None``: mmdet's aspect-ratio
    grouping would reorder the stream) every batch holds as many images of
    each stream. Resume, seeds and ``set_epoch`` are
    :class:`~mmlongtail.datasets.samplers.epoch_stream.EpochStreamSampler`'s.

    Args:
        dataset (BBNStreamDataset): The two-stream training dataset.
        q (float): Class exponent of the re-balancing stream; -1 (default)
            is BBN's reversed sampler, 0 class-balanced.
        num_samples (int, optional): Pairs per epoch. Defaults to ``N``, the
            number of training images (BBN's epoch: each image once in the
            conventional stream).
        seed (int, optional): Base seed, the same on every rank.
        round_up (bool): Pad each epoch to a multiple of the world size
            (in pairs). Defaults to True.
        category_source (str): See
            :mod:`mmlongtail.datasets.image_categories`.

    Raises:
        TypeError: ``dataset`` is not a ``BBNStreamDataset``.
        ValueError: ``infinite=True`` (not supported: BBN's schedule is per
            epoch).
    """

    def __init__(self,
                 dataset: Sized,
                 q: float = -1.0,
                 num_samples: Optional[int] = None,
                 seed: Optional[int] = None,
                 infinite: bool = False,
                 round_up: bool = True,
                 category_source: str = 'auto') -> None:
        from ..bbn_streams import BBNStreamDataset
        if not isinstance(dataset, BBNStreamDataset):
            raise TypeError(
                'BBNPairSampler needs train_dataloader.dataset of type '
                "'mmlongtail.BBNStreamDataset' (it serves each image in both "
                f'streams), got {type(dataset).__name__}')
        if infinite:
            raise ValueError(
                'BBNPairSampler: infinite=True is not supported; use '
                'EpochBasedTrainLoop (BBN schedules alpha by epoch)')
        self.streams = dataset
        base = dataset.dataset
        super().__init__(
            base, q=q, num_samples=num_samples, seed=seed, infinite=False,
            round_up=round_up, category_source=category_source)
        self.dataset = dataset

    def epoch_pairs(self, epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The unsharded ``(num_samples, 2)`` pairs of ``epoch`` as two
        tensors: conventional image indices and re-balancing image indices
        (both into the wrapped dataset, ``[0, N)``)."""
        return self._stream_pairs(epoch, self.epoch_generator(epoch))

    def _stream_pairs(self, epoch: int, g: torch.Generator
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        n = len(self.streams.dataset)
        perm = torch.randperm(n, generator=g)
        reps = math.ceil(self.num_samples / n)
        uniform = torch.cat([perm] + [
            torch.randperm(n, generator=g) for _ in range(reps - 1)
        ])[:self.num_samples]
        _, reversed_ = self._draw_pairs(epoch, g)
        return uniform, reversed_

    def _draw(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        uniform, reversed_ = self._stream_pairs(epoch, generator)
        n = len(self.streams.dataset)
        return torch.stack([uniform, reversed_ + n], dim=1).reshape(-1)

    def _rank_share(self, stream: torch.Tensor) -> torch.Tensor:
        pairs = stream.view(-1, 2)
        total = pairs.shape[0]
        if self.round_up and total % self.world_size:
            padded = math.ceil(total / self.world_size) * self.world_size
            pairs = pairs.repeat(math.ceil(padded / total), 1)[:padded]
        return pairs[self.rank::self.world_size].reshape(-1)

    def __len__(self) -> int:
        return int(self._rank_share(self.epoch_indices(self.epoch)).shape[0])

    def __iter__(self) -> Iterator[int]:
        stream = self.epoch_indices(self.epoch)
        if self.rank == 0:
            self._log_epoch(stream)
        return iter(self._rank_share(stream).tolist())

    def _log_epoch(self, stream: torch.Tensor) -> None:
        MMLogger.get_current_instance().info(
            f'BBNPairSampler: epoch {self.epoch} draws {stream.shape[0] // 2}'
            f' (uniform, reversed q={self.q}) pairs ({self.world_size} '
            f'rank(s), {len(self)} images per rank)')
