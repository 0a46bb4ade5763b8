"""Repeat factors of repeat-factor sampling (RFS), vectorized.

LVIS (Gupta et al., "LVIS: A Dataset for Large Vocabulary Instance
Segmentation", CVPR 2019, appendix B.2) defines, for a threshold ``t``:

* ``f(c)``: the fraction of training images that contain category ``c``;
* ``r(c) = max(1, sqrt(t / f(c)))`` (``max(1, t / f(c))`` without the
  square root);
* ``r(I) = max_{c in I} r(c)``, and 1 for an image without annotations.

Everything here works on flat ``(image, category)`` pair arrays, so the cost is
a handful of NumPy passes over the pairs instead of a Python loop per image.
"""
import itertools
import numbers
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

# Entries of the scratch table used to deduplicate (image, category) pairs.
_DEDUP_TABLE_SIZE = 1 << 20


@dataclass(frozen=True)
class RepeatFactors:
    """Image and category repeat factors of one dataset.

    Attributes:
        image (np.ndarray): ``(N,)`` float64 ``r(I)``, one per image, in
            dataset order.
        category (np.ndarray): ``(K,)`` float64 ``r(c)`` of the categories
            that occur in at least one image, in ``category_ids`` order.
        category_ids (np.ndarray): ``(K,)`` int64 ids of those categories,
            ascending.
        image_count (np.ndarray): ``(K,)`` int64 number of images containing
            each category.
        num_images (int): ``N``, the denominator of ``f(c)``.
    """
    image: np.ndarray
    category: np.ndarray
    category_ids: np.ndarray
    image_count: np.ndarray
    num_images: int


def _check_threshold(repeat_thr: float) -> float:
    if isinstance(repeat_thr, bool) or not isinstance(
            repeat_thr, numbers.Real) or not np.isfinite(repeat_thr) or \
            repeat_thr <= 0:
        raise ValueError(
            f'repeat_thr must be a finite number > 0, got {repeat_thr!r}')
    return float(repeat_thr)


def _dense_labels(cat: np.ndarray):
    """Category ids -> labels ``0..K-1`` as a contiguous int64 array.

    Small non-negative ids are used as they are (absent ids then simply get a
    zero image count); other ids are ranked with ``np.unique``.

    Returns:
        tuple: ``(labels, K, unique_ids)``, ``unique_ids`` None when the ids
        are their own labels.
    """
    cmin, cmax = int(cat.min()), int(cat.max())
    if cmin >= 0 and cmax < 4 * cat.size + (1 << 16):
        return cat, cmax + 1, None
    uniq, label = np.unique(cat, return_inverse=True)
    label = np.ascontiguousarray(label.reshape(-1), dtype=np.int64)
    return label, int(uniq.shape[0]), uniq


