"""The categories of every image of a dataset, in the dataset's index order.

Image-level samplers (repeat-factor sampling, class-aware sampling) all need
the same fact: which classes appear in the image that dataset index ``i``
serves. :func:`image_categories` gathers it once, for any mmdet dataset and
mmengine's dataset wrappers, and returns an :class:`ImageCategories`: dense
per-image label arrays (a CSR layout) plus the ``img_id`` of each index.

Two sources, selected by ``source``:

* ``'annotations'``: the loaded annotation index of mmdet's ``CocoDataset`` /
  ``LVISDataset`` family (``cat_img_map``: category id -> image id, one entry
  per annotation), joined to dataset indices by ``img_id``. These are the
  categories of the image's annotations in the file, as in the LVIS paper,
  detectron2 and mmdet 2.x. Images the dataset filtered out
  (``filter_empty_gt``, ``min_size``, ``indices``) drop out of the join.
* ``'get_cat_ids'``: ``dataset.get_cat_ids(i)`` for every index, what
  mmengine's ``ClassBalancedDataset`` uses. mmdet 3.x's parser drops some
  annotations (``ignore``, boxes under 1 px or outside the image), so the two
  can differ for an image whose only annotation of a class was dropped.
* ``'auto'`` (default): ``'annotations'`` where the dataset has the index,
  else ``'get_cat_ids'``.

Supported datasets:

* mmdet ``BaseDetDataset`` subclasses (both sources; ``'annotations'`` needs
  ``cat_img_map``, ``cat_ids``, ``cat2label`` and the stock ``get_cat_ids``);
* any sized dataset with ``get_cat_ids(idx)`` returning labels
  (``'get_cat_ids'`` only; ``img_ids`` is read from ``get_data_info(idx)``
  when the dataset has it);
* mmengine's ``ConcatDataset`` (also mmdet's), ``RepeatDataset`` and
  ``ClassBalancedDataset``, wrapping any of the above (also nested): each
  wrapped dataset is read with ``source``, then the results are concatenated,
  tiled or indexed the way the wrapper maps its indices.

Anything else (a ``torch.utils.data.Subset``, mmdet's
``MultiImageMixDataset``) raises ``TypeError``.
"""
import itertools
from dataclasses import dataclass
from typing import Optional, Sequence, Sized, Tuple

import numpy as np

SOURCES = ('auto', 'annotations', 'get_cat_ids')


