"""``mmlongtail.LVISMetric``: LVIS box and mask AP on NumPy 2, fast.

Same interface and result keys as mmdet 3.3.0's ``LVISMetric``
(``lvis/bbox_AP``, ``_AP50``, ``_AP75``, ``_APs``, ``_APm``, ``_APl``,
``_APr``, ``_APc``, ``_APf`` and the same for ``segm``), with two evaluators
behind it (see :mod:`mmlongtail.evaluation.lvis_backends`):

* ``backend='fast'`` (default): faster-coco-eval's C++ evaluator in LVIS mode;
* ``backend='lvis'``: the official lvis-api 0.5.3, patched for NumPy 2.

Both follow LVIS's protocol (Gupta et al., CVPR 2019): at most 300 detections
per image, kept by score across all categories, and federated ground truth
(``neg_category_ids``, ``not_exhaustive_category_ids``).

Files written under ``outfile_prefix`` (when given):

* ``{prefix}.bbox.json`` / ``{prefix}.segm.json``: detections in the LVIS
  results format (what the LVIS evaluation server takes);
* ``{prefix}.per_class.json``: per-category AP / AP50 / AP75 / AR and the
  summary, the input of ``tools/analyze_longtail.py``. Its format is
  documented in :func:`mmlongtail.analysis.load_per_class` and is::

      {"format": "mmlongtail.lvis_per_class/1", "backend": "fast",
       "ann_file": ..., "num_images": ..., "max_dets": 300,
       "categories": [{"id", "name", "frequency", "image_count",
                       "instance_count", "num_gt"}, ...],   # sorted by id
       "metrics": {"bbox": {"summary": {"AP": ..., "APr": ..., ...},
                            "per_class": {"AP": [...], "AP50": [...],
                                          "AP75": [...], "AR": [...]}},
                   "segm": {...}}}

  with ``null`` for categories that have no ground truth in the evaluated
  images.
"""
import itertools
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_local_path
from mmengine.logging import MMLogger

from mmlongtail.datasets.category_stats import StatsSource, load_category_stats
from mmlongtail.registry import METRICS
from .lvis_backends import (AP_KEYS, AR_KEYS, BACKENDS, IOU_TYPES,
                            DetectionColumns, EvalOutput, LVISGroundTruth,
                            encode_masks, normalize_gt, run_evaluation,
                            topk_per_image, xyxy_to_xywh)

PER_CLASS_FORMAT = 'mmlongtail.lvis_per_class/1'