def _first_of_each_pair(major: np.ndarray, minor: np.ndarray,
                        minor_size: int) -> np.ndarray:
    """Mask selecting exactly one element of every distinct (major, minor).

    ``major`` must be non-decreasing (pairs grouped by ``major``). Pairs are
    processed in blocks of consecutive ``major`` values whose dense
    ``(major, minor)`` cells fit in a fixed scratch table: every pair writes
    its position into its cell, and the pair whose position survives is the
    representative. Which duplicate wins does not matter, so the result does
    not depend on NumPy's (unspecified) order of repeated fancy assignment.
    Cost: two passes of scattered access over the pairs, no sort.

    Args:
        major (np.ndarray): ``(M,)`` int64, non-decreasing, >= 0.
        minor (np.ndarray): ``(M,)`` int64 in ``[0, minor_size)``.
        minor_size (int): Upper bound of ``minor``.

    Returns:
        np.ndarray: ``(M,)`` bool.
    """
    num = major.shape[0]
    keep = np.zeros(num, dtype=bool)
    if num == 0:
        return keep
    minor_size = max(int(minor_size), 1)
    block = max(1, _DEDUP_TABLE_SIZE // minor_size)
    small = num < np.iinfo(np.int32).max
    pos_dtype = np.int32 if small else np.int64
    table = np.empty(block * minor_size, dtype=pos_dtype)
    pos = np.arange(num, dtype=pos_dtype)
    cell = major * minor_size
    cell += minor
    lo_major = int(major[0])
    hi_major = int(major[-1])
    if hi_major - lo_major < block:
        bounds = np.array([0, num])
    else:
        bounds = np.searchsorted(
            major,
            np.arange(lo_major, hi_major + block + 1, block),
            side='left')
    for b in range(len(bounds) - 1):
        s, e = int(bounds[b]), int(bounds[b + 1])
        if s == e:
            continue
        c = cell[s:e]
        c -= (lo_major + b * block) * minor_size
        p = pos[s:e]
        table[c] = p
        np.equal(table[c], p, out=keep[s:e])
    return keep


def repeat_factors_from_pairs(image_index: np.ndarray,
                              category_ids: np.ndarray,
                              num_images: int,
                              repeat_thr: float,
                              sqrt: bool = True,
                              grouped_by: str = 'image',
                              _checked: bool = False) -> RepeatFactors:
    """Repeat factors from flat ``(image, category)`` pairs.

    Pairs may repeat (one per instance); an image is counted once per
    category.

    Args:
        image_index (np.ndarray): ``(M,)`` integer image positions in
            ``[0, num_images)``.
        category_ids (np.ndarray): ``(M,)`` integer category ids (any ints).
        num_images (int): Number of images ``N``, including images that appear
            in no pair (they get ``r(I) = 1``).
        repeat_thr (float): The threshold ``t``.
        sqrt (bool): ``r(c) = max(1, sqrt(t / f(c)))`` if True, else
            ``max(1, t / f(c))``. Defaults to True.
        grouped_by (str): ``'image'`` if ``image_index`` is non-decreasing,
            ``'category'`` if the pairs are grouped by category id (sorted
            ascending). Anything else is sorted here first. Defaults to
            ``'image'``.

    Returns:
        RepeatFactors: Image and category factors.
    """
    thr = _check_threshold(repeat_thr)
    num_images = int(num_images)
    if num_images < 0:
        raise ValueError(f'num_images must be >= 0, got {num_images}')
    img = np.asarray(image_index, dtype=np.int64).reshape(-1)
    cat = np.asarray(category_ids, dtype=np.int64).reshape(-1)
    if img.shape != cat.shape:
        raise ValueError(f'image_index has {img.shape[0]} entries but '
                         f'category_ids has {cat.shape[0]}')
    image_factors = np.ones(num_images, dtype=np.float64)
    if img.size == 0:
        empty_i = np.zeros(0, dtype=np.int64)
        return RepeatFactors(image_factors, np.zeros(0, np.float64), empty_i,
                             empty_i.copy(), num_images)
    if not _checked and (int(img.min()) < 0
                         or int(img.max()) >= num_images):
        raise ValueError(
            f'image_index must lie in [0, {num_images}), got values in '
            f'[{int(img.min())}, {int(img.max())}]')

    label, num_cats, uniq = _dense_labels(cat)

    by_image = grouped_by == 'image' and (_checked or not (
        img.size > 1 and bool(np.any(img[1:] < img[:-1]))))
    if grouped_by == 'category':
        if cat.size > 1 and bool(np.any(cat[1:] < cat[:-1])):
            raise ValueError('grouped_by="category" needs pairs sorted by '
                             'category id')
        first = _first_of_each_pair(label, img, num_images)
    else:
        if not by_image:
            order = np.argsort(img, kind='stable')
            img, label = img[order], label[order]
            by_image = True
        first = _first_of_each_pair(img, label, num_cats)

    image_count = np.bincount(label[first], minlength=num_cats)
    cat_factors = _category_factors(image_count, num_images, thr, sqrt)
    pair_factors = cat_factors[label]
    if by_image:
        # pairs are contiguous per image: a segmented max
        starts = np.flatnonzero(np.r_[True, img[1:] != img[:-1]])
        image_factors[img[starts]] = np.maximum.reduceat(pair_factors, starts)
    else:
        np.maximum.at(image_factors, img, pair_factors)
    if uniq is None:
        uniq = np.flatnonzero(image_count)
        cat_factors = cat_factors[uniq]
        image_count = image_count[uniq]
    else:
        uniq = uniq.astype(np.int64)
    return RepeatFactors(image_factors, cat_factors, uniq,
                         image_count.astype(np.int64), num_images)


def _flatten(image_cat_ids: Sequence[Iterable[int]]):
    lengths = np.fromiter(
        map(len, image_cat_ids), dtype=np.int64, count=len(image_cat_ids))
    total = int(lengths.sum())
    first: Optional[object] = None
    for ids in image_cat_ids:
        if len(ids):
            first = next(iter(ids))
            break
    if first is not None and (isinstance(first, (bool, np.bool_)) or
                              not isinstance(first,
                                             (numbers.Integral, np.integer))):
        raise TypeError('image_cat_ids must hold integer category ids, got '
                        f'{type(first).__name__} ({first!r})')
    try:
        flat = np.fromiter(
            itertools.chain.from_iterable(image_cat_ids),
            dtype=np.int64,
            count=total)
    except (TypeError, ValueError, OverflowError) as e:
        raise TypeError('image_cat_ids must be a sequence of sequences of '
                        f'integer category ids: {e}') from e
    return lengths, flat


def _category_factors(image_count: np.ndarray, num_images: int, thr: float,
                      sqrt: bool) -> np.ndarray:
    """``r(c)`` from per-category image counts (inf where a count is 0)."""
    with np.errstate(divide='ignore'):
        # same operation order as mmengine/detectron2 (t / (n_c / N)), so
        # factors that are exact integers round identically under ceil
        ratio = thr / (image_count.astype(np.float64) / float(num_images))
    return np.maximum(1.0, np.sqrt(ratio) if sqrt else ratio)


def _check_image_cat_ids(image_cat_ids) -> None:
    if isinstance(image_cat_ids, (str, bytes)) or not hasattr(
            image_cat_ids, '__len__'):
        raise TypeError('image_cat_ids must be a sequence with one sequence '
                        'of category ids per image')


def compute_repeat_factors(image_cat_ids: Sequence[Iterable[int]],
                           repeat_thr: float,
                           sqrt: bool = True) -> np.ndarray:
    """Per-image repeat factors of LVIS's repeat-factor sampling.

    Implements appendix B.2 of Gupta et al., "LVIS: A Dataset for Large
    Vocabulary Instance Segmentation" (CVPR 2019): with ``f(c)`` the fraction
    of images containing category ``c``, ``r(c) = max(1, sqrt(t / f(c)))``
    (``max(1, t / f(c))`` when ``sqrt=False``) and ``r(I)`` the maximum of
    ``r(c)`` over the categories of image ``I``; images without annotations
    keep ``r(I) = 1`` and their position.

    Args:
        image_cat_ids (Sequence[Sequence[int]]): ``N`` sequences of integer
            category ids, one per image, in dataset order. Repeated ids (one
            per instance) are fine; ids need not be contiguous.
        repeat_thr (float): The threshold ``t`` (LVIS uses ``1e-3``).
        sqrt (bool): Use the square root. Defaults to True.

    Returns:
        np.ndarray: ``(N,)`` float64 repeat factors, each ``>= 1``.

    Example:
        >>> compute_repeat_factors([[1], [1, 2], [], [1]], repeat_thr=0.5)
        array([1., 1.41421356, 1., 1.])
    """
    thr = _check_threshold(repeat_thr)
    _check_image_cat_ids(image_cat_ids)
    lengths, flat = _flatten(image_cat_ids)
    img = np.repeat(np.arange(lengths.shape[0], dtype=np.int64), lengths)
    return repeat_factors_from_pairs(
        img,
        flat,
        num_images=lengths.shape[0],
        repeat_thr=thr,
        sqrt=sqrt,
        grouped_by='image',
        _checked=True).image
