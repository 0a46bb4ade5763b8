"""A rendered synthetic long-tailed instance segmentation dataset (images,
masks and LVIS v1 annotation files).

It lets anyone without LVIS or a GPU watch a long-tail detector train and be
evaluated with AP_r / AP_c / AP_f in minutes.

Design
------
* **Categories** are (shape, colour) pairs: 12 shapes x 9 colours, so up to
  108 visually distinct classes. A rare class is as learnable as a frequent
  one; it is only *seen* less often. The benchmark then measures the long-tail
  effect and not the difficulty of the class.
* **Long tail.** Each class gets a target number of training images: rare
  classes 1..``rare_max`` (10, like LVIS), common classes
  ``rare_max+1..common_max`` and frequent classes above, spaced geometrically.
  LVIS's r/c/f rule is applied to the realised image counts with
  ``common_max`` scaled to the dataset (LVIS uses 100 images out of ~100k; a
  dataset of a few hundred images uses ``num_train_images // 20`` by default),
  and recorded in ``categories[].frequency`` next to ``image_count`` and
  ``instance_count``.
* **Val split** is balanced: every class appears in ``val_images_per_class``
  images, so AP_r is measured on as many instances as AP_f.
* **Masks are exact**: each object is one polygon, rendered with sub-pixel
  precision, and objects never overlap, so the polygon is the visible mask.
* **Federated fields.** Annotation is exhaustive, so every image lists all
  absent classes in ``neg_category_ids`` (LVIS evaluates a class only on
  images where it is verified present or absent) and has an empty
  ``not_exhaustive_category_ids``.
* **Deterministic**: the same arguments and seed give byte-identical files.

Layout written under ``out_dir`` (the ``data/lvis_v1`` layout)::

    annotations/lvis_v1_train.json
    annotations/lvis_v1_val.json
    train2017/000000000001.png ...
    val2017/000000100001.png ...
"""
import json
import math
import os
import os.path as osp
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from mmlongtail.datasets.category_stats import frequency_group

COCO_URL_ROOT = 'http://images.cocodataset.org/'
# The r/c/f rule as recorded in both files' info.frequency_rule
_RARE_MAX_KEY = 'rare_max_images'
_COMMON_MAX_KEY = 'common_max_images'
# Placement attempts at the smallest object size before an image is declared
# too crowded (each attempt tries 200 random positions per object).
_FLOOR_TRIES = 50

#: RGB colours, far apart from each other and from the grey background.
COLOURS: Dict[str, Tuple[int, int, int]] = {
    'red': (220, 40, 40),
    'green': (40, 170, 60),
    'blue': (40, 80, 225),
    'yellow': (235, 215, 40),
    'magenta': (205, 50, 205),
    'cyan': (40, 210, 215),
    'orange': (245, 140, 25),
    'white': (250, 250, 250),
    'black': (15, 15, 15),
}


def _regular(n: int, phase: float = 0.0) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], 1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    t = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _crescent() -> np.ndarray:
    outer = np.linspace(np.pi / 2, 3 * np.pi / 2, 13)
    inner = np.linspace(3 * np.pi / 2, np.pi / 2, 13)
    a = np.stack([np.cos(outer), np.sin(outer)], 1)
    b = np.stack([0.45 * np.cos(inner) - 0.25, 0.8 * np.sin(inner)], 1)
    return np.concatenate([a, b])


def _poly(points: Sequence[Tuple[float, float]]) -> np.ndarray:
    p = np.asarray(points, np.float64)
    p = p - (p.max(0) + p.min(0)) / 2
    return p / np.abs(p).max()


