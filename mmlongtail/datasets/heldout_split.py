"""A held-out part of an LVIS-format training set, for choosing post-hoc
parameters (NorCal's γ, logit adjustment's τ, τ-normalization's τ) without
touching the evaluation split.

:func:`split_heldout` divides the training images in two and writes both
parts as LVIS-format annotation files named after what they are::

    {stem}_heldout_seed{seed}_n{N}.json     # N images to tune on
    {stem}_remaining_seed{seed}_n{N}.json   # the rest: a training ann_file

**How images are chosen** (deterministic: only the file and ``seed``
matter). A ``numpy`` generator seeded with ``seed`` orders the images at
random once. Classes are then visited from the rarest (fewest training
images) to the most frequent, ties by id; class ``c`` with ``n_c`` images
gets held-out images, first in that random order, until it has
``max(1, floor(f n_c))`` of them (``f = N / number of images``), but an
image is taken only if every class in it keeps at least one image in the
remaining part. Then images are added in the random order, under the same
rule, until the held-out part has ``N``. So every class with two or more
training images is represented in the held-out part where the budget
allows, rare classes first, and **every class keeps training images** (a
class seen in a single image is never held out; AP on it cannot be tuned).
Images without annotations only enter in the final fill.

**Given images.** A caller that drew images for the purpose (the
synthetic benchmark renders new images of its training distribution) passes
their ids as ``heldout_image_ids`` and the names of the two files as
``file_names``; the rule recorded then says so, and every class must still
keep an image in the remaining part.

**Both files** keep the source's top-level keys, every image's fields
(``neg_category_ids``, ``not_exhaustive_category_ids``) and the category
list (same ids, order and names). Each category's ``frequency`` is the
*source's* r/c/f group (from :func:`~mmlongtail.datasets.load_category_stats`
on the whole file), so AP_r/AP_c/AP_f on the held-out part mean the groups
the model was trained with; ``image_count`` and ``instance_count`` are
recounted for each part (so the remaining file is a correct training
``ann_file`` for frequency-aware methods). ``info.heldout_split`` records
the part, the source, the seed, ``N`` and both file names.

**Honesty.** A model trained on the whole source file has seen the held-out
images: tuning on them is no longer tuning on unseen data (it is still
better than tuning on val, which is then reported). The part is held out
only when stage 1 is trained with the remaining file as its ``ann_file``;
:func:`split_info` reads that back from the file a config trains on.
"""
import json
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mmlongtail.utils import atomic_write
from .annotation_file import load_annotation_file, unique_ids
from .category_stats import load_category_stats

#: ``info`` key recording what a split file is.
INFO_KEY = 'heldout_split'
#: The two parts.
PARTS = ('heldout', 'remaining')


def heldout_file_names(ann_file: str, seed: int,
                       num_images: int) -> Dict[str, str]:
    """``{'heldout': ..., 'remaining': ...}`` base names of the two files
    made from ``ann_file`` (see the module docstring)."""
    stem = osp.splitext(osp.basename(ann_file))[0]
    return {
        part: f'{stem}_{part}_seed{seed}_n{num_images}.json'
        for part in PARTS
    }


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
            or seed < 0:
        raise ValueError(f'held-out split: seed must be an integer >= 0, got '
                         f'{seed!r}')
    return int(seed)


def heldout_size(total: int,
                 fraction: Optional[float] = None,
                 num_images: Optional[int] = None) -> int:
    """Number of held-out images from exactly one of ``fraction`` (in
    ``(0, 1)``, rounded to the nearest image) or ``num_images``.

    Raises:
        ValueError: Neither or both given, a value out of range, or a
            result that leaves one part empty.
    """
    if (fraction is None) == (num_images is None):
        raise ValueError('held-out split: give exactly one of fraction '
                         f'(0 < f < 1) or num_images, got fraction='
                         f'{fraction!r}, num_images={num_images!r}')
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(
                fraction, (int, float)) or not 0 < fraction < 1:
            raise ValueError('held-out split: fraction must lie in (0, 1), '
                             f'got {fraction!r}')
        n = int(round(fraction * total))
    else:
        if isinstance(num_images, bool) or not isinstance(
                num_images, (int, np.integer)):
            raise ValueError('held-out split: num_images must be an integer, '
                             f'got {num_images!r}')
        n = int(num_images)
    if not 0 < n < total:
        raise ValueError(
            f'held-out split: {n} held-out images out of {total} leaves a '
            'part empty; choose 1 <= num_images < number of images (or a '
            'larger/smaller fraction)')
    return n