def _to_numpy(x: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a NumPy array."""
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _take(x: Any, idx: Optional[np.ndarray]) -> Any:
    """``x[idx]`` for tensors, arrays and lists; ``x`` when ``idx`` is None."""
    if idx is None:
        return x
    if hasattr(x, 'detach'):
        import torch
        return x[torch.as_tensor(idx, device=x.device, dtype=torch.long)]
    if isinstance(x, (list, tuple)):
        return [x[i] for i in idx]
    return np.asarray(x)[idx]


def _compact_rles(masks: Any) -> List[dict]:
    """Masks as compressed RLE dicts with ``str`` counts.

    Accepts ``(N, H, W)`` binary masks (tensor or array), encoded in one
    pycocotools call, or a list of already encoded RLE dicts.
    """
    if isinstance(masks, (list, tuple)):
        rles = list(masks)
    else:
        rles = encode_masks(_to_numpy(masks))
    out = []
    for r in rles:
        c = r['counts']
        out.append({
            'size': [int(r['size'][0]), int(r['size'][1])],
            'counts': c.decode() if isinstance(c, bytes) else c
        })
    return out


@METRICS.register_module()
class LVISMetric(BaseMetric):
    """LVIS evaluation metric with an official and a fast backend.

    Args:
        ann_file (str, optional): LVIS-format annotation file (with
            ``neg_category_ids``/``not_exhaustive_category_ids`` per image and
            ``frequency`` per category, as LVIS v1 val has). If None, the
            ground truth is built from the data samples' ``instances``; then
            ``category_stats`` must give the categories' frequency groups, and
            federated fields are used only if the samples carry them.
            Defaults to None.
        metric (str | list[str]): ``'bbox'``, ``'segm'`` or both.
            Defaults to ``'bbox'``.
        classwise (bool): Log a per-category AP table and add
            ``{metric}_{name}_precision`` entries. Defaults to False.
        metric_items (list[str], optional): Which summary entries to return,
            from ``AP, AP50, AP75, APs, APm, APl, APr, APc, APf, AR@300,
            ARs@300, ARm@300, ARl@300``. Defaults to the nine AP entries.
        format_only (bool): Only write the result files (needs
            ``outfile_prefix``). Defaults to False.
        outfile_prefix (str, optional): Prefix of the files written (see the
            module docstring), e.g. ``'work_dirs/x/lvis'``. Defaults to None
            (nothing written).
        backend (str): ``'fast'`` (faster-coco-eval) or ``'lvis'`` (lvis-api).
            Defaults to ``'fast'``.
        max_dets (int): Detections kept per image by score across categories.
            Defaults to 300, LVIS's rule.
        category_stats (str | dict, optional): Frequency groups for ground
            truth built from data samples, any source
            :func:`~mmlongtail.datasets.load_category_stats` takes (e.g.
            ``'lvis_v1'``); label ``i`` is the stats' ``i``-th category.
            With ``ann_file``, used only for categories that carry no
            ``frequency`` (those that carry ``image_count`` otherwise get
            LVIS's rule applied to it). Defaults to None.
        collect_device (str): ``'cpu'`` or ``'gpu'``, for gathering results
            across ranks. Defaults to ``'cpu'``.
        prefix (str, optional): Metric name prefix. Defaults to ``'lvis'``.
        backend_args (dict, optional): File backend arguments for reading
            ``ann_file``. Defaults to None.
    """

    default_prefix: Optional[str] = 'lvis'

    def __init__(self,
                 ann_file: Optional[str] = None,
                 metric: Union[str, Sequence[str]] = 'bbox',
                 classwise: bool = False,
                 metric_items: Optional[Sequence[str]] = None,
                 format_only: bool = False,
                 outfile_prefix: Optional[str] = None,
                 backend: str = 'fast',
                 max_dets: int = 300,
                 category_stats: Optional[StatsSource] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 backend_args: Optional[dict] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metrics = [metric] if isinstance(metric, str) else list(metric)
        for m in self.metrics:
            if m not in IOU_TYPES:
                raise KeyError(f'metric must be one of {IOU_TYPES}, got '
                               f'{m!r} (proposal metrics are not supported)')
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got '
                             f'{backend!r}')
        if metric_items is not None:
            bad = [k for k in metric_items if k not in AP_KEYS + AR_KEYS]
            if bad:
                raise KeyError(f'metric_items {bad} are not LVIS results; '
                               f'choose from {AP_KEYS + AR_KEYS}')
        if format_only and outfile_prefix is None:
            raise ValueError('format_only=True needs outfile_prefix, where '
                             'the result files are written')
        self.classwise = classwise
        self.metric_items = list(metric_items) if metric_items else list(
            AP_KEYS)
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix
        self.backend = backend
        self.max_dets = int(max_dets)
        self.category_stats = category_stats
        self.ann_file = ann_file
        self.backend_args = backend_args
        self._gt: Optional[LVISGroundTruth] = None
        if ann_file is not None:
            self._gt = self._load_gt(ann_file)

    # ------------------------------------------------------------------
    # ground truth

    def _load_gt(self, ann_file: str) -> LVISGroundTruth:
        with get_local_path(ann_file, backend_args=self.backend_args) as p:
            with open(p, encoding='utf-8') as f:
                dataset = json.load(f)
        logger = MMLogger.get_current_instance()
        freq = None
        if self.category_stats is not None:
            cs = load_category_stats(self.category_stats)
            freq = dict(zip(cs.cat_ids.tolist(), cs.frequency))
        gt = LVISGroundTruth(
            normalize_gt(dataset, ann_file, frequency=freq, logger=logger),
            ann_file)
        # build the evaluator's index now, as mmdet loads LVIS in __init__
        if self.backend == 'fast':
            gt.faster_coco()
        else:
            gt.lvis_api()
        return gt

    def _gt_from_samples(self, gts: List[dict]) -> LVISGroundTruth:
        """LVIS-format ground truth from the collected data-sample fields."""
        import pycocotools.mask as mask_util
        logger = MMLogger.get_current_instance()
        classes = (self.dataset_meta or {}).get('classes')
        if self.category_stats is None:
            raise ValueError(
                'LVISMetric without ann_file builds the ground truth from the '
                'data samples and needs category_stats= (e.g. \'lvis_v1\' or '
                'a stats/annotation file) for the r/c/f groups; or give '
                'ann_file.')
        stats = load_category_stats(
            self.category_stats,
            num_classes=len(classes) if classes is not None else None,
            owner='the dataset (dataset_meta["classes"])')
        cat_ids = stats.cat_ids
        categories = [{
            'id': int(cid),
            'name': (classes[i] if classes is not None else stats.names[i]),
            'frequency': stats.frequency[i],
            'image_count': int(stats.image_count[i]),
            'instance_count': int(stats.instance_count[i]),
        } for i, cid in enumerate(cat_ids)]
        images, anns, n_ignored = [], [], 0
        seen = set()
        for g in gts:
            if g['img_id'] in seen:
                continue
            seen.add(g['img_id'])
            img = {
                'id': int(g['img_id']),
                'width': int(g['width']),
                'height': int(g['height'])
            }
            for key in ('neg_category_ids', 'not_exhaustive_category_ids'):
                if g.get(key) is not None:
                    img[key] = [int(c) for c in g[key]]
            images.append(img)
            for inst in g['anns']:
                label = int(inst['bbox_label'])
                if not 0 <= label < len(cat_ids):
                    raise ValueError(
                        f'ground-truth label {label} of image {g["img_id"]} '
                        f'is outside the {len(cat_ids)} classes')
                x1, y1, x2, y2 = (float(v) for v in inst['bbox'])
                ann = {
                    'id': len(anns) + 1,
                    'image_id': img['id'],
                    'category_id': int(cat_ids[label]),
                    'bbox': [x1, y1, x2 - x1, y2 - y1],
                    'area': (x2 - x1) * (y2 - y1),
                }
                n_ignored += int(bool(inst.get('ignore_flag', 0)))
                mask = inst.get('mask')
                if mask is not None and len(mask) > 0:
                    if isinstance(mask, list):
                        rle = mask_util.merge(
                            mask_util.frPyObjects(mask, img['height'],
                                                  img['width']))
                    else:
                        rle = mask
                    c = rle['counts']
                    ann['segmentation'] = mask if isinstance(mask, list) else {
                        'size': list(rle['size']),
                        'counts': c.decode() if isinstance(c, bytes) else c
                    }
                    ann['area'] = float(mask_util.area(rle))
                anns.append(ann)
        if n_ignored:
            logger.warning(
                f'{n_ignored} ground-truth instances have ignore_flag=1; LVIS '
                'has no crowd regions, so they are evaluated as ordinary '
                'ground truth.')
        dataset = {'images': images, 'annotations': anns,
                   'categories': categories}
        return LVISGroundTruth(
            normalize_gt(dataset, 'the data samples', logger=logger),
            'the data samples')

    def _num_classes(self) -> Optional[int]:
        if self._gt is not None:
            return self._gt.num_classes
        classes = (self.dataset_meta or {}).get('classes')
        return None if classes is None else len(classes)

    # ------------------------------------------------------------------
    # collection

    def _check_labels(self, labels: np.ndarray, img_id: Any,
                      num_classes: Optional[int]) -> None:
        if num_classes is None or labels.size == 0:
            return
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(
                f'prediction labels {sorted(set(labels[bad].tolist()))[:10]} '
                f'of image {img_id} are outside the dataset\'s {num_classes} '
                f'classes (valid labels: 0..{num_classes - 1}). Check the '
                'head\'s num_classes against the dataset.')

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Keep each image's predictions as a few compact arrays.

        The best ``max_dets`` detections by score are kept (LVIS's rule);
        masks are RLE-encoded in one pycocotools call per image. One entry is
        appended to ``self.results`` per data sample, so mmengine's
        cross-rank collection (which trims padding by count) applies.

        Args:
            data_batch: Unused.
            data_samples (Sequence[dict]): Each with ``img_id``,
                ``ori_shape`` and ``pred_instances`` (``bboxes`` ``(N, 4)``
                xyxy, ``scores`` ``(N,)``, ``labels`` ``(N,)``, optionally
                ``masks`` ``(N, H, W)`` or RLE list and ``mask_scores``).
        """
        num_classes = self._num_classes()
        for ds in data_samples:
            pred = ds['pred_instances']
            img_id = ds['img_id']
            scores = _to_numpy(pred['scores']).astype(np.float32).ravel()
            keep = topk_per_image(scores, self.max_dets)
            labels = _to_numpy(_take(pred['labels'], keep)).astype(
                np.int64).ravel()
            self._check_labels(labels, img_id, num_classes)
            entry: Dict[str, Any] = {
                'img_id': int(img_id),
                'bboxes': _to_numpy(_take(pred['bboxes'], keep)).astype(
                    np.float32).reshape(-1, 4),
                'scores': scores if keep is None else scores[keep],
                'labels': labels.astype(np.int32),
            }
            if 'segm' in self.metrics:
                if 'masks' not in pred:
                    raise KeyError(
                        "metric 'segm' needs pred_instances.masks; the model "
                        'predicted none (is it a box-only detector?)')
                if 'mask_scores' in pred:
                    ms = _to_numpy(pred['mask_scores']).astype(
                        np.float32).ravel()
                    mkeep = topk_per_image(ms, self.max_dets)
                    mlabels = _to_numpy(_take(pred['labels'], mkeep)).astype(
                        np.int32).ravel()
                    entry['segm'] = {
                        'bboxes': _to_numpy(_take(pred['bboxes'],
                                                  mkeep)).astype(
                                                      np.float32).reshape(
                                                          -1, 4),
                        'scores': ms if mkeep is None else ms[mkeep],
                        'labels': mlabels,
                    }
                    entry['masks'] = _compact_rles(_take(pred['masks'], mkeep))
                else:
                    entry['masks'] = _compact_rles(_take(pred['masks'], keep))
            if self._gt is None:
                h, w = ds['ori_shape'][:2]
                entry['gt'] = {
                    'img_id': int(img_id),
                    'width': int(w),
                    'height': int(h),
                    'anns': ds.get('instances', None),
                    'neg_category_ids': ds.get('neg_category_ids'),
                    'not_exhaustive_category_ids':
                    ds.get('not_exhaustive_category_ids'),
                }
                if entry['gt']['anns'] is None:
                    raise KeyError(
                        'LVISMetric without ann_file needs the ground truth '
                        "in each data sample ('instances'); give ann_file.")
            self.results.append(entry)

    # ------------------------------------------------------------------
    # conversion

    def _columns(self, results: Sequence[dict], gt: LVISGroundTruth,
                 iou_type: str) -> DetectionColumns:
        """All detections as columns, for one iou type (vectorized)."""
        parts = [r['segm'] if iou_type == 'segm' and 'segm' in r else r
                 for r in results]
        counts = np.array([p['scores'].shape[0] for p in parts], np.int64)
        img_ids = np.repeat(
            np.array([r['img_id'] for r in results], np.int64), counts)
        if counts.sum() == 0:
            labels = np.zeros(0, np.int64)
            boxes = np.zeros((0, 4), np.float32)
            scores = np.zeros(0, np.float32)
        else:
            labels = np.concatenate([p['labels'] for p in parts]).astype(
                np.int64)
            boxes = np.concatenate([p['bboxes'] for p in parts])
            scores = np.concatenate([p['scores'] for p in parts])
        bad = (labels < 0) | (labels >= gt.num_classes)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f'prediction labels {sorted(set(labels[bad].tolist()))[:10]} '
                f'(first in image {int(img_ids[first])}) are outside the '
                f'{gt.num_classes} categories of {gt.source} (valid labels: '
                f'0..{gt.num_classes - 1}).')
        known = np.isin(img_ids, gt.img_ids)
        if not known.all():
            unknown = sorted(set(img_ids[~known].tolist()))[:10]
            raise ValueError(f'predictions for image ids {unknown} that are '
                             f'not in the ground truth {gt.source}')
        seg = None
        if iou_type == 'segm':
            seg = [m for r in results for m in r['masks']]
        return DetectionColumns(
            image_id=img_ids,
            category_id=gt.cat_ids[labels],
            bbox=xyxy_to_xywh(boxes),
            score=scores.astype(np.float64),
            segmentation=seg)

    # ------------------------------------------------------------------
    # evaluation

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Evaluate the gathered results.

        Args:
            results (list): The ``self.results`` entries of every rank.

        Returns:
            dict: ``{metric}_{item}`` to floats rounded to 3 decimals (mmdet's
            convention; ``-1`` where LVIS leaves an entry undefined), plus
            ``{metric}_{name}_precision`` with ``classwise``.
        """
        logger = MMLogger.get_current_instance()
        gt = self._gt
        if gt is None:
            gt = self._gt_from_samples([r['gt'] for r in results])
        classes = (self.dataset_meta or {}).get('classes')
        if classes is not None and len(classes) != gt.num_classes:
            raise ValueError(
                f'the dataset has {len(classes)} classes but the ground truth '
                f'{gt.source} has {gt.num_classes} categories; evaluate with '
                'the annotation file of the dataset the model predicts')
        eval_results: Dict[str, float] = OrderedDict()
        outputs: Dict[str, EvalOutput] = {}
        prefix = self.outfile_prefix
        if prefix is not None:
            os.makedirs(osp.dirname(osp.abspath(prefix)), exist_ok=True)
        for metric in self.metrics:
            dets = self._columns(results, gt, metric)
            if prefix is not None:
                path = f'{prefix}.{metric}.json'
                with open(path, 'w', encoding='utf-8') as f:
                    json.dump(dets.to_anns(), f)
                logger.info(f'{metric} results written to {path}')
            if self.format_only:
                continue
            if len(dets) == 0:
                logger.warning(
                    f'LVISMetric: no {metric} predictions at all over '
                    f'{len(results)} images; reporting zeros.')
            out = run_evaluation(self.backend, gt, dets, metric,
                                 self.max_dets)
            outputs[metric] = out
            self._log_summary(logger, metric, out, len(dets))
            for k in self.metric_items:
                eval_results[f'{metric}_{k}'] = round(
                    float(out.summary[k]), 3)
            if self.classwise:
                self._classwise(logger, metric, gt, out, eval_results)
        if self.format_only:
            logger.info(f'results saved under {osp.dirname(prefix)}')
            return eval_results
        if prefix is not None:
            path = self.write_per_class(f'{prefix}.per_class.json', gt,
                                        outputs)
            logger.info(f'per-class AP written to {path}')
        return eval_results

    def _log_summary(self, logger: MMLogger, metric: str, out: EvalOutput,
                     num_dets: int) -> None:
        s = out.summary
        lines = [f'LVIS {metric} ({self.backend} backend, {num_dets} '
                 f'detections, max_dets={self.max_dets}):']
        for k in AP_KEYS + AR_KEYS:
            lines.append(f'  {k:<8} {s[k]:.3f}')
        logger.info('\n'.join(lines))

    def _classwise(self, logger: MMLogger, metric: str, gt: LVISGroundTruth,
                   out: EvalOutput, eval_results: dict) -> None:
        from terminaltables import AsciiTable
        ap = out.per_class()['AP']
        rows = []
        for name, freq, v in zip(gt.cat_names, gt.frequency, ap):
            eval_results[f'{metric}_{name}_precision'] = (
                float('nan') if np.isnan(v) else round(float(v), 3))
            rows.append((name, freq, 'nan' if np.isnan(v) else f'{v:0.3f}'))
        ncol = 3
        per_row = 2
        flat = list(itertools.chain(*rows))
        table = [['category', 'freq', 'AP'] * per_row]
        width = ncol * per_row
        table += [list(r) for r in itertools.zip_longest(
            *[flat[i::width] for i in range(width)], fillvalue='')]
        logger.info(f'\nper-category {metric} AP\n' + AsciiTable(table).table)

    def write_per_class(self, path: str, gt: LVISGroundTruth,
                        outputs: Dict[str, EvalOutput]) -> str:
        """Write the per-category results file (format in the module
        docstring) and return its path."""
        cats = {int(c['id']): c for c in gt.dataset['categories']}
        anns = gt.dataset['annotations']
        ann_cat = np.fromiter((a['category_id'] for a in anns), np.int64,
                              len(anns))
        num_gt = np.bincount(
            np.searchsorted(gt.cat_ids, ann_cat), minlength=gt.num_classes)

        def _opt_int(v: Any) -> Optional[int]:
            return None if v is None else int(v)

        def _list(a: np.ndarray) -> list:
            return [None if np.isnan(v) else float(v) for v in a.tolist()]

        doc = {
            'format': PER_CLASS_FORMAT,
            'backend': self.backend,
            'ann_file': self.ann_file,
            'num_images': int(gt.img_ids.shape[0]),
            'max_dets': self.max_dets,
            'categories': [{
                'id': int(cid),
                'name': gt.cat_names[i],
                'frequency': gt.frequency[i],
                'image_count': _opt_int(cats[int(cid)].get('image_count')),
                'instance_count':
                _opt_int(cats[int(cid)].get('instance_count')),
                'num_gt': int(num_gt[i]),
            } for i, cid in enumerate(gt.cat_ids.tolist())],
            'metrics': {
                m: {
                    'summary': {k: float(v)
                                for k, v in o.summary.items()},
                    'per_class':
                    {k: _list(v)
                     for k, v in o.per_class().items()},
                }
                for m, o in outputs.items()
            },
        }
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(doc, f)
        return path
