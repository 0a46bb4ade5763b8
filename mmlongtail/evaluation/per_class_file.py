"""The per-class results file: its one owner (:func:`path_for`, :func:`write`
and :func:`load`).

``LVISMetric(outfile_prefix=P)`` writes ``path_for(P)``, i.e.
``P.per_class.json``;
``tools/analyze_longtail.py`` and :mod:`mmlongtail.analysis` read it. The
format (``mmlongtail.lvis_per_class/2``)::

    {"format": "mmlongtail.lvis_per_class/2", "backend": "fast",
     "ann_file": ..., "num_images": ..., "max_dets": 300,
     "max_dets_per_cat": 10000,
     "categories": [{"id", "name", "frequency", "image_count",
                     "instance_count", "num_gt"}, ...],   # sorted by id
     "metrics": {"bbox": {"summary": {"AP": ..., "APr": ..., ...},
                          "per_class": {"AP": [...], "AP50": [...],
                                        "AP75": [...], "AR": [...]}},
                 "segm": {...}},                  # protocol 'standard'
     "fixed": {"bbox": {"summary": ..., "per_class": ...}},  # 'fixed'
     "pooled": {"bbox": {"summary": {"all": ..., "r": ..., "c": ...,
                                     "f": ...}}}}            # 'pooled'

with ``null`` for categories without ground truth in the evaluated images;
``metrics``, ``fixed`` and ``pooled`` hold the protocols that were run (an
empty ``metrics`` when 'standard' was not). Version 1 files (``metrics``
only) still load.
"""
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

FORMAT = 'mmlongtail.lvis_per_class/2'
#: Appended to a metric's ``outfile_prefix`` (see :func:`path_for`).
SUFFIX = '.per_class.json'
#: Versions :func:`load` reads.
READABLE = ('mmlongtail.lvis_per_class/1', FORMAT)
#: Per-class keys of each protocol with per-class numbers.
PER_CLASS_KEYS = ('AP', 'AP50', 'AP75', 'AR')


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
        metrics (dict): The per-class protocol the analysis reads
            (``protocol``): ``{'bbox' | 'segm' | 'boundary': {'summary':
            {...}, 'per_class': {'AP' | 'AP50' | 'AP75' | 'AR': (C,) float64
            with NaN for categories without ground truth}}}``.
        protocol (str): ``'standard'`` when it was run, else ``'fixed'``.
        protocols (dict): Every protocol's results: ``{'standard' | 'fixed'
            | 'pooled': {iou type: {...}}}`` (pooled: ``summary`` only).
        source (str): The file read.
        max_dets (int, optional): The standard protocol's per-image cap the
            file records (None in memory).
    """
    cat_ids: np.ndarray
    names: List[str]
    frequency: List[str]
    num_gt: np.ndarray
    image_count: np.ndarray
    instance_count: np.ndarray
    metrics: Dict[str, dict]
    source: str = '<memory>'
    protocol: str = 'standard'
    protocols: Dict[str, Dict[str, dict]] = field(default_factory=dict)
    max_dets: Optional[int] = None

    @property
    def iou_types(self) -> List[str]:
        return list(self.metrics)

    def per_class(self, iou_type: str, key: str = 'AP',
                  protocol: Optional[str] = None) -> np.ndarray:
        """``(C,)`` float64 per-category ``key`` (NaN: no ground truth) of
        ``protocol`` (default: :attr:`protocol`)."""
        metrics = self.metrics if protocol is None else \
            self.protocols.get(protocol, {})
        if iou_type not in metrics:
            raise KeyError(
                f'{self.source} has no {iou_type!r} results for protocol '
                f'{protocol or self.protocol!r}; it has '
                f'{ {p: list(m) for p, m in self.protocols.items()} }')
        return metrics[iou_type]['per_class'][key]


def _nan_list(a: np.ndarray) -> list:
    return [None if np.isnan(v) else float(v) for v in a.tolist()]


def _opt_int(v: Any) -> Optional[int]:
    return None if v is None else int(v)


def path_for(outfile_prefix: str) -> str:
    """Where ``LVISMetric(outfile_prefix=outfile_prefix)`` writes the
    per-class file: ``'work_dirs/x/lvis'`` -> ``'work_dirs/x/lvis.per_class.
    json'``."""
    return outfile_prefix + SUFFIX


