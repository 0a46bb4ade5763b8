"""Per-category statistics of a training set, the one input of every
frequency-aware method (EQL, BAGS, repeat-factor sampling, analysis tools).

Two file kinds are accepted:

* an LVIS-, COCO- or V3Det-format annotation file (``images``,
  ``annotations``, ``categories``). Where categories carry LVIS's
  ``image_count`` / ``instance_count`` / ``frequency`` they are used; where
  they do not, the counts are taken from the annotations and the frequency
  group follows LVIS's rule (rare: 1-10 images, common: 11-100, frequent:
  >100), and :attr:`CategoryStats.frequency_from` says so. V3Det (Wang et
  al., ICCV 2023) is such a file: its categories carry ``name``,
  ``name_zh``, ``cat_info``, ``cat_info_gpt``, ``novel`` and ``id``, no
  counts, and the dataset defines no frequency groups (its protocol is COCO
  AP; ``novel`` is the open-vocabulary split), so its r/c/f are this
  package's convention, not V3Det's.
* the compact stats JSON that :func:`dump_category_stats` writes and that ships
  with the package for LVIS v1 train::

      {"num_images": 99388,
       "frequency_from": "file",   # optional; see FREQUENCY_FROM
       "num_images_listed": 100170,  # optional; FRACAL's frequency term
       "categories": [{"id": 1, "name": "aerosol_can", "frequency": "c",
                       "image_count": 64, "instance_count": 109,
                       "fractal_dimension": 1.8077}, ...]}

  ``num_images_listed`` (every image the annotation file lists, with or
  without annotations) and the per-category ``fractal_dimension`` of box
  locations (:mod:`mmlongtail.datasets.fractal_dimension`) are optional:
  only FRACAL needs them, and asks for them with
  ``load_category_stats(..., fractal_dimension=True)``, which computes them
  from an annotation file and refuses a stats JSON without them.

The label of a category is its position when categories are sorted by id,
which is what mmdet's ``cat2label`` produces for LVIS and COCO.
"""
import dataclasses
import json
import numbers
import os
import os.path as osp
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .category_ids import category_labels
from .fractal_dimension import fractal_dimensions

#: Short names of the statistics that ship with the package.
PACKAGED_STATS: Dict[str, str] = {
    'lvis_v1': 'lvis_v1_train_category_stats.json',
    'lvis_v1_train': 'lvis_v1_train_category_stats.json',
}

#: LVIS's frequency rule on training image counts (Gupta et al., 2019):
#: rare <= 10 images, common <= 100, frequent otherwise.
LVIS_RARE_MAX = 10
LVIS_COMMON_MAX = 100

FREQUENCY_GROUPS = ('r', 'c', 'f')

#: Where :attr:`CategoryStats.frequency` came from: the file's own
#: ``frequency`` fields (LVIS), or LVIS's rule applied here to image counts
#: (a file without them: COCO, V3Det).
FREQUENCY_FROM = ('file', 'lvis_rule')


def frequency_group(image_count: int,
                    rare_max: int = LVIS_RARE_MAX,
                    common_max: int = LVIS_COMMON_MAX) -> str:
    """LVIS's r/c/f group of a category from its training image count."""
    if image_count <= rare_max:
        return 'r'
    if image_count <= common_max:
        return 'c'
    return 'f'


def check_num_classes(num_classes: Any,
                      owner: str,
                      expected: Optional[int] = None,
                      expected_from: str = 'the head has num_classes={}',
                      owner_verb: str = 'was built with',
                      hint: str = '') -> int:
    """The one ``num_classes`` check of the package (losses, heads, category
    statistics and the scorers all call it).

    Args:
        num_classes: The value to check; must be a positive int.
        owner (str): Who checks (named in the message).
        expected (int, optional): The number it must equal.
        expected_from (str): Where ``expected`` comes from, a clause with
            ``{}`` for the number (e.g. ``'the head has num_classes={}'``).
        owner_verb (str): How ``owner`` holds ``num_classes`` in the message
            (``'was built with'``, ``'has'``).
        hint (str): The fix, appended to the mismatch message.

    Returns:
        int: ``num_classes``.

    Raises:
        ValueError: Not a positive int, or not ``expected`` (naming both).
    """
    if (isinstance(num_classes, bool)
            or not isinstance(num_classes, numbers.Integral)
            or num_classes < 1):
        raise ValueError(
            f'{owner}: num_classes must be a positive int, got '
            f'{num_classes!r}')
    num_classes = int(num_classes)
    if expected is not None and int(expected) != num_classes:
        message = (f'num_classes mismatch: {owner} {owner_verb} num_classes='
                   f'{num_classes}, but {expected_from.format(expected)}')
        raise ValueError(f'{message}. {hint}' if hint else message)
    return num_classes