def choose_heldout(image_ids: List[int],
                   image_labels: List[List[int]],
                   num_heldout: int,
                   seed: int = 0) -> np.ndarray:
    """The stratified, deterministic choice of the module docstring.

    Args:
        image_ids (list[int]): ``(I,)`` image ids, in the file's order.
        image_labels (list[list[int]]): Per image, the distinct labels
            (``0 .. C-1``) of its annotations.
        num_heldout (int): ``N``, ``0 < N < I``.
        seed (int): Seed of the random image order.

    Returns:
        np.ndarray: ``(I,)`` bool, True for held-out images.

    Raises:
        ValueError: ``N`` images cannot be held out while every class keeps
            an image in the remaining part (naming the most possible).
    """
    num = len(image_ids)
    order = np.random.default_rng(_check_seed(seed)).permutation(num)
    num_classes = 1 + max((max(ls) for ls in image_labels if ls), default=-1)
    images_of = defaultdict(list)  # label -> image positions, random order
    for pos in order.tolist():
        for label in image_labels[pos]:
            images_of[label].append(pos)
    left = np.bincount(
        [label for ls in image_labels for label in ls],
        minlength=num_classes)  # images of each class in the remaining part
    held_of = np.zeros(num_classes, np.int64)
    held = np.zeros(num, bool)
    count = 0

    def take(pos: int) -> bool:
        nonlocal count
        labels = image_labels[pos]
        if held[pos] or any(left[c] <= 1 for c in labels):
            return False
        held[pos] = True
        count += 1
        for c in labels:
            left[c] -= 1
            held_of[c] += 1
        return True

    frac = num_heldout / num
    n_c = left.copy()
    for c in sorted(range(num_classes), key=lambda c: (n_c[c], c)):
        want = min(max(1, int(np.floor(frac * n_c[c]))), n_c[c] - 1)
        for pos in images_of[c]:
            if held_of[c] >= want or count >= num_heldout:
                break
            take(pos)
    for pos in order.tolist():
        if count >= num_heldout:
            break
        take(pos)
    if count < num_heldout:
        raise ValueError(
            f'held-out split: only {count} of the {num_heldout} requested '
            'images can be held out while every class keeps a training '
            'image in the remaining part; ask for fewer')
    return held


def _part(data: dict, keep: np.ndarray, part: str, info: dict,
          frequency: Dict[int, str]) -> dict:
    """The LVIS-format dict of the images where ``keep`` is True."""
    images = [im for im, k in zip(data['images'], keep.tolist()) if k]
    ids = {im['id'] for im in images}
    anns = [a for a in data['annotations'] if a['image_id'] in ids]
    img_count: Dict[int, int] = defaultdict(int)
    inst_count: Dict[int, int] = defaultdict(int)
    for cid, imgs in _category_images(anns).items():
        img_count[cid] = len(imgs)
    for a in anns:
        inst_count[a['category_id']] += 1
    cats = []
    for cat in data['categories']:
        cat = dict(cat, frequency=frequency[cat['id']])
        if 'image_count' in cat:
            cat['image_count'] = img_count[cat['id']]
        if 'instance_count' in cat:
            cat['instance_count'] = inst_count[cat['id']]
        cats.append(cat)
    out = {k: v for k, v in data.items()
           if k not in ('images', 'annotations', 'categories', 'info')}
    out['info'] = dict(data.get('info') or {})
    out['info'][INFO_KEY] = dict(info, part=part, num_part_images=len(images))
    out.update(images=images, annotations=anns, categories=cats)
    return out


def _category_images(anns: List[dict]) -> Dict[int, set]:
    images = defaultdict(set)
    for a in anns:
        images[a['category_id']].add(a['image_id'])
    return images


#: ``info.heldout_split.rule`` of a split of given images.
GIVEN_RULE = ('given images (the caller chose them); every class keeps a '
              'training image (mmlongtail.datasets.heldout_split)')


