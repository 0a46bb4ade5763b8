"""Annotation category ids to labels: one owner, for the category
statistics and the fractal dimensions of box locations."""
import numpy as np


def category_labels(cat_ids: np.ndarray, category_ids: np.ndarray,
                    source: str = '<dict>') -> np.ndarray:
    """``(A,)`` int64 label of each annotation's ``category_id`` (its
    position in the sorted ``cat_ids``, as mmdet's ``cat2label``).

    Raises:
        ValueError: An id not in ``cat_ids``, naming up to 10 of them and
            ``source``.
    """
    label = np.searchsorted(cat_ids, category_ids)
    ok = (label < len(cat_ids)) & (
        cat_ids[np.minimum(label, len(cat_ids) - 1)] == category_ids)
    if not ok.all():
        unknown = sorted(set(category_ids[~ok].tolist()))[:10]
        raise ValueError(f'malformed annotation file {source}: annotations '
                         f'refer to unknown category ids {unknown}')
    return label
