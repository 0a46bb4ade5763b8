"""Repeat-factor sampling (RFS) as a distributed sampler.

LVIS (Gupta et al., CVPR 2019, appendix B.2) over-samples images that contain
rare categories: image ``I`` is visited ``r(I)`` times per epoch on average
(see :mod:`mmlongtail.datasets.repeat_factors`). This sampler draws the epoch's
index stream from the repeat factors, shuffles it and gives every rank a
disjoint share, for mmengine's ``EpochBasedTrainLoop`` (``set_epoch``) and
``IterBasedTrainLoop`` (``infinite=True``).
"""
import itertools
import math
import re
import time
from typing import Iterator, Optional, Sized, Tuple

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.logging import MMLogger
from torch.utils.data import Sampler

from mmlongtail.registry import DATA_SAMPLERS
from ..category_stats import FREQUENCY_GROUPS, frequency_group
from ..repeat_factors import RepeatFactors, repeat_factors_from_pairs

ROUNDING_MODES = ('stochastic', 'ceil')
CATEGORY_SOURCES = ('auto', 'annotations', 'get_cat_ids')

# ``pickle.dumps(data_info, protocol=4)`` of an mmdet data_info starts with
# PROTO 4, FRAME <8 bytes>, EMPTY_DICT, MEMOIZE, MARK, the key 'img_path', its
# value as SHORT_BINUNICODE <len> <bytes> MEMOIZE, then the key 'img_id'
# (SHORT_BINUNICODE + MEMOIZE) and its value as BININT1 / BININT2 / BININT.
_HEAD = {0: 0x80, 1: 0x04, 2: 0x95}
_HEAD.update(
    {11 + k: v for k, v in enumerate(b'}\x94(\x8c\x08img_path\x94\x8c')})
_KEY = np.frombuffer(b'\x8c\x06img_id\x94', dtype=np.uint8)
_IMG_ID_PATTERN = re.compile(rb'\x8c\x06img_id\x94(?:K(.)|M(..)|J(....))',
                             re.DOTALL)
# where the layout differs, 'img_id' is searched for in the first bytes
_IMG_ID_WINDOW = 4096
_SPOT_CHECKS = 16


def _read_img_ids_vectorized(data: np.ndarray, starts: np.ndarray,
                             ends: np.ndarray):
    """Read every item's img_id at its expected byte offset, in bulk.

    Returns:
        tuple: ``(ids, ok)``, ``(N,)`` int64 and bool; ``ok`` is False where
        the bytes are not laid out as expected (those ids are meaningless).
    """
    last = data.shape[0] - 1

    def at(pos):
        return data[np.minimum(pos, last)]

    ok = ends - starts >= 28 + 9 + 5
    for off, byte in _HEAD.items():
        ok &= at(starts + off) == byte
    plen = at(starts + 26).astype(np.int64)
    ok &= at(starts + 27 + plen) == 0x94
    key = starts + 28 + plen
    for k, byte in enumerate(_KEY.tolist()):
        ok &= at(key + k) == byte
    op = at(key + 9)
    v = [at(key + 10 + k).astype(np.int64) for k in range(4)]
    ids = np.where(op == ord('K'), v[0], 0)
    ids = np.where(op == ord('M'), v[0] | (v[1] << 8), ids)
    j = v[0] | (v[1] << 8) | (v[2] << 16) | (v[3] << 24)
    j = np.where(j >= 1 << 31, j - (1 << 32), j)  # BININT is signed
    ids = np.where(op == ord('J'), j, ids)
    width = np.select([op == ord('K'), op == ord('M'), op == ord('J')],
                      [1, 2, 4], 0)
    ok &= (width > 0) & (key + 10 + width <= ends)
    return ids, ok