#: Unit shapes, vertices within [-1, 1]^2, counter-clockwise or clockwise.
SHAPES: Dict[str, np.ndarray] = {
    'circle': _regular(24),
    'triangle': _regular(3, -np.pi / 2),
    'square': _regular(4, np.pi / 4),
    'diamond': _poly([(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]),
    'pentagon': _regular(5, -np.pi / 2),
    'hexagon': _regular(6),
    'star': _star(),
    'cross': _poly([(-1, -.3), (-.3, -.3), (-.3, -1), (.3, -1), (.3, -.3),
                    (1, -.3), (1, .3), (.3, .3), (.3, 1), (-.3, 1), (-.3, .3),
                    (-1, .3)]),
    'ellipse': _regular(24) * np.array([1.0, 0.5]),
    'lshape': _poly([(0, 0), (.4, 0), (.4, .6), (1, .6), (1, 1), (0, 1)]),
    'arrow': _poly([(0, .35), (.55, .35), (.55, 0), (1, .5), (.55, 1),
                    (.55, .65), (0, .65)]),
    'crescent': _crescent(),
}


@dataclass
class SyntheticLVISConfig:
    """What to generate. Defaults give the CPU demo's dataset.

    Args:
        num_rare / num_common / num_frequent (int): Classes per group; LVIS
            v1's proportions are about 28 / 38 / 34 %.
        num_train_images (int): Training images.
        val_images_per_class (int): Val images that contain each class.
        image_size (int): Square image side in pixels.
        min_size / max_size (int): Object size range in pixels.
        rare_max (int): A class with at most this many training images is
            rare. Defaults to 10, as in LVIS.
        common_max (int, optional): At most this many images: common. Defaults
            to ``max(2 * rare_max, num_train_images // 20)``.
        frequent_max_fraction (float): The most frequent class appears in this
            fraction of the training images.
        seed (int): Everything random derives from it.
    """
    num_rare: int = 12
    num_common: int = 14
    num_frequent: int = 14
    num_train_images: int = 600
    val_images_per_class: int = 6
    image_size: int = 128
    min_size: int = 20
    max_size: int = 44
    rare_max: int = 10
    common_max: Optional[int] = None
    frequent_max_fraction: float = 0.3
    seed: int = 0

    @property
    def num_classes(self) -> int:
        return self.num_rare + self.num_common + self.num_frequent

    def resolved_common_max(self) -> int:
        if self.common_max is not None:
            return self.common_max
        return max(2 * self.rare_max, self.num_train_images // 20)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first request that cannot hold."""
        k_max = len(SHAPES) * len(COLOURS)
        counts = (self.num_rare, self.num_common, self.num_frequent)
        if min(counts) < 0 or self.num_classes == 0:
            raise ValueError(
                f'class counts must be >= 0 with at least one class, got '
                f'rare={self.num_rare}, common={self.num_common}, '
                f'frequent={self.num_frequent}')
        if self.num_classes > k_max:
            raise ValueError(
                f'{self.num_classes} classes requested, but only {k_max} '
                f'distinct (shape, colour) categories exist '
                f'({len(SHAPES)} shapes x {len(COLOURS)} colours)')
        cmax = self.resolved_common_max()
        if self.rare_max < 1 or cmax <= self.rare_max:
            raise ValueError(
                f'need 1 <= rare_max < common_max, got rare_max='
                f'{self.rare_max}, common_max={cmax}')
        if self.num_common and cmax - self.rare_max < 1:
            raise ValueError('no image count is left for common classes')
        top = int(self.frequent_max_fraction * self.num_train_images)
        if self.num_frequent and top <= cmax:
            raise ValueError(
                f'frequent classes need more than common_max={cmax} training '
                f'images, but the most frequent class gets only {top} '
                f'(= {self.frequent_max_fraction} x {self.num_train_images} '
                'images); add training images or raise frequent_max_fraction')
        if self.num_rare and self.num_train_images < 1:
            raise ValueError('num_train_images must be >= 1')
        if not 4 <= self.min_size <= self.max_size <= self.image_size // 2:
            raise ValueError(
                f'need 4 <= min_size <= max_size <= image_size / 2, got '
                f'{self.min_size}, {self.max_size}, {self.image_size}')
        if self.val_images_per_class < 1:
            raise ValueError('val_images_per_class must be >= 1')


def category_table(num_classes: int) -> List[Tuple[str, str]]:
    """The first ``num_classes`` (shape, colour) pairs, interleaved so that
    consecutive classes differ in both shape and colour."""
    shapes, colours = list(SHAPES), list(COLOURS)
    pairs = []
    for k in range(len(shapes) * len(colours)):
        s = k % len(shapes)
        c = (k // len(shapes) + k) % len(colours)
        pairs.append((shapes[s], colours[c]))
    assert len(set(pairs)) == len(pairs)
    return pairs[:num_classes]


def target_image_counts(cfg: SyntheticLVISConfig) -> np.ndarray:
    """Training images per class, in class order: frequent, common, rare
    classes are interleaved over the class ids so that id says nothing about
    frequency."""
    cmax = cfg.resolved_common_max()
    top = max(cmax + 1, int(cfg.frequent_max_fraction * cfg.num_train_images))

    def geom(hi: int, lo: int, n: int) -> np.ndarray:
        if n == 0:
            return np.zeros(0, np.int64)
        if n == 1:
            return np.array([hi], np.int64)
        v = np.geomspace(hi, lo, n)
        return np.clip(np.round(v), lo, hi).astype(np.int64)

    rare = geom(cfg.rare_max, 1, cfg.num_rare)
    common = geom(cmax, cfg.rare_max + 1, cfg.num_common)
    freq = geom(top, cmax + 1, cfg.num_frequent)
    counts = np.concatenate([freq, common, rare])
    # spread the groups over ids with a fixed permutation
    order = np.random.default_rng(cfg.seed + 7).permutation(len(counts))
    out = np.empty_like(counts)
    out[order] = counts
    return out


def _assign(counts: np.ndarray, num_images: int,
            rng: np.random.Generator) -> List[List[int]]:
    """Give class ``c`` exactly ``counts[c]`` distinct images, balancing the
    number of classes per image."""
    if counts.max(initial=0) > num_images:
        raise ValueError(f'a class needs {counts.max()} images but the split '
                         f'has {num_images}')
    load = np.zeros(num_images)
    per_image: List[List[int]] = [[] for _ in range(num_images)]
    for c in np.argsort(-counts, kind='stable'):
        key = load + rng.random(num_images)
        chosen = np.argpartition(key, counts[c] - 1)[:counts[c]] if counts[
            c] else []
        for i in chosen:
            per_image[i].append(int(c))
            load[i] += 1
    return per_image


def _place(sizes: List[int], image_size: int, rng: np.random.Generator,
           tries: int = 200) -> Optional[List[Tuple[float, float]]]:
    """Centres for squares of the given sizes with no overlap (2 px gap)."""
    boxes: List[Tuple[float, float, float]] = []
    centres = []
    for s in sizes:
        h = s / 2 + 1
        for _ in range(tries):
            cx, cy = rng.uniform(h, image_size - h, 2)
            if all(
                    abs(cx - bx) >= h + bh and abs(cy - by) >= h + bh
                    for bx, by, bh in boxes):
                boxes.append((cx, cy, h))
                centres.append((cx, cy))
                break
        else:
            return None
    return centres


def _render_image(objects: List[Tuple[int, np.ndarray]], colours: List[Tuple[
        int, int, int]], size: int, rng: np.random.Generator) -> np.ndarray:
    """RGB uint8 image: a smooth grey background with mild noise, then the
    objects' polygons filled with sub-pixel precision."""
    base = rng.uniform(90, 165)
    gx, gy = rng.uniform(-25, 25, 2)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    bg = base + gx * (xx - .5) + gy * (yy - .5)
    img = np.repeat(bg[..., None], 3, 2) + rng.normal(0, 6, (size, size, 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    img = np.ascontiguousarray(img)
    for (_, poly), colour in zip(objects, colours):
        pts = np.round(poly * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(img, [pts], colour, lineType=cv2.LINE_AA, shift=4)
    return img


def _make_split(per_image: List[List[int]], split: str, first_id: int,
                first_ann_id: int, cfg: SyntheticLVISConfig,
                names: List[Tuple[str, str]], rng: np.random.Generator,
                out_dir: str, progress) -> Tuple[list, list]:
    images, anns = [], []
    size = cfg.image_size
    cat_ids = list(range(1, cfg.num_classes + 1))
    ann_id = first_ann_id
    for i, classes in enumerate(per_image):
        img_id = first_id + i
        # one instance per (image, class), a second one 25% of the time
        inst = [c for c in classes for _ in range(1 + (rng.random() < .25))]
        rng.shuffle(inst)
        sizes = [int(rng.integers(cfg.min_size, cfg.max_size + 1))
                 for _ in inst]
        centres = _place(sizes, size, rng)
        floor_tries = 0
        while centres is None:  # too crowded: shrink and retry
            shrunk = [max(cfg.min_size // 2, int(s * .85)) for s in sizes]
            floor_tries += shrunk == sizes
            if floor_tries > _FLOOR_TRIES:
                raise ValueError(
                    f'{split} image {img_id}: {len(sizes)} objects do not fit '
                    f'in {size} x {size} px even at {min(sizes)} px each; '
                    'raise image_size or num_train_images (fewer classes '
                    'per image), or lower min_size')
            sizes = shrunk
            centres = _place(sizes, size, rng)
        objects, colours = [], []
        for c, s, (cx, cy) in zip(inst, sizes, centres):
            shape, colour = names[c]
            theta = rng.uniform(0, 2 * np.pi)
            rot = np.array([[math.cos(theta), -math.sin(theta)],
                            [math.sin(theta), math.cos(theta)]])
            poly = SHAPES[shape] @ rot.T * (s / 2) + np.array([cx, cy])
            poly = np.round(poly, 2)
            objects.append((c, poly))
            jitter = rng.integers(-12, 13, 3)
            colours.append(
                tuple(int(v) for v in np.clip(
                    np.array(COLOURS[colour]) + jitter, 0, 255)))
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            area = 0.5 * abs(
                np.dot(poly[:, 0], np.roll(poly[:, 1], 1)) -
                np.dot(poly[:, 1], np.roll(poly[:, 0], 1)))
            anns.append({
                'id': ann_id,
                'image_id': img_id,
                'category_id': cat_ids[c],
                'segmentation': [[float(v) for v in poly.reshape(-1)]],
                'area': round(float(area), 2),
                'bbox': [round(float(x0), 2), round(float(y0), 2),
                         round(float(x1 - x0), 2), round(float(y1 - y0), 2)],
            })
            ann_id += 1
        img = _render_image(objects, colours, size, rng)
        file_name = f'{split}2017/{img_id:012d}.png'
        cv2.imwrite(osp.join(out_dir, file_name), img[..., ::-1])
        present = set(cat_ids[c] for c in classes)
        images.append({
            'id': img_id,
            'width': size,
            'height': size,
            'coco_url': COCO_URL_ROOT + file_name,
            'file_name': file_name,
            'license': 0,
            'neg_category_ids': [c for c in cat_ids if c not in present],
            'not_exhaustive_category_ids': [],
        })
        progress.update()
    return images, anns


def _categories(names, image_count, instance_count, cfg) -> list:
    cmax = cfg.resolved_common_max()
    return [{
        'id': k + 1,
        'name': f'{colour}_{shape}',
        'synset': f'{colour}_{shape}.n.01',
        'def': f'a {colour} {shape}',
        'synonyms': [f'{colour}_{shape}'],
        'frequency': frequency_group(int(image_count[k]), cfg.rare_max, cmax),
        'image_count': int(image_count[k]),
        'instance_count': int(instance_count[k]),
    } for k, (shape, colour) in enumerate(names)]


def generate_synthetic_lvis(out_dir: str,
                            cfg: Optional[SyntheticLVISConfig] = None,
                            show_progress: bool = True) -> Dict[str, str]:
    """Write the dataset under ``out_dir`` and return the annotation paths.

    Args:
        out_dir (str): Root folder, e.g. ``data/synthetic_lvis``.
        cfg (SyntheticLVISConfig, optional): What to generate.
        show_progress (bool): Show an mmengine ProgressBar.

    Returns:
        dict: ``{'train': path, 'val': path}`` of the annotation files.
    """
    from mmengine.utils import ProgressBar

    cfg = cfg or SyntheticLVISConfig()
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    names = category_table(cfg.num_classes)
    counts = target_image_counts(cfg)
    train_per_image = _assign(counts, cfg.num_train_images, rng)
    k = cfg.num_classes
    per_img = max(1, min(4, k))
    num_val = max(1, math.ceil(k * cfg.val_images_per_class / per_img))
    val_counts = np.full(k, cfg.val_images_per_class, np.int64)
    val_per_image = _assign(val_counts, max(num_val, cfg.val_images_per_class),
                            rng)

    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    for split in ('train', 'val'):
        os.makedirs(osp.join(out_dir, f'{split}2017'), exist_ok=True)
    total = len(train_per_image) + len(val_per_image)
    progress = ProgressBar(total) if show_progress else _NoProgress()
    train_imgs, train_anns = _make_split(train_per_image, 'train', 1, 1, cfg,
                                         names, rng, out_dir, progress)
    val_imgs, val_anns = _make_split(val_per_image, 'val', 100001,
                                     len(train_anns) + 1, cfg, names, rng,
                                     out_dir, progress)
    # Both files carry the training split's counts and r/c/f groups, as in
    # LVIS, whose val file repeats the train categories.
    labels = np.array([a['category_id'] - 1 for a in train_anns], np.int64)
    inst_count = np.bincount(labels, minlength=k)
    pairs = np.unique(
        np.array([(a['image_id'], a['category_id'] - 1) for a in train_anns],
                 np.int64).reshape(-1, 2), axis=0)
    img_count = np.bincount(pairs[:, 1], minlength=k)
    cats = _categories(names, img_count, inst_count, cfg)
    info = {
        'description': 'mmlongtail synthetic long-tailed dataset',
        # the module's first name, kept so that the files stay byte-identical
        # to those made before it moved to mmlongtail_bench
        'generator': 'mmlongtail.datasets.synthetic',
        'config': asdict(cfg),
        'frequency_rule': {
            _RARE_MAX_KEY: cfg.rare_max,
            _COMMON_MAX_KEY: cfg.resolved_common_max()
        },
    }
    paths = {}
    for split, imgs, anns in (('train', train_imgs, train_anns),
                              ('val', val_imgs, val_anns)):
        data = {
            'info': info,
            'licenses': [{'id': 0, 'name': 'CC0', 'url': ''}],
            'images': imgs,
            'annotations': anns,
            'categories': cats,
        }
        path = osp.join(out_dir, 'annotations', f'lvis_v1_{split}.json')
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(data, f, separators=(',', ':'))
        paths[split] = path
    return paths


class _NoProgress:

    def update(self, num_tasks: int = 1) -> None:
        pass


def read_frequency_rule(ann_file: str) -> Tuple[int, int]:
    """The r/c/f rule the generator recorded in ``ann_file``.

    Returns:
        tuple[int, int]: ``(rare_max, common_max)``: a class with at most
        ``rare_max`` training images is rare, with at most ``common_max``
        common, else frequent.

    Raises:
        ValueError: If the file records no rule (it was not made by
            :func:`generate_synthetic_lvis`).
    """
    with open(ann_file, encoding='utf-8') as f:
        info = json.load(f).get('info') or {}
    rule = info.get('frequency_rule') or {}
    if _RARE_MAX_KEY not in rule or _COMMON_MAX_KEY not in rule:
        raise ValueError(
            f'{ann_file} records no frequency rule (info.frequency_rule with '
            f'{_RARE_MAX_KEY} and {_COMMON_MAX_KEY}); make the dataset with '
            'tools/make_synthetic_lvis.py')
    return int(rule[_RARE_MAX_KEY]), int(rule[_COMMON_MAX_KEY])


#: Where :func:`write_heldout_split` writes the held-out split by default,
#: relative to the dataset root (its images go to ``heldout2017/``); the
#: benchmark writes it where its config's ``heldout_ann_file`` says.
HELDOUT_ANN_FILE = 'annotations/lvis_v1_train_heldout.json'
# first image id of the held-out split (train from 1, val from 100001)
_HELDOUT_FIRST_ID = 200001


def heldout_image_counts(image_count: np.ndarray,
                         fraction: float) -> np.ndarray:
    """Images per class of the held-out split: ``ceil(fraction x n_c)`` for
    a class in ``n_c`` training images, so the split follows the training
    distribution and still holds every class once (a rare class of 1-10
    images gets 1)."""
    if not 0 < fraction <= 1:
        raise ValueError(f'fraction must be in (0, 1], got {fraction}')
    n = np.asarray(image_count, np.int64)
    if n.ndim != 1 or (n < 1).any():
        raise ValueError('image_count must be a 1-d array of counts >= 1, '
                         f'got {n.tolist()}')
    # a small tolerance so that e.g. 0.1 x 30 is 3, not 4
    return np.ceil(fraction * n - 1e-9).astype(np.int64)


def write_heldout_split(out_dir: str, fraction: float = 0.1,
                        show_progress: bool = True,
                        ann_file: Optional[str] = None) -> str:
    """Add a held-out part of the training distribution to a dataset made by
    :func:`generate_synthetic_lvis`, for choosing post-hoc parameters (never
    on val).

    It is what holding out a part of a larger training set would leave: new
    images drawn like the training split (same classes, sizes and
    rendering), class ``c`` in :func:`heldout_image_counts` of its training
    images, with as many classes per image as the training split (so a bit
    more than ``fraction x num_train_images`` images: the per-class counts
    round up); nothing trains on them. The images and annotations of the
    training and val files are not touched (the split draws from its own
    random stream), so runs trained before it was added stay valid.

    The two files are then written by the library's
    :func:`mmlongtail.datasets.split_heldout`, the one owner of the
    ``info.heldout_split`` record: the training images and the new ones
    form the source, ``{annotations}/lvis_v1_train_and_heldout.json``
    (``info.heldout`` says how the new images were drawn), whose given
    held-out part is the new images (at ``ann_file``) and whose remaining
    part is the training images, written back to the training file (same
    images, annotations and categories; its ``info`` gains the record). So
    the calibration sweep, given the held-out file with a config that trains
    on the training file, knows that the model never saw those images. Both
    parts' categories keep the training split's r/c/f groups; their
    ``image_count`` / ``instance_count`` are each part's own.
    Deterministic for the dataset's seed and ``fraction``.

    Args:
        out_dir (str): The dataset's root.
        fraction (float): See :func:`heldout_image_counts`.
        show_progress (bool): Show a progress bar.
        ann_file (str, optional): Where to write the annotation file: the
            path a config names (the benchmark passes its config's
            ``heldout_ann_file``, so the config is the one owner of where
            the split is); defaults to ``{out_dir}/`` :data:`HELDOUT_ANN_FILE`
            for callers without a config. It must be in the training
            file's folder (where the library looks for a remaining part's
            held-out twin).

    Returns:
        str: The annotation file.

    Raises:
        FileNotFoundError: If ``out_dir`` has no training annotation file.
        ValueError: If that file was not made by the generator, or
            ``ann_file`` is not beside it.
    """
    from mmengine.utils import ProgressBar

    from mmlongtail.datasets.heldout_split import split_heldout

    train_file = osp.join(out_dir, 'annotations', 'lvis_v1_train.json')
    if not osp.isfile(train_file):
        raise FileNotFoundError(
            f'{train_file} not found; make the dataset first '
            '(tools/make_synthetic_lvis.py)')
    path = ann_file or osp.join(out_dir, HELDOUT_ANN_FILE)
    folder = osp.dirname(osp.abspath(train_file))
    if osp.dirname(osp.abspath(path)) != folder:
        raise ValueError(
            f'the held-out file {path} must be in the training file\'s '
            f'folder {folder}: that is where a remaining part\'s held-out '
            'twin is looked for')
    with open(train_file, encoding='utf-8') as f:
        train = json.load(f)
    info = dict(train.get('info') or {})
    info.pop('heldout_split', None)  # a training file split before
    if 'config' not in info:
        raise ValueError(f'{train_file} records no generator config '
                         '(info.config); it was not made by '
                         'generate_synthetic_lvis')
    cfg = SyntheticLVISConfig(**info['config'])
    names = category_table(cfg.num_classes)
    cats = train['categories']
    if [c['name'] for c in cats] != [f'{col}_{shape}'
                                     for shape, col in names]:
        raise ValueError(f'{train_file}: its categories are not those its '
                         'info.config generates')
    train_imgs = [im for im in train['images']
                  if im['id'] < _HELDOUT_FIRST_ID]
    train_counts = np.array([c['image_count'] for c in cats], np.int64)
    counts = heldout_image_counts(train_counts, fraction)
    # as many classes per image as in training
    per_image_classes = train_counts.sum() / cfg.num_train_images
    num_images = max(int(counts.max()),
                     math.ceil(counts.sum() / per_image_classes))
    # its own stream: the train / val draws stay as they were
    rng = np.random.default_rng([cfg.seed, 0x4E1D])
    per_image = _assign(counts, num_images, rng)
    os.makedirs(osp.join(out_dir, 'heldout2017'), exist_ok=True)
    progress = ProgressBar(num_images) if show_progress else _NoProgress()
    train_ids = {im['id'] for im in train_imgs}
    train_anns = [a for a in train['annotations']
                  if a['image_id'] in train_ids]
    first_ann = 1 + max((a['id'] for a in train_anns), default=0)
    imgs, anns = _make_split(per_image, 'heldout', _HELDOUT_FIRST_ID,
                             first_ann, cfg, names, rng, out_dir, progress)
    info['heldout'] = dict(fraction=float(fraction), images=num_images,
                           source=osp.basename(train_file))
    pool = osp.join(folder, 'lvis_v1_train_and_heldout.json')
    with open(pool, 'w', encoding='utf-8') as f:
        json.dump(
            dict(info=info, licenses=train.get('licenses', []),
                 images=train_imgs + imgs, annotations=train_anns + anns,
                 categories=cats), f, separators=(',', ':'))
    split_heldout(pool, folder, seed=cfg.seed,
                  heldout_image_ids=[im['id'] for im in imgs],
                  file_names=dict(heldout=osp.basename(path),
                                  remaining=osp.basename(train_file)))
    return path