@dataclass(frozen=True)
class CategoryStats:
    """Statistics of the categories of a training set, in label order.

    Attributes:
        cat_ids (np.ndarray): ``(C,)`` int64 category ids, sorted ascending;
            label ``i`` is ``cat_ids[i]``.
        names (tuple[str]): ``C`` category names.
        frequency (tuple[str]): ``C`` groups, each ``'r'``, ``'c'`` or ``'f'``.
        image_count (np.ndarray): ``(C,)`` int64, training images that contain
            the category.
        instance_count (np.ndarray): ``(C,)`` int64, training instances.
        num_images (int): Training images with at least one annotation.
        source (str): Where the statistics were read from.
        frequency_from (str): ``'file'``: the groups are the file's own
            (LVIS); ``'lvis_rule'``: derived here from ``image_count`` by
            LVIS's rule because the file has none (COCO, V3Det), a
            convention of this package (:data:`FREQUENCY_FROM`).
        num_images_listed (int, optional): Every image the annotation file
            lists, with annotations or not (FRACAL's frequency term divides
            by it, as the official ``get_frequency.py``); None if unknown.
        fractal_dimension (np.ndarray, optional): ``(C,)`` float64 fractal
            dimension of each category's box locations
            (:mod:`mmlongtail.datasets.fractal_dimension`); None if not
            computed.
    """
    cat_ids: np.ndarray
    names: Tuple[str, ...]
    frequency: Tuple[str, ...]
    image_count: np.ndarray
    instance_count: np.ndarray
    num_images: int
    source: str = '<memory>'
    frequency_from: str = 'file'
    num_images_listed: Optional[int] = None
    fractal_dimension: Optional[np.ndarray] = None

    @property
    def num_classes(self) -> int:
        return int(self.cat_ids.shape[0])

    @property
    def image_frequency(self) -> np.ndarray:
        """``(C,)`` float64 fraction of training images containing each
        class."""
        return self.image_count.astype(np.float64) / float(self.num_images)

    def group_mask(self, group: str) -> np.ndarray:
        """``(C,)`` bool mask of the classes in frequency group ``group``."""
        if group not in FREQUENCY_GROUPS:
            raise ValueError(f'frequency group must be one of '
                             f'{FREQUENCY_GROUPS}, got {group!r}')
        return np.asarray(self.frequency) == group

    def check_num_classes(self,
                          num_classes: int,
                          owner: str = 'model') -> None:
        """Raise ``ValueError`` naming both numbers if they disagree (through
        the one ``num_classes`` check, :func:`check_num_classes`)."""
        check_num_classes(
            num_classes, owner, self.num_classes,
            f'the category statistics from {self.source} describe {{}} '
            'classes',
            owner_verb='has',
            hint='Use the statistics of the dataset you train on, or set '
            f'num_classes={self.num_classes}.')

    def to_dict(self) -> dict:
        """The compact JSON form (see the module docstring)."""
        out = {
            'num_images': int(self.num_images),
            'frequency_from': self.frequency_from,
            'categories': [{
                'id': int(cid),
                'name': name,
                'frequency': freq,
                'image_count': int(ic),
                'instance_count': int(nc),
            } for cid, name, freq, ic, nc in zip(
                self.cat_ids, self.names, self.frequency, self.image_count,
                self.instance_count)]
        }
        if self.num_images_listed is not None:
            out['num_images_listed'] = int(self.num_images_listed)
        if self.fractal_dimension is not None:
            for cat, fd in zip(out['categories'], self.fractal_dimension):
                cat['fractal_dimension'] = float(fd)
        return out

    def require_fractal_dimension(self, owner: str = 'FRACAL') -> None:
        """Raise ``ValueError`` naming the file and the command that makes
        the statistics if the fractal dimensions or the listed image count
        are missing."""
        missing = [
            name for name, value in (
                ('per-category fractal_dimension', self.fractal_dimension),
                ('num_images_listed', self.num_images_listed))
            if value is None
        ]
        if missing:
            raise ValueError(
                f'{owner} needs {" and ".join(missing)} in its category '
                f'statistics, but {self.source} has none. Pass the training '
                'annotation file itself (they are computed from its boxes), '
                'or write a stats JSON with them: python '
                'tools/extract_category_stats.py TRAIN_ANN_FILE OUT.json '
                '--fractal-dimension')


StatsSource = Union[str, os.PathLike, dict, CategoryStats]