def _read_img_id(buf: memoryview, start: int, end: int) -> Optional[int]:
    m = _IMG_ID_PATTERN.search(buf, start, min(end, start + _IMG_ID_WINDOW))
    if m is None:
        return None
    raw = m.group(m.lastindex)
    return int.from_bytes(raw, 'little', signed=m.lastindex == 3)


def _dataset_img_ids(dataset) -> Tuple[np.ndarray, str]:
    """``(N,)`` int64 ``img_id`` of each dataset index, without unpickling.

    Unserialized datasets are read from ``data_list`` directly. Serialized
    ones (mmengine's default ``serialize_data=True``) are read from the
    ``img_id`` entry of each item's pickle, whose bytes lie near the start of
    the item; an item where the entry is not found is read with
    ``get_data_info``, and a sample of items is checked against
    ``get_data_info`` before the result is trusted.
    """
    n = len(dataset)
    if not getattr(dataset, 'serialize_data', False):
        ids = np.fromiter((d['img_id'] for d in dataset.data_list),
                          dtype=np.int64,
                          count=n)
        return ids, 'data_list'
    ends = np.asarray(dataset.data_address, dtype=np.int64)
    if ends.shape[0] != n:
        raise RuntimeError(f'dataset has {n} items but {ends.shape[0]} '
                           'serialized addresses')
    data = np.asarray(dataset.data_bytes, dtype=np.uint8)
    starts = np.concatenate([np.zeros(1, np.int64), ends[:-1]])
    out, ok = _read_img_ids_vectorized(data, starts, ends)
    buf = memoryview(data)
    searched = unpickled = 0
    for i in np.flatnonzero(~ok).tolist():
        v = _read_img_id(buf, int(starts[i]), int(ends[i]))
        searched += 1
        if v is None:
            v = int(dataset.get_data_info(i)['img_id'])
            unpickled += 1
        out[i] = v
    check = np.unique(np.linspace(0, n - 1, min(n, _SPOT_CHECKS)).astype(int))
    for i in check.tolist():
        real = int(dataset.get_data_info(i)['img_id'])
        if real != out[i]:
            raise RuntimeError(
                f'serialized img_id of item {i} reads {out[i]} but the item '
                f'holds {real}')
    how = 'serialized img_id entries'
    if searched:
        how += (f' ({searched} items searched, {unpickled} of them '
                'unpickled)')
    return out, how


def _annotation_pairs(dataset) -> Tuple[np.ndarray, np.ndarray, str]:
    """(dataset index, category id) pairs from the loaded annotation index.

    mmdet's ``CocoDataset``/``LVISDataset`` family keep ``cat_img_map``
    (category id -> image ids, one entry per annotation) after loading. Its
    image ids are joined with each dataset index's ``img_id``, so images the
    dataset filtered out (``filter_empty_gt``, ``min_size``, ``indices``)
    simply drop out and every remaining pair lands on the index that
    ``__getitem__`` serves.
    """
    img_ids, how = _dataset_img_ids(dataset)
    n = img_ids.shape[0]
    if n and np.unique(img_ids).shape[0] != n:
        raise RuntimeError('dataset holds an img_id more than once')
    cat_ids = sorted(int(c) for c in dataset.cat_ids)
    lists = [dataset.cat_img_map.get(c, ()) for c in cat_ids]
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    pair_img = np.fromiter(
        itertools.chain.from_iterable(lists),
        dtype=np.int64,
        count=int(lengths.sum()))
    pair_cat = np.repeat(np.asarray(cat_ids, dtype=np.int64), lengths)
    # img_id -> dataset index
    if n == 0:
        keep = np.zeros(pair_img.shape[0], dtype=bool)
        index = np.zeros(pair_img.shape[0], dtype=np.int64)
    elif img_ids.min() >= 0 and img_ids.max() < 8 * (n + pair_img.size) + (
            1 << 20):
        lut = np.full(int(img_ids.max()) + 1, -1, dtype=np.int64)
        lut[img_ids] = np.arange(n, dtype=np.int64)
        inside = (pair_img >= 0) & (pair_img < lut.shape[0])
        index = np.full(pair_img.shape[0], -1, dtype=np.int64)
        index[inside] = lut[pair_img[inside]]
        keep = index >= 0
    else:
        order = np.argsort(img_ids, kind='stable')
        sorted_ids = img_ids[order]
        pos = np.searchsorted(sorted_ids, pair_img)
        pos_c = np.minimum(pos, n - 1)
        keep = sorted_ids[pos_c] == pair_img
        index = order[pos_c]
    return index[keep], pair_cat[keep], f'annotation index ({how})'


