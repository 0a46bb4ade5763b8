"""The fractal dimension of each class's box locations, FRACAL's spatial
statistic (Alexandridis et al., "Fractal Calibration for long-tailed object
detection", CVPR 2025; official code kostas1515/FRACAL,
``stat_files/get_statistics.py`` and ``stat_files/calculate_fractality.py``).

Every annotation's box centre is taken in coordinates normalized by its
image's size, ``(x / W + w / 2W, y / H + h / 2H)``. For each grid size
``d = 1 .. D`` (``D = 64`` in the official scripts) the unit square is cut into
``d x d`` half-open cells ``[i / d, (i + 1) / d)`` and ``N_c(d)`` counts the
cells holding at least one centre of class ``c`` (centres outside ``[0, 1)``
fall in no cell). The box-counting dimension of class ``c`` is the slope of
the least-squares line of ``log N_c(d)`` against ``log d``, over the grid
sizes with ``d^2`` at most the class's instance count; it is 1 for a class
with fewer than 4 instances, and a slope below 1 is raised to 1 (the official
``box_dim`` variant, the one whose LVIS v1 values the official repository
ships and its head reads). A class spread uniformly over image space tends
to 2, a class always at the same place to 1.

This equals the two official scripts run one after the other on an LVIS-format
file (``get_statistics.py`` then ``calculate_fractality.py --variant
box_dim``), up to the fit: the official code fits the line with
``scipy.optimize.curve_fit`` (iterative, to its default tolerance of
1.5e-8), this module in closed form (the same least squares; they agree to
about 1e-8). We take a class's instances from the
category ids in the file (label = position when sorted by id); the official
script takes ``category_id - 1``, the same for LVIS's ids 1..C.
"""
from typing import Optional, Sequence

import numpy as np

from .category_ids import category_labels

#: The official scripts' largest grid (``calculate_fractality.py -d``).
DEFAULT_MAX_GRID = 64

#: Below this many instances a class's dimension is 1 (official rule).
MIN_INSTANCES = 4


def _malformed(source: str, what: str) -> ValueError:
    return ValueError(f'cannot compute fractal dimensions from {source}: '
                      f'{what}')


def normalized_box_centres(data: dict,
                           cat_ids: Sequence[int],
                           source: str = '<dict>'):
    """The normalized box centre and label of every annotation.

    Args:
        data (dict): A decoded LVIS/COCO-format annotation file (``images``
            with ``width``/``height``, ``annotations`` with ``bbox`` as
            ``[x, y, w, h]``).
        cat_ids (Sequence[int]): ``(C,)`` sorted category ids; label ``i``
            is ``cat_ids[i]``.
        source (str): The file, for error messages.

    Returns:
        tuple: ``cx``, ``cy`` (``(A,)`` float64) and ``label`` (``(A,)``
        int64), one per annotation whose image is listed in ``images``.

    Raises:
        ValueError: No ``images``, an image without a positive width and
            height, an annotation without ``bbox``, or an unknown category.
    """
    images = data.get('images')
    if not isinstance(images, list):
        raise _malformed(source, "no 'images' list (box locations are "
                         'normalized by image width and height)')
    size = {}
    for img in images:
        w, h = img.get('width'), img.get('height')
        if not (isinstance(w, (int, float)) and isinstance(h, (int, float))
                and w > 0 and h > 0):
            raise _malformed(
                source, f'image {img.get("id")!r} has no positive width and '
                f'height (got {w!r}, {h!r})')
        size[img['id']] = (w, h)
    anns = [a for a in data.get('annotations') or [] if a['image_id'] in size]
    for a in anns:
        if len(a.get('bbox') or ()) != 4:
            raise _malformed(source, f'annotation {a.get("id")!r} has no '
                             '[x, y, w, h] bbox')
    box = np.array([a['bbox'] for a in anns], np.float64).reshape(-1, 4)
    wh = np.array([size[a['image_id']] for a in anns],
                  np.float64).reshape(-1, 2)
    cat = np.fromiter((a['category_id'] for a in anns), np.int64, len(anns))
    label = category_labels(np.asarray(cat_ids, np.int64), cat, source)
    # the official get_statistics.py order of operations, for equal floats
    cx = box[:, 0] / wh[:, 0] + (box[:, 2] / wh[:, 0]) / 2
    cy = box[:, 1] / wh[:, 1] + (box[:, 3] / wh[:, 1]) / 2
    return cx, cy, label


