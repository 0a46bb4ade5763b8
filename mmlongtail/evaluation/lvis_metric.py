"""``mmlongtail.LVISMetric``: LVIS box and mask AP on NumPy 2, fast, with the
large-vocabulary protocols.

Same interface and result keys as mmdet 3.3.0's ``LVISMetric``
(``lvis/bbox_AP``, ``_AP50``, ``_AP75``, ``_APs``, ``_APm``, ``_APl``,
``_APr``, ``_APc``, ``_APf`` and the same for ``segm``), with two evaluators
behind it (see :mod:`mmlongtail.evaluation.lvis_backends`):

* ``backend='fast'`` (default): faster-coco-eval's C++ evaluator in LVIS mode;
* ``backend='lvis'``: the official lvis-api 0.5.3, patched for NumPy 2.

Protocols (``protocol=``, one or several; Dave et al., "Evaluating
Large-Vocabulary Object Detectors: The Devil is in the Details", 2021, adopted
by the LVIS 2021 challenge):

* ``'standard'``: LVIS's (Gupta et al., CVPR 2019): at most ``max_dets``
  (300) detections per image, kept by score across all categories; keys
  ``{metric}_AP`` ...;
* ``'fixed'``: no per-image cap; each category keeps its ``max_dets_per_cat``
  (10,000) best detections over the whole set; keys ``{metric}_APfixed``,
  ``_APfixed50``, ``_APfixed75``, ``_APfixed_s/m/l``, ``_APfixed_r/c/f``
  (``ARfixed`` ... when asked for in ``metric_items``);
* ``'pooled'``: AP^pool on the same per-category top-k detections: matched
  per category, precision/recall accumulated over all categories of a pool;
  keys ``{metric}_APpool``, ``_APpool_r``, ``_APpool_c``, ``_APpool_f``.

``metric='boundary'`` evaluates masks with min(mask IoU, boundary IoU)
(dilation ratio 0.02), the challenge's mask metric (keys
``boundary_APfixed`` ... with ``protocol='fixed'``).

All protocols use federated ground truth (``neg_category_ids``,
``not_exhaustive_category_ids``). The fixed and pooled protocols select
detections while images are processed (:class:`~.topk.PerClassTopK`), so
memory is bounded by classes x ``max_dets_per_cat``, not by images; ranks
merge their selections pairwise (see :meth:`LVISMetric.evaluate`).

Each image's predictions are checked as they arrive
(:meth:`LVISMetric.checked_predictions`): finite scores and boxes, no
negative width or height, labels in range, as many boxes as scores and
labels, an image of the ground truth, not given twice. A failed check raises
``ValueError`` naming the image and the first bad detection; nothing is
dropped or clamped.

Files written under ``outfile_prefix`` (when given):

* ``{prefix}.{metric}.json``: the standard protocol's detections, and
  ``{prefix}.{metric}.fixed.json`` the per-category top-k ones, in the LVIS
  results format (what the LVIS evaluation server takes);
* ``{prefix}.per_class.json`` (:func:`~mmlongtail.evaluation.
  per_class_file.path_for`): per-category AP / AP50 / AP75 / AR and the
  summaries, the input of ``tools/analyze_longtail.py``; its format is owned
  by :mod:`mmlongtail.evaluation.per_class_file`.
"""
import itertools
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from mmengine.dist import (broadcast_object_list, collect_results,
                           get_dist_info, is_main_process)
from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_local_path
from mmengine.logging import MMLogger

from mmlongtail.datasets.category_stats import StatsSource, load_category_stats
from mmlongtail.registry import METRICS
from . import per_class_file
from .lvis_backends import BACKENDS, run_evaluation
from .lvis_detections import (DetectionColumns, compact_rles, to_numpy,
                              topk_per_image, xyxy_to_xywh)
from .lvis_eval_output import (AP_KEYS, AR_KEYS, IOU_TYPES, MASK_TYPES,
                               EvalOutput)