def split_heldout(ann_file: str,
                  out_dir: str,
                  seed: int = 0,
                  fraction: Optional[float] = None,
                  num_images: Optional[int] = None,
                  heldout_image_ids: Optional[Sequence[int]] = None,
                  file_names: Optional[Dict[str, str]] = None
                  ) -> Dict[str, str]:
    """Write the held-out and remaining parts of an LVIS-format training
    annotation file (see the module docstring).

    Writing is skipped when both files exist and record the same source,
    seed and size (the split is deterministic).

    Args:
        ann_file (str): The training annotation file.
        out_dir (str): Folder of the two files (created if missing).
        seed (int): Seed of the random image order. Defaults to 0.
        fraction (float, optional): Held-out share of the images, in
            ``(0, 1)``.
        num_images (int, optional): Held-out images instead of a fraction.
        heldout_image_ids (Sequence[int], optional): The held-out images
            themselves, instead of a size (see "Given images" above).
        file_names (dict, optional): ``{'heldout': name, 'remaining':
            name}`` instead of :func:`heldout_file_names`.

    Returns:
        dict: ``{'heldout': path, 'remaining': path}``.

    Raises:
        ValueError: Bad ``fraction``/``num_images``/``seed``, a file that
            is not LVIS/COCO format, or a split that cannot keep every class
            in the remaining part.
    """
    seed = _check_seed(seed)
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'annotation file not found: {ann_file}')
    data = load_annotation_file(ann_file)
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise ValueError(f'{ann_file} is not an LVIS/COCO-format '
                             f"annotation file: no '{key}' list")
    stats = load_category_stats(data)  # checks the category ids, too
    label_of = {int(c): i for i, c in enumerate(stats.cat_ids.tolist())}
    frequency = dict(zip(stats.cat_ids.tolist(), stats.frequency))

    image_ids = [im['id'] for im in data['images']]
    unique_ids(image_ids, ann_file, 'image')
    pos_of = {i: p for p, i in enumerate(image_ids)}
    labels: List[set] = [set() for _ in image_ids]
    for a in data['annotations']:
        if a['image_id'] not in pos_of:
            raise ValueError(f'{ann_file}: annotation {a.get("id")} refers '
                             f'to unknown image {a["image_id"]}')
        labels[pos_of[a['image_id']]].add(label_of[a['category_id']])
    given = None
    if heldout_image_ids is not None:
        if fraction is not None or num_images is not None:
            raise ValueError('held-out split: give heldout_image_ids or a '
                             'size (fraction / num_images), not both')
        given = _given(heldout_image_ids, pos_of, labels, ann_file)
        n = int(given.sum())
    else:
        n = heldout_size(len(image_ids), fraction, num_images)
    names = dict(file_names) if file_names is not None else \
        heldout_file_names(ann_file, seed, n)
    if sorted(names) != sorted(PARTS):
        raise ValueError(f'held-out split: file_names needs exactly the '
                         f'keys {PARTS}, got {sorted(names)}')
    paths = {p: osp.join(out_dir, names[p]) for p in PARTS}
    info = dict(
        source=osp.abspath(ann_file), seed=seed, num_heldout_images=n,
        num_source_images=len(image_ids), files=names,
        rule=GIVEN_RULE if given is not None else
        'stratified by class, rarest first; every class keeps a '
        'training image (mmlongtail.datasets.heldout_split)')
    if all(_same_split(paths[p], info) for p in PARTS):
        return paths
    held = given if given is not None else choose_heldout(
        image_ids, [sorted(s) for s in labels], n, seed)
    for part, keep in zip(PARTS, (held, ~held)):
        atomic_write(paths[part],
                     json.dumps(_part(data, keep, part, info, frequency)))
    return paths


def _given(ids: Sequence[int], pos_of: Dict[int, int], labels: List[set],
           ann_file: str) -> np.ndarray:
    """``(I,)`` bool mask of the given held-out images, checked: known,
    distinct, not all, and every class keeps an image outside them."""
    ids = [int(i) for i in ids]
    unknown = sorted(set(ids) - set(pos_of))
    if unknown:
        raise ValueError(f'held-out split: images {unknown[:10]} are not in '
                         f'{ann_file}')
    if len(set(ids)) != len(ids) or not 0 < len(ids) < len(pos_of):
        raise ValueError(
            f'held-out split: {len(ids)} given images ({len(set(ids))} '
            f'distinct) out of {len(pos_of)}; give distinct ids that leave '
            'both parts non-empty')
    held = np.zeros(len(pos_of), bool)
    held[[pos_of[i] for i in ids]] = True
    kept = set().union(*(labels[p] for p in np.flatnonzero(~held)))
    lost = sorted(set().union(*labels) - kept)
    if lost:
        raise ValueError(
            f'held-out split: the given images hold every image of the '
            f'classes with labels {lost}; the remaining part would have none')
    return held


def split_info(ann_file: str) -> Optional[dict]:
    """``info.heldout_split`` of an annotation file (None for a file that is
    not a part written by :func:`split_heldout`)."""
    with open(ann_file, encoding='utf-8') as f:
        info = json.load(f).get('info') or {}
    return info.get(INFO_KEY) if isinstance(info, dict) else None


def _same_split(path: str, info: dict) -> bool:
    if not osp.isfile(path):
        return False
    try:
        have = split_info(path)
    except (OSError, json.JSONDecodeError):
        return False
    keys = ('source', 'seed', 'num_heldout_images', 'num_source_images',
            'rule')
    return have is not None and all(have.get(k) == info[k] for k in keys)


def heldout_of_remaining(ann_file: str) -> Optional[Tuple[str, dict]]:
    """When ``ann_file`` is a remaining part written by
    :func:`split_heldout`, the path of its held-out twin (same folder) and
    the split's info; else None.

    Raises:
        FileNotFoundError: The twin named in the file is missing.
    """
    info = split_info(ann_file)
    if not info or info.get('part') != 'remaining':
        return None
    path = osp.join(osp.dirname(ann_file), info['files']['heldout'])
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{ann_file} is the remaining part of a held-out split whose '
            f'held-out file {path} is missing (it is written beside it)')
    return path, info