def occupied_cells(cx: np.ndarray, cy: np.ndarray, label: np.ndarray,
                   num_classes: int, grid: int) -> np.ndarray:
    """``(C,)`` int64: the cells of a ``grid x grid`` partition of the unit
    square that hold a centre of each class (cells ``[i / grid, (i + 1) /
    grid)``, edges computed as the official script does)."""
    edges = np.arange(grid + 1) * (1 / grid)
    ix = np.searchsorted(edges, cx, side='right') - 1
    iy = np.searchsorted(edges, cy, side='right') - 1
    inside = (ix >= 0) & (ix < grid) & (iy >= 0) & (iy < grid)
    occupied = np.zeros((num_classes, grid * grid), bool)
    occupied[label[inside], iy[inside] * grid + ix[inside]] = True
    return occupied.sum(axis=1)


def box_count_dimension(cx: np.ndarray,
                        cy: np.ndarray,
                        label: np.ndarray,
                        num_classes: int,
                        max_grid: int = DEFAULT_MAX_GRID,
                        names: Optional[Sequence[str]] = None) -> np.ndarray:
    """The box-counting dimension of each class's centres (module
    docstring).

    Args:
        cx, cy (np.ndarray): ``(A,)`` normalized centres.
        label (np.ndarray): ``(A,)`` int labels in ``[0, C)``.
        num_classes (int): ``C``.
        max_grid (int): ``D``, the largest grid. Defaults to 64.
        names (Sequence[str], optional): Class names, for error messages.

    Returns:
        np.ndarray: ``(C,)`` float64, each in ``[1, ...)``.

    Raises:
        ValueError: ``max_grid`` below 2, or a class with at least 4
            instances none of whose centres lies in the unit square.
    """
    if isinstance(max_grid, bool) or not isinstance(max_grid, int) or \
            max_grid < 2:
        raise ValueError(f'max_grid must be an int >= 2, got {max_grid!r}')
    label = np.asarray(label, np.int64)
    grids = np.arange(1, max_grid + 1)
    counts = np.stack([
        occupied_cells(cx, cy, label, num_classes, int(d)) for d in grids
    ], axis=1)  # (C, D)
    instances = np.bincount(label, minlength=num_classes)
    out = np.ones(num_classes, np.float64)
    log_d = np.log(grids)
    for c in np.flatnonzero(instances >= MIN_INSTANCES):
        used = instances[c] >= grids * grids
        n = counts[c, used]
        if (n == 0).any():
            name = names[c] if names is not None else c
            raise ValueError(
                f'class {name!r} has {instances[c]} instances but no box '
                'centre inside its image, so its fractal dimension is '
                'undefined; check the boxes of the annotation file')
        x, y = log_d[used], np.log(n)
        slope = np.sum((x - x.mean()) * (y - y.mean())) / np.sum(
            (x - x.mean())**2)
        out[c] = max(float(slope), 1.0)
    return out


def fractal_dimensions(data: dict,
                       cat_ids: Sequence[int],
                       names: Optional[Sequence[str]] = None,
                       max_grid: int = DEFAULT_MAX_GRID,
                       source: str = '<dict>') -> np.ndarray:
    """``(C,)`` float64 fractal dimension of each category's box locations
    in a decoded LVIS/COCO-format annotation file (label order: categories
    sorted by id). See the module docstring."""
    cx, cy, label = normalized_box_centres(data, cat_ids, source)
    return box_count_dimension(cx, cy, label, len(cat_ids), max_grid, names)