@dataclass(frozen=True)
class ImageCategories:
    """Distinct class labels of each image of a dataset, in index order.

    The labels of dataset index ``i`` are
    ``labels[offsets[i]:offsets[i + 1]]``: distinct, ascending, contiguous
    labels in ``[0, num_classes)`` (mmdet's ``bbox_label``, the position of
    the class in ``metainfo['classes']``). An image without annotations has
    an empty slice.

    Attributes:
        offsets (np.ndarray): ``(N + 1,)`` int64, non-decreasing, from 0.
        labels (np.ndarray): ``(M,)`` int64, ``M = offsets[-1]``.
        num_classes (int): ``C``, the size of the label space.
        img_ids (np.ndarray, optional): ``(N,)`` int64 ``img_id`` of each
            index, or None when the dataset does not record one. Within a
            ``ConcatDataset`` ids are those of each part's own file and may
            repeat across parts.
        source (str): Where the categories came from, for logs.
    """
    offsets: np.ndarray
    labels: np.ndarray
    num_classes: int
    img_ids: Optional[np.ndarray]
    source: str

    @property
    def num_images(self) -> int:
        """``N``, the length of the dataset."""
        return int(self.offsets.shape[0]) - 1

    def labels_of(self, index: int) -> np.ndarray:
        """``(k,)`` int64 distinct labels of dataset index ``index``."""
        if not 0 <= index < self.num_images:
            raise IndexError(f'index {index} is outside [0, '
                             f'{self.num_images})')
        return self.labels[self.offsets[index]:self.offsets[index + 1]]

    def image_index(self) -> np.ndarray:
        """``(M,)`` int64 dataset index of each entry of ``labels``
        (non-decreasing): the flat ``(image, label)`` pairs are
        ``(image_index(), labels)``."""
        return np.repeat(
            np.arange(self.num_images, dtype=np.int64), np.diff(self.offsets))

    def image_count(self) -> np.ndarray:
        """``(C,)`` int64 number of images that contain each class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def images_per_class(self) -> Tuple[np.ndarray, np.ndarray]:
        """The images of each class, in a CSR layout.

        Returns:
            tuple: ``(class_offsets, images)``, ``(C + 1,)`` and ``(M,)``
            int64; the dataset indices of the images containing class ``c``
            are ``images[class_offsets[c]:class_offsets[c + 1]]``, ascending.
        """
        order = np.argsort(self.labels, kind='stable')
        class_offsets = np.zeros(self.num_classes + 1, dtype=np.int64)
        np.cumsum(self.image_count(), out=class_offsets[1:])
        return class_offsets, self.image_index()[order]

    def take(self, indices: np.ndarray, source: Optional[str] = None
             ) -> 'ImageCategories':
        """The categories of a dataset whose index ``j`` serves this
        dataset's index ``indices[j]`` (a repeated or re-indexed view)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0
                             or indices.max() >= self.num_images):
            raise ValueError(
                f'indices must lie in [0, {self.num_images}), got values in '
                f'[{int(indices.min())}, {int(indices.max())}]')
        lengths = np.diff(self.offsets)[indices]
        offsets = np.zeros(indices.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # position of every taken label in self.labels
        within = np.arange(offsets[-1], dtype=np.int64) - np.repeat(
            offsets[:-1], lengths)
        pos = np.repeat(self.offsets[:-1][indices], lengths) + within
        return ImageCategories(
            offsets=offsets,
            labels=self.labels[pos],
            num_classes=self.num_classes,
            img_ids=None if self.img_ids is None else self.img_ids[indices],
            source=self.source if source is None else source)


def from_pairs(image_index: np.ndarray,
               labels: np.ndarray,
               num_images: int,
               num_classes: int,
               img_ids: Optional[np.ndarray] = None,
               source: str = 'pairs') -> ImageCategories:
    """:class:`ImageCategories` from flat ``(image, label)`` pairs.

    Pairs may come in any order and repeat (one per instance).

    Args:
        image_index (np.ndarray): ``(P,)`` integer dataset indices in
            ``[0, num_images)``.
        labels (np.ndarray): ``(P,)`` integer labels in ``[0, num_classes)``.
        num_images (int): ``N``, including images in no pair.
        num_classes (int): ``C``.
        img_ids (np.ndarray, optional): ``(N,)`` ``img_id`` per index.
        source (str): Description for logs.

    Raises:
        ValueError: On shapes that disagree or values out of range.
    """
    img = np.asarray(image_index, dtype=np.int64).reshape(-1)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    num_images, num_classes = int(num_images), int(num_classes)
    if img.shape != lab.shape:
        raise ValueError(f'image_index has {img.shape[0]} entries but labels '
                         f'has {lab.shape[0]}')
    if num_images < 0 or num_classes < 0:
        raise ValueError(f'num_images and num_classes must be >= 0, got '
                         f'{num_images} and {num_classes}')
    if img.size and (img.min() < 0 or img.max() >= num_images):
        raise ValueError(
            f'image_index must lie in [0, {num_images}), got values in '
            f'[{int(img.min())}, {int(img.max())}]')
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        bad = lab[(lab < 0) | (lab >= num_classes)]
        raise ValueError(
            f'labels must lie in [0, num_classes={num_classes}), got '
            f'{bad[:10].tolist()} ({source})')
    if img_ids is not None:
        img_ids = np.asarray(img_ids, dtype=np.int64).reshape(-1)
        if img_ids.shape[0] != num_images:
            raise ValueError(f'{img_ids.shape[0]} img_ids for {num_images} '
                             'images')
    # one sort groups the pairs by image, labels ascending inside an image
    key = np.unique(img * max(num_classes, 1) + lab)
    img, lab = np.divmod(key, max(num_classes, 1))
    offsets = np.zeros(num_images + 1, dtype=np.int64)
    np.cumsum(np.bincount(img, minlength=num_images), out=offsets[1:])
    return ImageCategories(offsets, lab, num_classes, img_ids, source)


# ------------------------------------------------------------- datasets --


def _is_wrapper(dataset, name: str) -> bool:
    from mmengine import dataset as mmengine_dataset
    return isinstance(dataset, getattr(mmengine_dataset, name))


def _has_stock_get_cat_ids(dataset) -> bool:
    from mmdet.datasets import BaseDetDataset
    return (isinstance(dataset, BaseDetDataset)
            and type(dataset).get_cat_ids is BaseDetDataset.get_cat_ids)


def _has_annotation_index(dataset) -> bool:
    return (_has_stock_get_cat_ids(dataset)
            and isinstance(getattr(dataset, 'cat_img_map', None), dict)
            and isinstance(getattr(dataset, 'cat2label', None), dict)
            and hasattr(dataset, 'cat_ids'))


def _num_classes(dataset, found: int) -> int:
    """``len(metainfo['classes'])``, or ``found`` (max label + 1) for a
    dataset that declares no classes."""
    classes = getattr(dataset, 'metainfo', {}).get('classes')
    return len(classes) if classes else found


def dataset_img_ids(dataset: Sized) -> Optional[np.ndarray]:
    """``(N,)`` int64 ``img_id`` of each index of a loaded mmengine dataset
    (``get_data_info(i)['img_id']``), or None without ``get_data_info``. A
    dataset with an ``index_img_ids()`` method (mmlongtail's LVIS-format
    datasets) answers it directly, without building its items.

    Serialized datasets unpickle each item here: about 0.4 s per 20k
    LVIS-like images (see ``tools/benchmark_repeat_factors.py``).
    """
    index_img_ids = getattr(dataset, 'index_img_ids', None)
    if callable(index_img_ids):  # mmlongtail's LVIS-format datasets
        return np.asarray(index_img_ids(), dtype=np.int64)
    if not hasattr(dataset, 'get_data_info'):
        return None
    n = len(dataset)
    if n and 'img_id' not in dataset.get_data_info(0):
        return None
    return np.fromiter((dataset.get_data_info(i)['img_id'] for i in range(n)),
                       dtype=np.int64,
                       count=n)


def _from_annotation_index(dataset) -> ImageCategories:
    img_ids = dataset_img_ids(dataset)
    n = len(dataset)
    if img_ids is None:
        raise ValueError(f'{type(dataset).__name__} items hold no img_id')
    if np.unique(img_ids).shape[0] != n:
        raise ValueError(f'{type(dataset).__name__} holds an img_id more '
                         'than once; its annotation index cannot be matched '
                         "to indices (use source='get_cat_ids')")
    cat_ids = [int(c) for c in dataset.cat_ids]
    lists = [dataset.cat_img_map.get(c, ()) for c in cat_ids]
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    pair_img = np.fromiter(
        itertools.chain.from_iterable(lists),
        dtype=np.int64,
        count=int(lengths.sum()))
    pair_label = np.repeat(
        np.array([dataset.cat2label[c] for c in cat_ids], dtype=np.int64),
        lengths)
    # img_id -> dataset index; ids of images the dataset dropped match none
    order = np.argsort(img_ids, kind='stable')
    sorted_ids = img_ids[order]
    pos = np.minimum(np.searchsorted(sorted_ids, pair_img), max(n - 1, 0))
    if n:
        keep = sorted_ids[pos] == pair_img
    else:
        keep = np.zeros(pair_img.shape[0], dtype=bool)
    return from_pairs(
        order[pos[keep]],
        pair_label[keep],
        num_images=n,
        num_classes=_num_classes(dataset, len(dataset.cat2label)),
        img_ids=img_ids,
        source='annotation index')


def _from_get_cat_ids(dataset) -> ImageCategories:
    if not hasattr(dataset, 'get_cat_ids'):
        raise TypeError(
            f'{type(dataset).__name__} has no get_cat_ids(idx) and is not a '
            'ConcatDataset, RepeatDataset or ClassBalancedDataset; the '
            'categories of its images cannot be read')
    n = len(dataset)
    img_ids: Optional[np.ndarray]
    if _has_stock_get_cat_ids(dataset):
        # one pass: BaseDetDataset.get_cat_ids(i) is the bbox_label of each
        # instance of get_data_info(i), which also holds the img_id
        img_ids = np.empty(n, dtype=np.int64)
        lists = []
        for i in range(n):
            info = dataset.get_data_info(i)
            img_ids[i] = info['img_id']
            lists.append([inst['bbox_label'] for inst in info['instances']])
    else:
        lists = [dataset.get_cat_ids(i) for i in range(n)]
        img_ids = dataset_img_ids(dataset)
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=n)
    try:
        labels = np.fromiter(
            itertools.chain.from_iterable(lists),
            dtype=np.int64,
            count=int(lengths.sum()))
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f'{type(dataset).__name__}.get_cat_ids must return '
                         f'integer labels: {e}') from e
    found = int(labels.max()) + 1 if labels.size else 0
    return from_pairs(
        np.repeat(np.arange(n, dtype=np.int64), lengths),
        labels,
        num_images=n,
        num_classes=_num_classes(dataset, found),
        img_ids=img_ids,
        source='get_cat_ids')