def packaged_stats_path(name: str) -> str:
    """Absolute path of a statistics file shipped with the package."""
    if name not in PACKAGED_STATS:
        raise KeyError(name)
    return osp.join(
        osp.dirname(osp.dirname(osp.abspath(__file__))), 'data',
        PACKAGED_STATS[name])


def load_category_stats(source: StatsSource,
                        num_classes: Optional[int] = None,
                        owner: str = 'model',
                        fractal_dimension: bool = False) -> CategoryStats:
    """Load category statistics from a short name, a file, or a dict.

    Args:
        source: ``'lvis_v1'`` (packaged LVIS v1 train statistics), a path to a
            compact stats JSON or to an LVIS/COCO annotation file, an already
            parsed dict of either kind, or a :class:`CategoryStats`.
        num_classes (int, optional): If given, must equal the number of
            categories, else ``ValueError`` names both numbers.
        owner (str): Who asks, for the error message.
        fractal_dimension (bool): Also the fractal dimension of each
            category's box locations and ``num_images_listed`` (FRACAL):
            computed from an annotation file, read from a stats JSON, and
            ``ValueError`` naming the source and the command to run where
            they are missing. Defaults to False.

    Returns:
        CategoryStats: In label order (categories sorted by id).
    """
    if isinstance(source, CategoryStats):
        stats = source
    elif isinstance(source, dict):
        stats = stats_from_dict(source, '<dict>', fractal_dimension)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path in PACKAGED_STATS:
            path = packaged_stats_path(path)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'category statistics file not found: {path!r}. Pass a path '
                f'to a stats JSON or an LVIS/COCO annotation file, or one of '
                f'the packaged names {sorted(PACKAGED_STATS)}.')
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f'category statistics file {path!r} is not valid JSON: {e}'
            ) from e
        stats = stats_from_dict(data, path, fractal_dimension)
    else:
        raise TypeError('category statistics must be a name, a path, a dict '
                        f'or CategoryStats, got {type(source).__name__}')
    if num_classes is not None:
        stats.check_num_classes(num_classes, owner)
    if fractal_dimension:
        stats.require_fractal_dimension(owner)
    return stats


def _require(cond: bool, source: str, what: str) -> None:
    if not cond:
        raise ValueError(f'malformed category statistics in {source}: {what}')


def stats_from_dict(data: dict,
                    source: str = '<dict>',
                    fractal_dimension: bool = False) -> CategoryStats:
    """Parse either file kind (already decoded JSON) into CategoryStats;
    ``fractal_dimension``: compute it from an annotation file's boxes."""
    _require(isinstance(data, dict), source, 'top level must be an object')
    _require(
        isinstance(data.get('categories'), list)
        and len(data['categories']) > 0,
        source, "missing or empty 'categories' list")
    if 'annotations' in data or 'images' in data:
        stats = _stats_from_annotations(data, source)
        if not fractal_dimension:
            return stats
        fd = fractal_dimensions(data, stats.cat_ids, stats.names,
                                source=source)
        return dataclasses.replace(stats, fractal_dimension=fd)
    return _stats_from_compact(data, source)


def _parse_categories(cats: Sequence[dict], source: str,
                      fields: Sequence[str]) -> List[dict]:
    for i, cat in enumerate(cats):
        _require(isinstance(cat, dict), source, f'category #{i} is not an '
                 'object')
        for key in ('id', ) + tuple(fields):
            _require(key in cat, source,
                     f'category #{i} (id={cat.get("id")}) has no {key!r}')
    dup = sorted(i for i, n in Counter(int(c['id']) for c in cats).items()
                 if n > 1)
    _require(not dup, source, f'duplicate category ids {dup[:10]}')
    return sorted(cats, key=lambda c: int(c['id']))


def _stats_from_compact(data: dict, source: str) -> CategoryStats:
    _require('num_images' in data, source, "missing 'num_images'")
    cats = _parse_categories(data['categories'], source,
                             ('image_count', 'instance_count', 'frequency'))
    frequency_from = data.get('frequency_from', 'file')
    _require(frequency_from in FREQUENCY_FROM, source,
             f'frequency_from must be one of {FREQUENCY_FROM}, got '
             f'{frequency_from!r}')
    stats = _build(cats, int(data['num_images']), source, frequency_from)
    has_fd = ['fractal_dimension' in c for c in cats]
    _require(all(has_fd) or not any(has_fd), source,
             f'{sum(has_fd)} of {len(cats)} categories have a '
             "'fractal_dimension'; give every category one, or none")
    fd = None
    if all(has_fd):
        fd = np.array([float(c['fractal_dimension']) for c in cats])
        _require(bool(np.isfinite(fd).all() and (fd > 0).all()), source,
                 'fractal_dimension must be finite and > 0')
    listed = data.get('num_images_listed')
    if listed is not None:
        _require(int(listed) >= stats.num_images, source,
                 f'num_images_listed={listed} is below num_images='
                 f'{stats.num_images}')
        listed = int(listed)
    return dataclasses.replace(stats, num_images_listed=listed,
                               fractal_dimension=fd)


