"""Per-category LVIS results as written by ``mmlongtail.LVISMetric``.

The metric writes ``{outfile_prefix}.per_class.json`` (format
``mmlongtail.lvis_per_class/1``, see :mod:`mmlongtail.evaluation.lvis_metric`).
:func:`load_per_class` reads it into a :class:`PerClassResult`, and
:func:`group_table` reduces it to LVIS's rare / common / frequent groups.
"""
import json
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from mmlongtail.datasets.category_stats import (FREQUENCY_GROUPS,
                                                CategoryStats)

PER_CLASS_FORMAT = 'mmlongtail.lvis_per_class/1'
GROUP_NAMES = {'r': 'rare', 'c': 'common', 'f': 'frequent'}


@dataclass
class PerClassResult:
    """Per-category results of one evaluation.

    Attributes:
        cat_ids (np.ndarray): ``(C,)`` int64, sorted.
        names (list[str]): ``C`` names.
        frequency (list[str]): ``C`` LVIS groups ``'r'/'c'/'f'`` of the
            evaluation's ground truth (what APr/APc/APf use).
        num_gt (np.ndarray): ``(C,)`` ground-truth instances evaluated.
        image_count (np.ndarray): ``(C,)`` training image counts recorded in
            the ground truth's categories (``-1`` where absent).
        instance_count (np.ndarray): ``(C,)`` likewise (``-1`` where absent).
        metrics (dict): ``{'bbox' | 'segm': {'summary': {...},
            'per_class': {'AP' | 'AP50' | 'AP75' | 'AR': (C,) float64 with
            NaN for categories without ground truth}}}``.
        source (str): The file read.
    """
    cat_ids: np.ndarray
    names: List[str]
    frequency: List[str]
    num_gt: np.ndarray
    image_count: np.ndarray
    instance_count: np.ndarray
    metrics: Dict[str, dict]
    source: str = '<memory>'

    @property
    def iou_types(self) -> List[str]:
        return list(self.metrics)

    def per_class(self, iou_type: str, key: str = 'AP') -> np.ndarray:
        """``(C,)`` float64 per-category ``key`` (NaN: no ground truth)."""
        if iou_type not in self.metrics:
            raise KeyError(f'{self.source} has no {iou_type!r} results; it '
                           f'has {self.iou_types}')
        return self.metrics[iou_type]['per_class'][key]


def load_per_class(path: str) -> PerClassResult:
    """Read a ``{outfile_prefix}.per_class.json`` written by LVISMetric."""
    with open(path, encoding='utf-8') as f:
        doc = json.load(f)
    if doc.get('format') != PER_CLASS_FORMAT:
        raise ValueError(f'{path} is not a {PER_CLASS_FORMAT} file (format='
                         f'{doc.get("format")!r}); write it with '
                         "LVISMetric(outfile_prefix=...)")
    cats = doc['categories']

    def _arr(key: str) -> np.ndarray:
        return np.array([-1 if c.get(key) is None else c[key] for c in cats],
                        np.int64)

    metrics = {}
    for m, d in doc['metrics'].items():
        metrics[m] = {
            'summary': d['summary'],
            'per_class': {
                k: np.array([np.nan if v is None else v for v in vals],
                            np.float64)
                for k, vals in d['per_class'].items()
            }
        }
    return PerClassResult(
        cat_ids=np.array([c['id'] for c in cats], np.int64),
        names=[c['name'] for c in cats],
        frequency=[c['frequency'] for c in cats],
        num_gt=_arr('num_gt'),
        image_count=_arr('image_count'),
        instance_count=_arr('instance_count'),
        metrics=metrics,
        source=path)


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