def _concat(parts: Sequence[ImageCategories]) -> ImageCategories:
    num_classes = {p.num_classes for p in parts}
    if len(num_classes) > 1:
        raise ValueError('the parts of a ConcatDataset have different numbers '
                         f'of classes: {[p.num_classes for p in parts]}')
    offsets = [np.zeros(1, dtype=np.int64)]
    total = 0
    for p in parts:
        offsets.append(p.offsets[1:] + total)
        total += int(p.offsets[-1])
    has_ids = all(p.img_ids is not None for p in parts)
    return ImageCategories(
        offsets=np.concatenate(offsets),
        labels=np.concatenate([np.zeros(0, np.int64)] +
                              [p.labels for p in parts]),
        num_classes=num_classes.pop() if num_classes else 0,
        img_ids=np.concatenate([np.zeros(0, np.int64)] +
                               [p.img_ids for p in parts])
        if has_ids else None,
        source='ConcatDataset of [' + ', '.join(p.source
                                                 for p in parts) + ']')


def _gather(dataset, source: str) -> ImageCategories:
    name = type(dataset).__name__
    if _is_wrapper(dataset, 'ConcatDataset'):
        return _concat([_gather(d, source) for d in dataset.datasets])
    if _is_wrapper(dataset, 'RepeatDataset'):
        inner = _gather(dataset.dataset, source)
        index = np.tile(
            np.arange(inner.num_images, dtype=np.int64), dataset.times)
        return inner.take(index, f'{name}(times={dataset.times}) of '
                          f'{inner.source}')
    if _is_wrapper(dataset, 'ClassBalancedDataset'):
        inner = _gather(dataset.dataset, source)
        return inner.take(
            np.asarray(dataset.repeat_indices, dtype=np.int64),
            f'{name} of {inner.source}')
    indexed = _has_annotation_index(dataset)
    if source == 'annotations' and not indexed:
        raise ValueError(
            f'{name} has no loaded annotation index (cat_img_map, cat_ids '
            "and cat2label of mmdet's CocoDataset/LVISDataset with the stock "
            "get_cat_ids); use source='get_cat_ids'")
    if source != 'get_cat_ids' and indexed:
        return _from_annotation_index(dataset)
    return _from_get_cat_ids(dataset)


def image_categories(dataset: Sized, source: str = 'auto') -> ImageCategories:
    """The distinct class labels of every index of ``dataset``.

    Loads the dataset first (``full_init``) if it is lazily initialized.

    Args:
        dataset (Sized): An mmdet dataset, a dataset with
            ``get_cat_ids(idx)``, or an mmengine wrapper of those (see the
            module docstring).
        source (str): ``'auto'``, ``'annotations'`` or ``'get_cat_ids'``
            (see the module docstring). Defaults to ``'auto'``.

    Returns:
        ImageCategories: Labels per dataset index, with ``img_ids``.

    Raises:
        ValueError: For an unknown ``source``, ``'annotations'`` on a
            dataset without the index, repeated ``img_id``s, labels outside
            ``[0, len(classes))``, or ConcatDataset parts with different
            class counts.
        TypeError: For a dataset this module cannot read.

    Example:
        >>> cats = image_categories(dataset)
        >>> cats.labels_of(0)            # classes in the image of index 0
        >>> offsets, images = cats.images_per_class()
    """
    if source not in SOURCES:
        raise ValueError(f'source must be one of {SOURCES}, got {source!r}')
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    return _gather(dataset, source)
