"""Per-category LVIS results as written by ``mmlongtail.LVISMetric``.

The file format has one owner, :mod:`mmlongtail.evaluation.per_class_file`
(``write`` / ``load``); :func:`load_per_class` is its ``load``, and
:func:`group_table` reduces a result to LVIS's rare / common / frequent
groups.
"""
from typing import Dict, Optional, Sequence, Union

import numpy as np

from mmlongtail.datasets.category_stats import (FREQUENCY_GROUPS,
                                                CategoryStats)
from mmlongtail.evaluation.per_class_file import PerClassResult
from mmlongtail.evaluation.per_class_file import load as load_per_class

GROUP_NAMES = {'r': 'rare', 'c': 'common', 'f': 'frequent'}

__all__ = ['PerClassResult', 'load_per_class', 'training_counts',
           'group_table', 'check_same_classes', 'GROUP_NAMES']


def check_same_classes(classes: Union[Sequence[str], int], source: str,
                       other: Union[Sequence[str], int], other_source: str,
                       hint: str = '') -> None:
    """Refuse two descriptions of a model's classes that disagree.

    Args:
        classes: Class names in label order, or only their number when the
            names are not known.
        source (str): What ``classes`` come from (a file, a checkpoint).
        other: Likewise.
        other_source (str): What ``other`` comes from.
        hint (str): What to do, appended to the message.

    Raises:
        ValueError: Naming both sources, both class counts, and the first
            label whose names differ (with how many differ).
    """
    count = classes if isinstance(classes, int) else len(classes)
    other_count = other if isinstance(other, int) else len(other)
    hint = f'. {hint}' if hint else ''
    if count != other_count:
        first = '' if isinstance(classes, int) or isinstance(
            other, int) else (f' (first names {list(classes[:3])} vs '
                              f'{list(other[:3])})')
        raise ValueError(f'{source} has {count} classes but {other_source} '
                         f'has {other_count}{first}{hint}')
    if isinstance(classes, int) or isinstance(other, int):
        return
    differ = [i for i, (a, b) in enumerate(zip(classes, other)) if a != b]
    if differ:
        i = differ[0]
        raise ValueError(
            f'{source} and {other_source} name their {count} classes '
            f'differently: {len(differ)} differ, the first at label {i}: '
            f'{classes[i]!r} vs {other[i]!r}{hint}')


def training_counts(result: PerClassResult,
                    stats: Optional[CategoryStats] = None,
                    kind: str = 'image_count') -> np.ndarray:
    """``(C,)`` training counts of the evaluated categories.

    From ``stats`` when given (matched by category id; ``ValueError`` naming
    the ids it lacks), else from the counts recorded in the ground truth's
    categories (LVIS v1 val carries the train counts).

    Args:
        kind (str): ``'image_count'`` or ``'instance_count'``.
    """
    if kind not in ('image_count', 'instance_count'):
        raise ValueError(f"kind must be 'image_count' or 'instance_count', "
                         f'got {kind!r}')
    if stats is None:
        counts = getattr(result, kind)
        if (counts < 0).any():
            raise ValueError(
                f'{result.source} records no {kind} for some categories; '
                'pass training statistics (--stats lvis_v1 or a train '
                'annotation file)')
        return counts
    pos = np.searchsorted(stats.cat_ids, result.cat_ids)
    pos = np.minimum(pos, len(stats.cat_ids) - 1)
    ok = stats.cat_ids[pos] == result.cat_ids
    if not ok.all():
        raise ValueError(
            f'the training statistics {stats.source} lack category ids '
            f'{result.cat_ids[~ok][:10].tolist()} of {result.source}')
    names = [stats.names[i] for i in pos]
    differ = [i for i, (a, b) in enumerate(zip(names, result.names))
              if a != b]
    if differ:
        i = differ[0]
        raise ValueError(
            f'the training statistics {stats.source} and {result.source} '
            f'name their categories differently: {len(differ)} of '
            f'{len(names)} ids differ, the first id {int(result.cat_ids[i])}'
            f': {names[i]!r} vs {result.names[i]!r}. The statistics are of '
            'another dataset: pass the train annotation file (or a stats '
            'JSON) of the evaluated classes')
    return getattr(stats, kind)[pos]


def group_table(result: PerClassResult,
                iou_type: str) -> Dict[str, Dict[str, float]]:
    """AP / AP50 / AR per LVIS frequency group and over all categories.

    Means over the categories of the group that have ground truth, which is
    how LVIS averages APr/APc/APf (a category's precision is -1 everywhere
    when it has no ground truth).

    Returns:
        dict: ``{'r' | 'c' | 'f' | 'all': {'num_classes', 'AP', 'AP50',
        'AR'}}``; NaN where a group has no evaluated category.
    """
    freq = np.asarray(result.frequency)
    out = {}
    for g in FREQUENCY_GROUPS + ('all', ):
        mask = np.ones(len(freq), bool) if g == 'all' else freq == g
        row: Dict[str, float] = {}
        ap = result.per_class(iou_type, 'AP')[mask]
        row['num_classes'] = int(np.isfinite(ap).sum())
        for key in ('AP', 'AP50', 'AR'):
            v = result.per_class(iou_type, key)[mask]
            v = v[np.isfinite(v)]
            row[key] = float(v.mean()) if v.size else float('nan')
        out[g] = row
    return out