def _build(cats: List[dict], num_images: int, source: str,
           frequency_from: str = 'file') -> CategoryStats:
    image_count = np.array([int(c['image_count']) for c in cats], np.int64)
    instance_count = np.array([int(c['instance_count']) for c in cats],
                              np.int64)
    frequency = tuple(str(c['frequency']) for c in cats)
    bad = [f for f in frequency if f not in FREQUENCY_GROUPS]
    _require(not bad, source, f'frequency must be r/c/f, got {bad[:5]}')
    _require(num_images > 0, source, f'num_images must be > 0, got '
             f'{num_images}')
    _require(bool((image_count >= 0).all() and (instance_count >= 0).all()),
             source, 'negative image_count or instance_count')
    _require(bool((image_count <= num_images).all()), source,
             f'an image_count exceeds num_images={num_images}')
    return CategoryStats(
        cat_ids=np.array([int(c['id']) for c in cats], np.int64),
        names=tuple(str(c.get('name', c['id'])) for c in cats),
        frequency=frequency,
        image_count=image_count,
        instance_count=instance_count,
        num_images=int(num_images),
        source=source,
        frequency_from=frequency_from)


def _stats_from_annotations(data: dict, source: str) -> CategoryStats:
    _require(isinstance(data.get('annotations'), list), source,
             "annotation file has no 'annotations' list")
    cats = _parse_categories(data['categories'], source, ())
    cat_ids = np.array([int(c['id']) for c in cats], np.int64)
    anns = data['annotations']
    for ann in anns[:1] + anns[-1:]:
        _require('image_id' in ann and 'category_id' in ann, source,
                 'annotations need image_id and category_id')
    ann_img = np.fromiter((a['image_id'] for a in anns), np.int64, len(anns))
    ann_cat = np.fromiter((a['category_id'] for a in anns), np.int64,
                          len(anns))
    label = category_labels(cat_ids, ann_cat, source)
    counted_instances = np.bincount(label, minlength=len(cat_ids))
    # distinct (image, category) pairs -> images per category, as one int64
    # key per annotation (image position x C + label): a 1-d unique, 6x
    # faster than the rows of a (N, 2) array at V3Det's 1.75M annotations
    img_pos = np.unique(ann_img, return_inverse=True)[1].reshape(-1)
    num_images = int(img_pos.max()) + 1 if len(anns) else 0
    pairs = np.unique(img_pos.astype(np.int64) * len(cat_ids) + label)
    counted_images = np.bincount(pairs % len(cat_ids),
                                 minlength=len(cat_ids))
    has_counts = all('image_count' in c and 'instance_count' in c
                     for c in cats)
    out = []
    derived = 0
    for i, c in enumerate(cats):
        ic = int(c['image_count']) if has_counts else int(counted_images[i])
        nc = int(c['instance_count']) if has_counts else int(
            counted_instances[i])
        freq = c.get('frequency')
        if not freq:
            freq = frequency_group(ic)
            derived += 1
        out.append(
            dict(
                id=c['id'],
                name=c.get('name', str(c['id'])),
                frequency=freq,
                image_count=ic,
                instance_count=nc))
    if 0 < derived < len(cats):
        raise ValueError(
            f'malformed annotation file {source}: {derived} of {len(cats)} '
            "categories have no 'frequency' (the others do); give every "
            'category one, or none (then all follow LVIS\'s rule on image '
            'counts)')
    stats = _build(out, max(num_images, 1), source,
                   'lvis_rule' if derived else 'file')
    if isinstance(data.get('images'), list):
        stats = dataclasses.replace(
            stats, num_images_listed=max(len(data['images']),
                                         stats.num_images))
    return stats


def dump_category_stats(stats: CategoryStats, path: str) -> None:
    """Write ``stats`` as a compact stats JSON, one category per line."""
    d = stats.to_dict()
    lines = [json.dumps(c) for c in d['categories']]
    listed = ('' if stats.num_images_listed is None else
              ' "num_images_listed": %d,' % d['num_images_listed'])
    with open(path, 'w', encoding='utf-8') as f:
        f.write('{"num_images": %d, "frequency_from": %s,%s "categories": '
                '[\n' % (d['num_images'], json.dumps(d['frequency_from']),
                         listed))
        f.write(',\n'.join(lines))
        f.write('\n]}\n')