def write(path: str, *, categories: Sequence[dict],
          num_gt: np.ndarray, backend: str, ann_file: Optional[str],
          num_images: int, max_dets: int, max_dets_per_cat: Optional[int],
          standard: Dict[str, Any], fixed: Dict[str, Any],
          pooled: Dict[str, Dict[str, float]]) -> str:
    """Write a per-class results file and return ``path``.

    Args:
        path (str): Where.
        categories (Sequence[dict]): The ground truth's categories sorted by
            id (``id``, ``name``, ``frequency``, optional ``image_count`` /
            ``instance_count``).
        num_gt (np.ndarray): ``(C,)`` ground-truth instances per category.
        backend (str): The evaluator.
        ann_file (str, optional): The ground truth file.
        num_images (int): Images evaluated.
        max_dets (int): The standard protocol's per-image cap.
        max_dets_per_cat (int, optional): The fixed protocol's per-class cap.
        standard, fixed (dict): ``{iou type: EvalOutput}`` of those
            protocols (anything with ``summary`` and ``per_class()``).
        pooled (dict): ``{iou type: {pool: AP}}``.
    """

    def _block(outputs: Dict[str, Any]) -> dict:
        return {
            m: {
                'summary': {k: float(v) for k, v in o.summary.items()},
                'per_class': {k: _nan_list(v)
                              for k, v in o.per_class().items()},
            }
            for m, o in outputs.items()
        }

    doc = {
        'format': FORMAT,
        'backend': backend,
        'ann_file': ann_file,
        'num_images': int(num_images),
        'max_dets': int(max_dets),
        'max_dets_per_cat': _opt_int(max_dets_per_cat),
        'categories': [{
            'id': int(c['id']),
            'name': str(c.get('name', c['id'])),
            'frequency': str(c.get('frequency', '')),
            'image_count': _opt_int(c.get('image_count')),
            'instance_count': _opt_int(c.get('instance_count')),
            'num_gt': int(n),
        } for c, n in zip(categories, np.asarray(num_gt).tolist())],
        'metrics': _block(standard),
    }
    if fixed:
        doc['fixed'] = _block(fixed)
    if pooled:
        doc['pooled'] = {
            m: {'summary': {k: float(v) for k, v in s.items()}}
            for m, s in pooled.items()
        }
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(doc, f)
    return path


def load(path: str) -> PerClassResult:
    """Read a per-class results file written by :func:`write` (or by
    LVISMetric before the ``fixed``/``pooled`` protocols: version 1)."""
    with open(path, encoding='utf-8') as f:
        doc = json.load(f)
    if doc.get('format') not in READABLE:
        raise ValueError(f'{path} is not a mmlongtail.lvis_per_class file '
                         f'(format={doc.get("format")!r}; this version reads '
                         f'{READABLE}); write it with '
                         "LVISMetric(outfile_prefix=...)")
    cats = doc['categories']

    def _arr(key: str) -> np.ndarray:
        return np.array([-1 if c.get(key) is None else c[key] for c in cats],
                        np.int64)

    def _block(block: dict) -> Dict[str, dict]:
        return {
            m: {
                'summary': d['summary'],
                'per_class': {
                    k: np.array([np.nan if v is None else v for v in vals],
                                np.float64)
                    for k, vals in d.get('per_class', {}).items()
                }
            }
            for m, d in block.items()
        }

    protocols = {}
    if doc.get('metrics'):
        protocols['standard'] = _block(doc['metrics'])
    for name in ('fixed', 'pooled'):
        if doc.get(name):
            protocols[name] = _block(doc[name])
    protocol = 'standard' if 'standard' in protocols else (
        'fixed' if 'fixed' in protocols else 'standard')
    return PerClassResult(
        cat_ids=np.array([c['id'] for c in cats], np.int64),
        names=[c['name'] for c in cats],
        frequency=[c['frequency'] for c in cats],
        num_gt=_arr('num_gt'),
        image_count=_arr('image_count'),
        instance_count=_arr('instance_count'),
        metrics=protocols.get(protocol, {}),
        source=path,
        protocol=protocol,
        protocols=protocols,
        max_dets=_opt_int(doc.get('max_dets')))