def _supports_annotation_pairs(dataset) -> bool:
    try:
        from mmdet.datasets import BaseDetDataset
    except ImportError:  # mmdet is a hard dependency; be explicit anyway
        return False
    return (isinstance(dataset, BaseDetDataset)
            and type(dataset).get_cat_ids is BaseDetDataset.get_cat_ids
            and isinstance(getattr(dataset, 'cat_img_map', None), dict)
            and hasattr(dataset, 'cat_ids')
            and getattr(dataset, '_fully_initialized', False))


def _get_cat_ids_pairs(dataset) -> Tuple[np.ndarray, np.ndarray, str]:
    lists = [dataset.get_cat_ids(i) for i in range(len(dataset))]
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    cats = np.fromiter(
        itertools.chain.from_iterable(lists),
        dtype=np.int64,
        count=int(lengths.sum()))
    img = np.repeat(np.arange(len(lists), dtype=np.int64), lengths)
    return img, cats, 'get_cat_ids'


def dataset_repeat_factors(dataset: Sized,
                           repeat_thr: float,
                           sqrt: bool = True,
                           category_source: str = 'auto'
                           ) -> Tuple[RepeatFactors, str]:
    """Repeat factors of every index of ``dataset``.

    Args:
        dataset: A fully loaded dataset with ``get_cat_ids(idx)``.
        repeat_thr (float): The threshold ``t``.
        sqrt (bool): Square-root rule. Defaults to True.
        category_source (str): Where an image's categories come from:

            * ``'annotations'``: the dataset's loaded annotation index
              (``cat_img_map`` of mmdet's COCO/LVIS datasets), joined to
              dataset indices by ``img_id``; no per-image unpickling. These
              are the categories of the image's annotations in the file, as
              in the LVIS paper, detectron2 and mmdet 2.x.
            * ``'get_cat_ids'``: ``dataset.get_cat_ids(i)`` for every index,
              what mmengine's ``ClassBalancedDataset`` uses. mmdet 3.x's
              parser drops some annotations (``ignore``, boxes under 1 px or
              outside the image), so the two can differ for images whose
              only annotation of a category was dropped.
            * ``'auto'`` (default): ``'annotations'`` where the dataset
              supports it, else ``'get_cat_ids'``.

    Returns:
        tuple: ``(RepeatFactors, description of the source used)``. Labels
        of the ``'get_cat_ids'`` source are mmdet's contiguous labels; those
        of ``'annotations'`` are file category ids.
    """
    if category_source not in CATEGORY_SOURCES:
        raise ValueError(f'category_source must be one of {CATEGORY_SOURCES}'
                         f', got {category_source!r}')
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    use_bulk = category_source == 'annotations' or (
        category_source == 'auto' and _supports_annotation_pairs(dataset))
    if category_source == 'annotations' and not _supports_annotation_pairs(
            dataset):
        raise ValueError(
            f'{type(dataset).__name__} has no loaded annotation index '
            "(cat_img_map of mmdet's CocoDataset/LVISDataset with the stock "
            "get_cat_ids); use category_source='get_cat_ids'")
    if use_bulk:
        img, cats, how = _annotation_pairs(dataset)
        order = np.argsort(cats, kind='stable')
        return repeat_factors_from_pairs(
            img[order],
            cats[order],
            num_images=len(dataset),
            repeat_thr=repeat_thr,
            sqrt=sqrt,
            grouped_by='category'), how
    if not hasattr(dataset, 'get_cat_ids'):
        raise TypeError(f'{type(dataset).__name__} has no get_cat_ids(idx); '
                        'repeat-factor sampling needs the categories of '
                        'every image')
    img, cats, how = _get_cat_ids_pairs(dataset)
    return repeat_factors_from_pairs(
        img,
        cats,
        num_images=len(dataset),
        repeat_thr=repeat_thr,
        sqrt=sqrt,
        grouped_by='image'), how


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch)``."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(
        1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