from .lvis_gt import LVISGroundTruth, normalize_gt
from .pooled import POOLS
from .topk import PerClassTopK

PROTOCOLS = ('standard', 'fixed', 'pooled')


def protocol_item(item: str, protocol: str) -> str:
    """A summary item's result name under ``protocol``: ``'APr'`` is
    ``'APr'`` (standard), ``'APfixed_r'`` (fixed) or ``'APpool_r'``
    (pooled); ``'AP50'`` is ``'APfixed50'``; ``'AR@300'`` is ``'ARfixed'``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f'protocol must be one of {PROTOCOLS}, got '
                         f'{protocol!r}')
    if protocol == 'standard':
        return item
    tag = 'fixed' if protocol == 'fixed' else 'pool'
    base, rest = item[:2], item[2:].split('@')[0]
    return f'{base}{tag}{rest}' if rest.isdigit() or not rest else \
        f'{base}{tag}_{rest}'


def check_label_range(labels: Any, num_classes: int, image_ids: Any,
                      what: str, owner: str, hint: str = '') -> None:
    """The metric's one label check: every label in ``[0, num_classes)``.

    Args:
        labels (array-like): ``(N,)`` integer labels.
        num_classes (int): The classes of ``owner``.
        image_ids (int or array-like): The image of all labels, or ``(N,)``
            one per label.
        what (str): Whose labels (``'prediction'``, ``'ground-truth'``).
        owner (str): What defines the classes (the ground truth's file, the
            dataset), named in the error.
        hint (str): A sentence on what to do, appended to the error.

    Raises:
        ValueError: Naming the range, the offending labels (at most 10) and
            the first offending label's image.
    """
    labels = np.asarray(labels).ravel()
    bad = (labels < 0) | (labels >= num_classes)
    if not bad.any():
        return
    first = int(np.flatnonzero(bad)[0])
    if np.ndim(image_ids) == 0:
        where = f'of image {image_ids}'
    else:
        ids = np.asarray(image_ids).ravel()
        where = f'of image {ids[first]}' + (
            ' (the first of several)' if len(set(ids[bad].tolist())) > 1
            else '')
    raise ValueError(
        f'{what} labels {sorted(set(labels[bad].tolist()))[:10]} {where} are '
        f'outside the {num_classes} classes of {owner}: labels must lie in '
        f'[0, {num_classes}).' + (f' {hint}' if hint else ''))


def check_predictions(img_id: Any, bboxes: np.ndarray, scores: np.ndarray,
                      labels: np.ndarray,
                      mask_scores: Optional[np.ndarray] = None,
                      num_masks: Optional[int] = None) -> None:
    """The metric's checks of one image's predictions (the label range is
    :func:`check_label_range`'s): as many boxes, scores, labels (and mask
    scores) as detections; finite scores and box coordinates; no negative
    width or height (a zero one is a valid, degenerate box).

    Args:
        img_id (int): The image, named in errors.
        bboxes (np.ndarray): ``(N, 4)`` ``[x1, y1, x2, y2]``.
        scores (np.ndarray): ``(N,)``.
        labels (np.ndarray): ``(N,)``.
        mask_scores (np.ndarray, optional): ``(N,)``.
        num_masks (int, optional): How many masks were given (``N``).

    Raises:
        ValueError: Naming the image, how many detections are wrong, the
            first one (its index and values) and what to check.
    """
    whole = labels.dtype.kind in 'iu' or (
        labels.dtype.kind == 'f' and bool(np.all(np.floor(labels) == labels)))
    if not whole:
        raise ValueError(
            f'prediction labels of image {img_id} must be integers, got '
            f'{labels.dtype} values such as {labels.ravel()[:3].tolist()} '
            '(a fractional label would be cut to an integer)')
    n = scores.shape[0]
    sizes = {'boxes': bboxes.shape[0] if bboxes.ndim == 2 and
             bboxes.shape[1] == 4 else f'shape {tuple(bboxes.shape)}',
             'labels': labels.shape[0]}
    if mask_scores is not None:
        sizes['mask scores'] = mask_scores.shape[0]
    if num_masks is not None:
        sizes['masks'] = num_masks
    if any(v != n for v in sizes.values()):
        raise ValueError(
            f'predictions of image {img_id}: {n} scores but ' + ', '.join(
                f'{v} {k}' for k, v in sizes.items()) +
            ' (boxes must be (N, 4), one per score)')
    if n == 0:
        return
    for what, values in (('scores', scores), ('mask scores', mask_scores),
                         ('box coordinates', bboxes)):
        if values is None:
            continue
        bad = ~np.isfinite(values.reshape(n, -1)).all(1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f'prediction {what} of image {img_id} are not finite: '
                f'{int(bad.sum())} of {n} detections, the first is detection '
                f'{i} with {values[i].tolist()}. Scores and boxes must be '
                'finite; check the model (non-finite weights) and any '
                'test-time scorer.')
    wh = bboxes[:, 2:] - bboxes[:, :2]
    bad = (wh < 0).any(1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f'prediction boxes of image {img_id} have a negative width or '
            f'height: {int(bad.sum())} of {n} detections, the first is '
            f'detection {i} with [x1, y1, x2, y2] = {bboxes[i].tolist()}. '
            'Boxes must be [x1, y1, x2, y2] with x2 >= x1 and y2 >= y1 (not '
            '[x, y, w, h]).')


def check_unique_images(img_ids: Sequence[int], where: str) -> None:
    """Each image's predictions come once.

    Raises:
        ValueError: Naming the repeated image ids (at most 10) and ``where``.
    """
    ids, counts = np.unique(np.asarray(img_ids, np.int64),
                            return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f'predictions for image ids {ids[counts > 1][:10].tolist()} are '
            f'given {counts.max()} times {where}; each image must be '
            'evaluated once (does the dataset list an image twice?)')


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
        metric (str | list[str]): ``'bbox'``, ``'segm'``, ``'boundary'``
            (masks, min(mask IoU, boundary IoU)) or several.
            Defaults to ``'bbox'``.
        protocol (str | list[str]): ``'standard'``, ``'fixed'``,
            ``'pooled'`` or several (see the module docstring).
            Defaults to ``'standard'``.
        classwise (bool): Log a per-category AP table and add
            ``{metric}_{name}_precision`` entries (standard protocol, else
            fixed). Defaults to False.
        metric_items (list[str], optional): Which summary entries to return
            for the standard and fixed protocols, from ``AP, AP50, AP75, APs,
            APm, APl, APr, APc, APf, AR@300, ARs@300, ARm@300, ARl@300``
            (renamed per protocol by :func:`protocol_item`). Defaults to the
            nine AP entries. The pooled protocol always reports its four.
        format_only (bool): Only write the result files (needs
            ``outfile_prefix``). Defaults to False.
        outfile_prefix (str, optional): Prefix of the files written (see the
            module docstring), e.g. ``'work_dirs/x/lvis'``. Defaults to None
            (nothing written).
        backend (str): ``'fast'`` (faster-coco-eval) or ``'lvis'`` (lvis-api).
            Defaults to ``'fast'``.
        max_dets (int): Standard protocol: detections kept per image by score
            across categories. Defaults to 300, LVIS's rule.
        max_dets_per_cat (int): Fixed and pooled protocols: detections kept
            per category over the whole set. Defaults to 10,000, the LVIS
            2021 challenge's rule.
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
                 protocol: Union[str, Sequence[str]] = 'standard',
                 classwise: bool = False,
                 metric_items: Optional[Sequence[str]] = None,
                 format_only: bool = False,
                 outfile_prefix: Optional[str] = None,
                 backend: str = 'fast',
                 max_dets: int = 300,
                 max_dets_per_cat: int = 10000,
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
        self.protocols = [protocol] if isinstance(protocol, str) else list(
            protocol)
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise ValueError(f'protocol must be one or several of '
                             f'{PROTOCOLS}, got {protocol!r}')
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got '
                             f'{backend!r}')
        if int(max_dets_per_cat) < 1:
            raise ValueError(f'max_dets_per_cat must be >= 1, got '
                             f'{max_dets_per_cat}')
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
        #: The files the last evaluation wrote: ``{metric}`` (and
        #: ``{metric}.fixed``) detections, ``per_class``; see the module
        #: docstring.
        self.files_written: Dict[str, str] = {}
        self.backend = backend
        self.max_dets = int(max_dets)
        self.max_dets_per_cat = int(max_dets_per_cat)
        self.category_stats = category_stats
        self.ann_file = ann_file
        self.backend_args = backend_args
        self._gt: Optional[LVISGroundTruth] = None
        if ann_file is not None:
            self._gt = self._load_gt(ann_file)
        # per-category top-k selections ('bbox' and, for mask metrics,
        # 'mask'), made on the first process() call
        self._selections: Dict[str, PerClassTopK] = {}
        # image ids processed since the last evaluation (duplicates refused)
        self._processed: set = set()
        self._gt_img_ids: Optional[set] = None

    @property
    def ground_truth(self) -> Optional[LVISGroundTruth]:
        """The ground truth read from ``ann_file`` (None without one: then
        it is built from the data samples at evaluation)."""
        return self._gt

    @property
    def _standard(self) -> bool:
        return 'standard' in self.protocols

    @property
    def _per_category(self) -> bool:
        """Whether a per-category top-k selection is needed."""
        return 'fixed' in self.protocols or 'pooled' in self.protocols

    def _selection_kinds(self) -> List[str]:
        kinds = []
        if 'bbox' in self.metrics:
            kinds.append('bbox')
        if any(m in MASK_TYPES for m in self.metrics):
            kinds.append('mask')
        return kinds

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
            check_label_range([int(i['bbox_label']) for i in g['anns']],
                              len(cat_ids), g['img_id'], 'ground-truth',
                              f'the category statistics {stats.source}')
            for inst in g['anns']:
                label = int(inst['bbox_label'])
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
        if num_classes is None:  # checked at evaluation, against the gt
            return
        check_label_range(labels, num_classes, img_id, 'prediction',
                          self._classes_owner(),
                          "Check the head's num_classes against the dataset.")

    def _classes_owner(self) -> str:
        """What defines the classes while predictions are collected."""
        if self._gt is not None:
            return f'the ground truth {self._gt.source}'
        return 'the dataset (dataset_meta["classes"])'

    def checked_predictions(self, img_id: Any, pred: dict,
                            num_classes: Optional[int],
                            remember: bool = True) -> dict:
        """One image's predictions with ``bboxes``, ``scores``, ``labels``
        (and ``mask_scores``) as NumPy arrays, after every check of this
        metric: :func:`check_predictions`, :func:`check_label_range`, the
        image known to the ground truth (with ``ann_file``) and, with
        ``remember`` (what :meth:`process` does), not given before in this
        evaluation.

        Raises:
            ValueError: Naming the image and the problem.
        """
        pred = dict(pred)
        pred['bboxes'] = to_numpy(pred['bboxes'])
        pred['scores'] = to_numpy(pred['scores']).ravel()
        pred['labels'] = to_numpy(pred['labels']).ravel()
        if 'mask_scores' in pred:
            pred['mask_scores'] = to_numpy(pred['mask_scores']).ravel()
        check_predictions(img_id, pred['bboxes'], pred['scores'],
                          pred['labels'], pred.get('mask_scores'),
                          len(pred['masks']) if 'masks' in pred else None)
        self._check_labels(pred['labels'], img_id, num_classes)
        img_id = int(img_id)
        if self._gt is not None:
            if self._gt_img_ids is None:
                self._gt_img_ids = set(self._gt.img_ids.tolist())
            if img_id not in self._gt_img_ids:
                raise ValueError(
                    f'predictions for image id {img_id}, which is not in the '
                    f'ground truth {self._gt.source}: evaluate with the '
                    'annotation file of the dataset the images come from')
        if not remember:
            return pred
        if img_id in self._processed:
            raise ValueError(
                f'predictions for image id {img_id} are given a second time '
                'in this evaluation (on this process); each image must be '
                'evaluated once (does the dataset list an image twice?)')
        self._processed.add(img_id)
        return pred

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Keep each image's predictions as a few compact arrays.

        Standard protocol: the best ``max_dets`` detections by score are kept
        (LVIS's rule); masks are RLE-encoded in one pycocotools call per
        image; one entry is appended to ``self.results`` per data sample, so
        mmengine's cross-rank collection (which trims padding by count)
        applies. Fixed / pooled protocols: the detections enter the
        per-category top-``max_dets_per_cat`` selections, and only those
        that can still enter have their masks encoded.

        Args:
            data_batch: Unused.
            data_samples (Sequence[dict]): Each with ``img_id``,
                ``ori_shape`` and ``pred_instances`` (``bboxes`` ``(N, 4)``
                xyxy, ``scores`` ``(N,)``, ``labels`` ``(N,)``, optionally
                ``masks`` ``(N, H, W)`` or RLE list and ``mask_scores``).
        """
        num_classes = self._num_classes()
        needs_masks = any(m in MASK_TYPES for m in self.metrics)
        for ds in data_samples:
            img_id = ds['img_id']
            pred = self.checked_predictions(img_id, ds['pred_instances'],
                                            num_classes)
            if needs_masks and 'masks' not in pred:
                raise KeyError(
                    f'metric {self.metrics} needs pred_instances.masks; the '
                    'model predicted none (is it a box-only detector?)')
            entry: Dict[str, Any] = {'img_id': int(img_id)}
            if self._standard:
                entry.update(self._standard_entry(pred, img_id, num_classes))
            if self._per_category:
                self._select(pred, img_id, num_classes)
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
            if self._standard or self._gt is None:
                self.results.append(entry)

    def _standard_entry(self, pred: dict, img_id: Any,
                        num_classes: Optional[int]) -> Dict[str, Any]:
        """One image's top-``max_dets`` detections (standard protocol)."""
        scores = to_numpy(pred['scores']).astype(np.float32).ravel()
        keep = topk_per_image(scores, self.max_dets)
        labels = to_numpy(_take(pred['labels'], keep)).astype(
            np.int64).ravel()
        entry: Dict[str, Any] = {
            'bboxes': to_numpy(_take(pred['bboxes'], keep)).astype(
                np.float32).reshape(-1, 4),
            'scores': scores if keep is None else scores[keep],
            'labels': labels.astype(np.int32),
        }
        if any(m in MASK_TYPES for m in self.metrics):
            if 'mask_scores' in pred:
                ms = to_numpy(pred['mask_scores']).astype(np.float32).ravel()
                mkeep = topk_per_image(ms, self.max_dets)
                mlabels = to_numpy(_take(pred['labels'], mkeep)).astype(
                    np.int32).ravel()
                entry['segm'] = {
                    'bboxes': to_numpy(_take(pred['bboxes'], mkeep)).astype(
                        np.float32).reshape(-1, 4),
                    'scores': ms if mkeep is None else ms[mkeep],
                    'labels': mlabels,
                }
                entry['masks'] = compact_rles(_take(pred['masks'], mkeep))
            else:
                entry['masks'] = compact_rles(_take(pred['masks'], keep))
        return entry

    def _select(self, pred: dict, img_id: Any,
                num_classes: Optional[int]) -> None:
        """Offer one image's detections to the per-category selections."""
        labels = to_numpy(pred['labels']).astype(np.int64).ravel()
        if not self._selections:
            if num_classes is None:
                raise ValueError(
                    "protocol 'fixed'/'pooled' needs the number of classes "
                    'before evaluation: give ann_file, or a dataset_meta '
                    'with classes')
            self._selections = {
                kind: PerClassTopK(num_classes, self.max_dets_per_cat,
                                   with_masks=kind == 'mask')
                for kind in self._selection_kinds()
            }
        bboxes = None
        for kind, sel in self._selections.items():
            key = 'mask_scores' if kind == 'mask' and \
                'mask_scores' in pred else 'scores'
            scores = to_numpy(pred[key]).astype(np.float32).ravel()
            idx = np.flatnonzero(sel.candidates(labels, scores))
            if bboxes is None:
                bboxes = to_numpy(pred['bboxes']).astype(
                    np.float32).reshape(-1, 4)
            masks = None
            if kind == 'mask':
                masks = compact_rles(_take(pred['masks'], idx)) \
                    if idx.size else []
            sel.add(int(img_id), labels[idx], scores[idx], bboxes[idx],
                    det_idx=idx, masks=masks)

    # ------------------------------------------------------------------
    # conversion

    def _make_columns(self, img_ids: np.ndarray, labels: np.ndarray,
                      boxes: np.ndarray, scores: np.ndarray,
                      seg: Optional[list],
                      gt: LVISGroundTruth) -> DetectionColumns:
        check_label_range(labels, gt.num_classes, img_ids, 'prediction',
                          f'the ground truth {gt.source}',
                          "Check the head's num_classes against the dataset.")
        known = np.isin(img_ids, gt.img_ids)
        if not known.all():
            unknown = sorted(set(img_ids[~known].tolist()))[:10]
            raise ValueError(f'predictions for image ids {unknown} that are '
                             f'not in the ground truth {gt.source}')
        return DetectionColumns(
            image_id=img_ids,
            category_id=gt.cat_ids[labels],
            bbox=xyxy_to_xywh(boxes),
            score=scores.astype(np.float64),
            segmentation=seg)

    def detection_columns(self, results: Sequence[dict], gt: LVISGroundTruth,
                          iou_type: str) -> DetectionColumns:
        """The standard protocol's detections as columns, for one iou type
        (vectorized).

        Args:
            results (Sequence[dict]): The collected ``self.results`` (of
                every rank).
            gt (LVISGroundTruth): The ground truth they are checked against.
            iou_type (str): ``'bbox'``, ``'segm'`` or ``'boundary'``.
        """
        parts = [r['segm'] if iou_type in MASK_TYPES and 'segm' in r else r
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
        seg = None
        if iou_type in MASK_TYPES:
            seg = [m for r in results for m in r['masks']]
        return self._make_columns(img_ids, labels, boxes, scores, seg, gt)

    def _selected_columns(self, gt: LVISGroundTruth,
                          iou_type: str) -> DetectionColumns:
        """The per-category top-k detections as columns, in results-file
        order (image id, then index within the image)."""
        kind = 'mask' if iou_type in MASK_TYPES else 'bbox'
        sel = self._selections.get(kind)
        if sel is None:
            sel = PerClassTopK(gt.num_classes, self.max_dets_per_cat,
                               with_masks=kind == 'mask')
        r = sel.result()
        return self._make_columns(r['img_ids'], r['labels'], r['bboxes'],
                                  r['scores'], r['masks'], gt)

    # ------------------------------------------------------------------
    # evaluation

    def evaluate(self, size: int) -> dict:
        """Evaluate everything processed, on every rank's results.

        The standard protocol's per-image entries (and ground truth from data
        samples) are gathered by mmengine as usual. The per-category
        selections of the fixed and pooled protocols are merged pairwise in a
        binary tree instead of gathered: in round ``j`` (``j = 1, 2, 4...``)
        rank ``r`` with ``r % 2j == j`` sends its selection to rank ``r - j``,
        which merges it into its own and cuts it back to ``max_dets_per_cat``
        per category. Each rank sends once: its selection's rows (image id,
        index in the image, label, score, box: 36 bytes each, plus the RLE
        of each surviving mask) and the ids of the images it processed,
        at most classes x ``max_dets_per_cat`` rows. Rank 0 receives
        ceil(log2(world size)) such messages and holds at most two
        selections at a time, never every rank's detections. An image seen
        by two ranks (samplers pad the last batch) counts once.

        Args:
            size (int): Length of the dataset (trims mmengine's padding of
                the gathered standard entries).

        Returns:
            dict: ``{prefix}/{metric}_{item}`` to floats, on every rank.
        """
        self._processed = set()
        if not self._per_category:
            return super().evaluate(size)
        results = collect_results(self.results, size, self.collect_device,
                                  tmpdir=self.collect_dir)
        self._merge_selections_across_ranks()
        if is_main_process():
            out = [self._prefixed(self.compute_metrics(results))]
        else:
            out = [None]
        broadcast_object_list(out)
        self.results.clear()
        self._selections = {}
        return out[0]

    def evaluate_here(self) -> dict:
        """Evaluate what this process has processed, without exchanging
        anything with other ranks (the evaluation of saved predictions,
        :func:`~mmlongtail.evaluation.streamed_test.evaluate_folder`, feeds
        every image to one process). Then forget it, as :meth:`evaluate`
        does.

        Returns:
            dict: ``{prefix}/{metric}_{item}`` to floats.
        """
        try:
            return self._prefixed(self.compute_metrics(self.results))
        finally:
            self.results.clear()
            self._selections = {}
            self._processed = set()

    def _prefixed(self, metrics: dict) -> dict:
        if not self.prefix:
            return metrics
        return {f'{self.prefix}/{k}': v for k, v in metrics.items()}

    def _merge_selections_across_ranks(self) -> None:
        rank, world = get_dist_info()
        if world == 1:
            return
        import torch.distributed as dist
        step = 1
        while step < world:
            if rank % (2 * step) == step:
                dist.send_object_list(
                    [{k: s.state() for k, s in self._selections.items()}],
                    dst=rank - step)
                self._selections = {}
                return
            if rank % (2 * step) == 0 and rank + step < world:
                got: List[Any] = [None]
                dist.recv_object_list(got, src=rank + step)
                for kind, state in got[0].items():
                    if kind not in self._selections:
                        self._selections[kind] = PerClassTopK(
                            state['num_classes'], state['k'],
                            with_masks=state['masks'] is not None)
                    self._selections[kind].merge(state)
            step *= 2

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Evaluate the gathered results (and the merged selections).

        Args:
            results (list): The ``self.results`` entries of every rank.

        Returns:
            dict: ``{metric}_{item}`` to floats rounded to 3 decimals (mmdet's
            convention; ``-1`` where LVIS leaves an entry undefined), plus
            ``{metric}_{name}_precision`` with ``classwise``.
        """
        logger = MMLogger.get_current_instance()
        self.files_written = {}
        check_unique_images([r['img_id'] for r in results],
                            'in the gathered results of all ranks')
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
        standard: Dict[str, EvalOutput] = {}
        fixed: Dict[str, EvalOutput] = {}
        pooled: Dict[str, Dict[str, float]] = {}
        prefix = self.outfile_prefix
        if prefix is not None:
            os.makedirs(osp.dirname(osp.abspath(prefix)), exist_ok=True)
        runs = []
        if self._standard:
            runs.append(('standard', self.detection_columns))
        if self._per_category:
            runs.append(('fixed', lambda _, g, m: self._selected_columns(
                g, m)))
        for selection, columns in runs:
            for metric in self.metrics:
                dets = columns(results, gt, metric)
                if prefix is not None:
                    suffix = '' if selection == 'standard' else '.fixed'
                    path = f'{prefix}.{metric}{suffix}.json'
                    with open(path, 'w', encoding='utf-8') as f:
                        json.dump(dets.to_anns(), f)
                    self.files_written[f'{metric}{suffix}'] = path
                    logger.info(f'{metric} results written to {path}')
                if self.format_only:
                    continue
                if len(dets) == 0:
                    logger.warning(
                        f'LVISMetric: no {metric} predictions at all over '
                        f'{len(gt.img_ids)} images; reporting zeros.')
                if selection == 'standard':
                    out = run_evaluation(self.backend, gt, dets, metric,
                                         self.max_dets)
                    standard[metric] = out
                    self._report(logger, eval_results, metric, 'standard',
                                 out, len(dets))
                    continue
                out = run_evaluation(self.backend, gt, dets, metric, -1,
                                     pooled='pooled' in self.protocols)
                if 'fixed' in self.protocols:
                    fixed[metric] = out
                    self._report(logger, eval_results, metric, 'fixed', out,
                                 len(dets))
                if 'pooled' in self.protocols:
                    pooled[metric] = out.pooled
                    for pool, v in out.pooled.items():
                        item = 'AP' if pool == 'all' else f'AP{pool}'
                        eval_results[
                            f'{metric}_{protocol_item(item, "pooled")}'] = \
                            round(float(v), 3)
                    logger.info(
                        f'LVIS {metric} AP^pool ({self.backend} backend, '
                        f'{len(dets)} detections, top '
                        f'{self.max_dets_per_cat} per category): ' +
                        ', '.join(f'{p} {out.pooled[p]:.3f}' for p in POOLS))
        if self.format_only:
            logger.info(f'results saved under {osp.dirname(prefix)}')
            return eval_results
        per_class = standard or fixed
        if self.classwise:
            for metric, out in per_class.items():
                self._classwise(logger, metric, gt, out, eval_results)
        if prefix is not None:
            path = self.write_per_class(per_class_file.path_for(prefix), gt,
                                        standard, fixed, pooled)
            self.files_written['per_class'] = path
            logger.info(f'per-class AP written to {path}')
        return eval_results

    def _report(self, logger: MMLogger, eval_results: dict, metric: str,
                protocol: str, out: EvalOutput, num_dets: int) -> None:
        s = out.summary
        cap = (f'max_dets={self.max_dets}' if protocol == 'standard' else
               f'top {self.max_dets_per_cat} per category')
        lines = [f'LVIS {metric}, {protocol} protocol ({self.backend} '
                 f'backend, {num_dets} detections, {cap}):']
        for k in AP_KEYS + AR_KEYS:
            lines.append(f'  {protocol_item(k, protocol):<10} {s[k]:.3f}')
        logger.info('\n'.join(lines))
        for k in self.metric_items:
            eval_results[f'{metric}_{protocol_item(k, protocol)}'] = round(
                float(s[k]), 3)

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
                        standard: Dict[str, EvalOutput],
                        fixed: Optional[Dict[str, EvalOutput]] = None,
                        pooled: Optional[Dict[str, Dict[str, float]]] = None
                        ) -> str:
        """Write the per-category results file
        (:mod:`~mmlongtail.evaluation.per_class_file`) and return its
        path."""
        cats = {int(c['id']): c for c in gt.dataset['categories']}
        anns = gt.dataset['annotations']
        ann_cat = np.fromiter((a['category_id'] for a in anns), np.int64,
                              len(anns))
        num_gt = np.bincount(
            np.searchsorted(gt.cat_ids, ann_cat), minlength=gt.num_classes)
        categories = [
            dict(cats[int(cid)], name=gt.cat_names[i],
                 frequency=gt.frequency[i])
            for i, cid in enumerate(gt.cat_ids.tolist())
        ]
        return per_class_file.write(
            path, categories=categories, num_gt=num_gt, backend=self.backend,
            ann_file=self.ann_file, num_images=int(gt.img_ids.shape[0]),
            max_dets=self.max_dets,
            max_dets_per_cat=self.max_dets_per_cat
            if self._per_category else None,
            standard=standard, fixed=fixed or {}, pooled=pooled or {})