@DATA_SAMPLERS.register_module()
class RepeatFactorSampler(Sampler):
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
    replays exactly.

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
            ``'get_cat_ids'``; see :func:`dataset_repeat_factors`. Defaults
            to ``'auto'``.
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
        rank, world_size = get_dist_info()
        self.rank = rank
        self.world_size = world_size
        self.dataset = dataset
        self.repeat_thr = repeat_thr
        self.sqrt = sqrt
        self.shuffle = shuffle
        self.rounding = rounding
        self.infinite = infinite
        self.round_up = round_up
        if seed is None:
            seed = sync_random_seed()
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
                or seed < 0:
            raise ValueError(f'seed must be a non-negative int or None, got '
                             f'{seed!r}')
        self.seed = int(seed)
        self.epoch = 0

        tic = time.perf_counter()
        factors, how = dataset_repeat_factors(dataset, repeat_thr, sqrt,
                                              category_source)
        self.build_time = time.perf_counter() - tic
        self.factor_info = factors
        self.category_source_used = how
        self.repeat_factors = torch.from_numpy(factors.image.copy())
        self._int_part = torch.floor(self.repeat_factors)
        self._frac_part = self.repeat_factors - self._int_part
        self._cached: Optional[Tuple[int, torch.Tensor]] = None
        if self.rank == 0:
            self._log_summary()

    # ------------------------------------------------------------ epochs --
    def _repeats(self, generator: torch.Generator) -> torch.Tensor:
        if self.rounding == 'ceil':
            return torch.ceil(self.repeat_factors).long()
        draw = torch.rand(
            self._frac_part.shape, generator=generator, dtype=torch.float64)
        return (self._int_part + (draw < self._frac_part)).long()

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """The whole (unsharded, unpadded) index stream of ``epoch``.

        Depends only on ``(seed, epoch)``.

        Returns:
            Tensor: ``(L,)`` int64 dataset indices.
        """
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        g = torch.Generator()
        g.manual_seed(_epoch_seed(self.seed, epoch))
        reps = self._repeats(g)
        # np.repeat: torch.repeat_interleave costs milliseconds even on
        # tiny inputs when intra-op threads are contended
        indices = torch.from_numpy(
            np.repeat(np.arange(reps.shape[0], dtype=np.int64),
                      reps.numpy()))
        if self.shuffle:
            indices = indices[torch.randperm(indices.shape[0], generator=g)]
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
            MMLogger.get_current_instance().info(
                f'RepeatFactorSampler: epoch {self.epoch} draws '
                f'{stream.shape[0]} samples from {len(self.repeat_factors)} '
                f'images ({self.world_size} rank(s), {len(self)} per rank)')
        return iter(self._rank_share(stream).tolist())

    def __len__(self) -> int:
        """This rank's number of indices in the current epoch.

        With stochastic rounding the epoch length varies slightly from epoch
        to epoch; it is exact for the epoch last passed to ``set_epoch``.
        In infinite mode, this rank's share of the current epoch.
        """
        total = int(self.epoch_indices(self.epoch).shape[0])
        if self.round_up and not self.infinite:
            return math.ceil(total / self.world_size)
        return len(range(self.rank, total, self.world_size))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose stream the next ``iter()`` yields."""
        self.epoch = int(epoch)

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
