"""LVIS evaluation backends and the vectorized prediction conversion.

Two evaluators compute LVIS's metrics (Gupta et al., CVPR 2019) on the same
inputs:

* ``'lvis'``: the official lvis-api (``lvis.LVISEval``), run on NumPy 2
  through :func:`mmlongtail.compat.patch_lvis_numpy`. Pure Python per
  (image, category) pair, so minutes on LVIS v1 val.
* ``'fast'``: faster-coco-eval's C++ evaluator in LVIS mode
  (``COCOeval_faster(..., lvis_style=True)``), which applies the same federated
  rules: detections of a category neither annotated in nor listed as negative
  for an image are dropped, and unmatched detections of a category listed in
  the image's ``not_exhaustive_category_ids`` are ignored.

Both keep at most ``max_dets`` (300) detections per image, by score across all
categories; this cut is applied by :func:`topk_per_image` when predictions are
collected, so both evaluators see the same detections.

Predictions travel as a few NumPy columns (:class:`DetectionColumns`) and are
turned into the per-detection dicts the evaluators index in one pass at the
end; boxes are converted to ``xywh`` and labels to category ids with array
operations.

The ``'fast'`` path differs from stock faster-coco-eval in how much it visits,
not in what it computes (the tests compare both backends with lvis-api run
directly):

1. detections LVIS would drop (category neither annotated in nor negative for
   their image) are removed with one vectorized lookup before any dict is
   built (on LVIS-like data that is most of them);
2. each category is matched and accumulated by faster-coco-eval's C++ code
   over only the images where it has ground truth or a kept detection; the
   other (image, category) pairs contribute nothing, and categories without
   ground truth are -1 (left out of every mean) whatever their detections.
   On the benchmark's 1,500 images this visits ~7k of 1.45M pairs;
3. the summary (AP, APr, ...) is computed from the accumulated arrays by
   :func:`summarize_lvis`, with lvis-api's definitions.

Ground truth ``iscrowd`` is not an LVIS concept: lvis-api ignores it while
COCO-style evaluators treat crowd boxes as ignore regions, so ground truth
with ``iscrowd=1`` would make the backends differ. LVIS files have none.
"""
import copy
import logging
import math
from dataclasses import dataclass
from itertools import repeat
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mmlongtail.datasets.category_stats import frequency_group
from . import faster_coco
from .pooled import outcomes_from_lvis_eval, pooled_summary

#: Summary keys, in the order lvis-api reports them.
AP_KEYS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf')
AR_KEYS = ('AR@300', 'ARs@300', 'ARm@300', 'ARl@300')
BACKENDS = ('fast', 'lvis')
#: ``'boundary'``: mask IoU replaced by min(mask IoU, boundary IoU) (Cheng et
#: al., "Boundary IoU", CVPR 2021), the LVIS 2021 challenge's mask metric.
IOU_TYPES = ('bbox', 'segm', 'boundary')
MASK_TYPES = ('segm', 'boundary')
#: Boundary width as a fraction of the image diagonal (the challenge's 0.02).
BOUNDARY_DILATION_RATIO = 0.02


@dataclass
class DetectionColumns:
    """All detections of an evaluation, one row each.

    Attributes:
        image_id (np.ndarray): ``(N,)`` int64.
        category_id (np.ndarray): ``(N,)`` int64 dataset category ids.
        bbox (np.ndarray): ``(N, 4)`` float64 ``[x, y, w, h]``.
        score (np.ndarray): ``(N,)`` float64.
        segmentation (list, optional): ``N`` compressed RLE dicts (``counts``
            a str), for ``segm``.
    """
    image_id: np.ndarray
    category_id: np.ndarray
    bbox: np.ndarray
    score: np.ndarray
    segmentation: Optional[list] = None

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def subset(self, idx: np.ndarray) -> 'DetectionColumns':
        """The rows ``idx`` (int array)."""
        seg = None if self.segmentation is None else [
            self.segmentation[i] for i in idx.tolist()
        ]
        return DetectionColumns(self.image_id[idx], self.category_id[idx],
                                self.bbox[idx], self.score[idx], seg)

    def to_anns(self) -> List[dict]:
        """Per-detection dicts in the LVIS results format (JSON-ready)."""
        cols = [
            self.image_id.tolist(),
            self.category_id.tolist(),
            self.bbox.tolist(),
            self.score.tolist()
        ]
        if self.segmentation is None:
            keys = ('image_id', 'category_id', 'bbox', 'score')
        else:
            keys = ('image_id', 'category_id', 'bbox', 'score',
                    'segmentation')
            cols.append(self.segmentation)
        return [dict(zip(keys, row)) for row in zip(*cols)]


@dataclass
class EvalOutput:
    """What one evaluator returns for one iou type.

    Attributes:
        summary (dict): ``AP_KEYS`` and ``AR_KEYS`` to floats (``-1`` where
            undefined, as lvis-api reports).
        precision (np.ndarray): ``(T, R, K, A)`` interpolated precision over
            IoU thresholds, recall thresholds, categories (sorted ids) and
            area ranges (all, small, medium, large); ``-1`` where a category
            has no ground truth.
        recall (np.ndarray): ``(T, K, A)``.
        cat_ids (list[int]): The ``K`` category ids.
        pooled (dict, optional): AP^pool per pool (``'all'``, ``'r'``,
            ``'c'``, ``'f'``; see :mod:`mmlongtail.evaluation.pooled`), when
            asked for.
    """
    summary: Dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    cat_ids: List[int]
    pooled: Optional[Dict[str, float]] = None

    def per_class(self) -> Dict[str, np.ndarray]:
        """``(K,)`` float64 arrays AP, AP50, AP75, AR (area 'all'); NaN for
        categories without ground truth in the evaluated images."""

        def _mean(x: np.ndarray, axes: Tuple[int, ...]) -> np.ndarray:
            valid = x > -1
            num = np.where(valid, x, 0).sum(axis=axes)
            den = valid.sum(axis=axes)
            with np.errstate(invalid='ignore', divide='ignore'):
                return np.where(den > 0, num / np.maximum(den, 1), np.nan)

        p = self.precision[..., 0]  # (T, R, K)
        r = self.recall[..., 0]  # (T, K)
        return {
            'AP': _mean(p, (0, 1)),
            'AP50': _mean(p[:1], (0, 1)),
            'AP75': _mean(p[5:6], (0, 1)),
            'AR': _mean(r, (0, )),
        }


def xyxy_to_xywh(bboxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` ``[x1, y1, x2, y2]`` to float64 ``[x, y, w, h]``."""
    b = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
    out = b.copy()
    out[:, 2:] -= b[:, :2]
    return out


def topk_per_image(scores: np.ndarray, max_dets: int) -> Optional[np.ndarray]:
    """Indices of the ``max_dets`` best detections of one image, or None when
    all are kept.

    Ties keep their original order (a stable sort on descending score), which
    is what lvis-api's ``LVISResults.limit_dets_per_image`` does; the kept
    detections come out in descending score order, also like lvis-api.
    """
    if max_dets < 0 or scores.shape[0] <= max_dets:
        return None
    return np.argsort(-scores, kind='stable')[:max_dets]


def encode_masks(masks: np.ndarray) -> List[dict]:
    """RLE-encode ``(N, H, W)`` binary masks in one pycocotools call.

    Returns compressed RLE dicts whose ``counts`` are ``bytes``.
    """
    import pycocotools.mask as mask_util
    masks = np.asarray(masks)
    if masks.shape[0] == 0:
        return []
    if masks.dtype == np.bool_:
        masks = masks.view(np.uint8)
    elif masks.dtype != np.uint8:
        masks = (masks > 0.5).astype(np.uint8) if masks.dtype.kind == 'f' \
            else (masks != 0).astype(np.uint8)
    return mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))


# --------------------------------------------------------------------------
# ground truth


class LVISGroundTruth:
    """An LVIS-format ground-truth dict plus lazily built evaluator objects.

    Args:
        dataset (dict): ``images``, ``annotations``, ``categories``. Images
            must carry ``neg_category_ids`` and
            ``not_exhaustive_category_ids`` and categories ``frequency``, as in
            LVIS; use :func:`normalize_gt` to fill them in.
        source (str): Where it came from, for messages.
    """

    def __init__(self, dataset: dict, source: str = '<memory>') -> None:
        self.dataset = dataset
        self.source = source
        self.cat_ids = np.array(
            sorted(int(c['id']) for c in dataset['categories']), np.int64)
        cats = {int(c['id']): c for c in dataset['categories']}
        self.cat_names = [str(cats[i].get('name', i)) for i in self.cat_ids]
        self.frequency = [str(cats[i].get('frequency', '')) for i in
                          self.cat_ids]
        self.img_ids = np.array(
            sorted(int(i['id']) for i in dataset['images']), np.int64)
        self._lvis = None
        self._coco = None
        self._eval_keys: Optional[np.ndarray] = None

    @property
    def num_classes(self) -> int:
        return int(self.cat_ids.shape[0])

    def federated_mask(self, dets: DetectionColumns) -> np.ndarray:
        """``(N,)`` bool: which detections LVIS evaluates at all.

        A detection counts only if its category is annotated in its image or
        listed in the image's ``neg_category_ids``; LVIS drops the others
        before matching (after the per-image top-``max_dets`` cut), so
        dropping them earlier changes no number.
        """
        if self._eval_keys is None:
            K = self.num_classes
            img_index = {int(i): k for k, i in enumerate(self.img_ids)}
            keys = []
            for img in self.dataset['images']:
                k = img_index[int(img['id'])] * K
                keys.extend(k + c for c in np.searchsorted(
                    self.cat_ids, np.asarray(img['neg_category_ids'],
                                             np.int64)).tolist())
            anns = self.dataset['annotations']
            a_img = np.fromiter((a['image_id'] for a in anns), np.int64,
                                len(anns))
            a_cat = np.fromiter((a['category_id'] for a in anns), np.int64,
                                len(anns))
            a_key = np.searchsorted(self.img_ids, a_img) * K + np.searchsorted(
                self.cat_ids, a_cat)
            self._eval_keys = np.unique(
                np.concatenate([np.asarray(keys, np.int64), a_key]))
        key = np.searchsorted(self.img_ids, dets.image_id) * \
            self.num_classes + np.searchsorted(self.cat_ids, dets.category_id)
        pos = np.searchsorted(self._eval_keys, key)
        pos = np.minimum(pos, max(len(self._eval_keys) - 1, 0))
        return (self._eval_keys[pos] == key) if len(self._eval_keys) else \
            np.zeros(len(key), bool)

    def images_per_category(
            self, dets: DetectionColumns) -> Dict[int, List[int]]:
        """``{category id: sorted image ids}`` where the category has ground
        truth or one of ``dets``."""
        anns = self.dataset['annotations']
        img = np.concatenate([
            np.fromiter((a['image_id'] for a in anns), np.int64, len(anns)),
            dets.image_id
        ])
        cat = np.concatenate([
            np.fromiter((a['category_id'] for a in anns), np.int64,
                        len(anns)), dets.category_id
        ])
        pairs = np.unique(np.stack([cat, img], 1), axis=0)
        cats, starts = np.unique(pairs[:, 0], return_index=True)
        groups = np.split(pairs[:, 1], starts[1:])
        return {
            int(c): g.tolist()
            for c, g in zip(cats.tolist(), groups)
        }

    def cat_ids_with_annotations(self) -> np.ndarray:
        """Sorted ids of the categories annotated in at least one image."""
        anns = self.dataset['annotations']
        return np.unique(
            np.fromiter((a['category_id'] for a in anns), np.int64,
                        len(anns)))

    def lvis_api(self):
        """``lvis.LVIS`` over this dataset (built once)."""
        if self._lvis is None:
            from lvis import LVIS

            # lvis-api 0.5.3 only reads files; build it from the dict instead
            # of writing one, through its own indexing code.
            api = LVIS.__new__(LVIS)
            api.logger = logging.getLogger('lvis.lvis')
            api.dataset = self.dataset
            api._create_index()
            self._lvis = api
        return self._lvis

    def faster_coco(self):
        """``faster_coco_eval.COCO`` over this dataset (built once)."""
        if self._coco is None:
            from faster_coco_eval import COCO
            self._coco = COCO(self.dataset, print_function=_silent)
        return self._coco


def normalize_gt(dataset: dict, source: str = '<memory>',
                 frequency: Optional[Dict[int, str]] = None,
                 logger=None) -> dict:
    """Check an LVIS/COCO-format dict and fill the fields LVIS needs.

    * images without ``neg_category_ids`` / ``not_exhaustive_category_ids`` get
      empty lists (then only categories annotated in an image are evaluated
      there; a warning says so);
    * categories without ``frequency`` take it from ``frequency`` (category
      id to ``'r'/'c'/'f'``), else from their ``image_count`` by LVIS's rule,
      else ``ValueError``.

    Modifies and returns ``dataset``.
    """
    for key in ('images', 'categories'):
        if not isinstance(dataset.get(key), list):
            raise ValueError(f'ground truth {source} has no {key!r} list')
    dataset.setdefault('annotations', [])
    missing = 0
    for img in dataset['images']:
        if 'neg_category_ids' not in img or \
                'not_exhaustive_category_ids' not in img:
            missing += 1
            img.setdefault('neg_category_ids', [])
            img.setdefault('not_exhaustive_category_ids', [])
    if missing and logger is not None:
        logger.warning(
            f'{missing} of {len(dataset["images"])} images of {source} have '
            'no neg_category_ids/not_exhaustive_category_ids; they are '
            'evaluated on their annotated categories only (not federated).')
    derived = 0
    for cat in dataset['categories']:
        if 'frequency' not in cat:
            cid = int(cat['id'])
            if (frequency is None or cid not in frequency) and \
                    cat.get('image_count') is not None:
                # LVIS's rule on the training image count the category records
                cat['frequency'] = frequency_group(int(cat['image_count']))
                derived += 1
                continue
            if frequency is None or cid not in frequency:
                raise ValueError(
                    f'category {cid} ({cat.get("name")!r}) of {source} has no '
                    "'frequency'; LVIS's APr/APc/APf need it. Give the "
                    "metric category_stats= (e.g. 'lvis_v1' or a stats file).")
            cat['frequency'] = frequency[cid]
    if derived and logger is not None:
        logger.warning(
            f'{derived} categories of {source} have no frequency; derived '
            'from their image_count with LVIS\'s rule (rare <= 10 images, '
            'common <= 100).')
    return dataset


# --------------------------------------------------------------------------
# evaluators


def _silent(*args, **kwargs) -> None:
    """A print function that prints nothing."""


def _empty_output(gt: LVISGroundTruth, iou_type: str,
                  pooled: bool = False) -> EvalOutput:
    K = gt.num_classes
    return EvalOutput(
        summary={k: 0.0 for k in AP_KEYS + AR_KEYS},
        precision=np.zeros((10, 101, K, 4)),
        recall=np.zeros((10, K, 4)),
        cat_ids=gt.cat_ids.tolist(),
        pooled={p: 0.0 for p in ('all', 'r', 'c', 'f')} if pooled else None)


def mask_boundary(mask: np.ndarray,
                  dilation_ratio: float = BOUNDARY_DILATION_RATIO
                  ) -> np.ndarray:
    """The inner boundary band of a binary mask (Boundary IoU's ``G_d ∩ G``).

    The band is the mask minus its erosion by a 3x3 square applied
    ``d = max(1, round(dilation_ratio * image diagonal))`` times, the image
    padded with one row/column of background so that a mask cut by the image
    border has a boundary there too (Cheng et al., CVPR 2021, Sec. 3).

    Args:
        mask (np.ndarray): ``(H, W)`` uint8 0/1.
        dilation_ratio (float): Band width over the image diagonal.

    Returns:
        np.ndarray: ``(H, W)`` uint8 0/1.
    """
    import cv2
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * math.hypot(h, w))))
    padded = np.pad(mask.astype(np.uint8), 1)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)
    return mask - eroded[1:h + 1, 1:w + 1]


def _boundary_rle(rle: dict, dilation_ratio: float) -> dict:
    import pycocotools.mask as mask_util
    band = mask_boundary(mask_util.decode(rle), dilation_ratio)
    return mask_util.encode(np.asfortranarray(band[:, :, None]))[0]


def _lvis_eval_class(iou_type: str, dilation_ratio: float):
    """lvis-api's ``LVISEval``, or for ``'boundary'`` a subclass whose IoU is
    min(mask IoU, boundary IoU) per pair (lvis-api 0.5.3 has no boundary
    mode; its ``lvis_challenge_2021`` branch computes the same quantity)."""
    from lvis import LVISEval
    if iou_type != 'boundary':
        return LVISEval

    class BoundaryLVISEval(LVISEval):

        def compute_iou(self, img_id, cat_id):
            import pycocotools.mask as mask_util
            ious = super().compute_iou(img_id, cat_id)  # mask IoU
            gt, dt = self._get_gt_dt(img_id, cat_id)
            if len(gt) == 0 or len(dt) == 0:
                return ious
            idx = np.argsort([-d['score'] for d in dt], kind='mergesort')
            dt = [dt[i] for i in idx]
            for a in gt + dt:
                if 'boundary' not in a:
                    a['boundary'] = _boundary_rle(a['segmentation'],
                                                  dilation_ratio)
            b = mask_util.iou([d['boundary'] for d in dt],
                              [g['boundary'] for g in gt], [0] * len(gt))
            return np.minimum(np.asarray(ious), np.asarray(b))

    return BoundaryLVISEval


def evaluate_lvis_api(gt: LVISGroundTruth, dets: DetectionColumns,
                      iou_type: str, max_dets: int = 300,
                      pooled: bool = False,
                      dilation_ratio: float = BOUNDARY_DILATION_RATIO
                      ) -> EvalOutput:
    """Evaluate with the official lvis-api (``LVISResults`` + ``LVISEval``).

    ``max_dets=-1`` keeps every detection (the fixed-AP protocol, whose
    per-class cut the caller has made); ``pooled`` adds AP^pool, accumulated
    from ``LVISEval.eval_imgs``; ``iou_type='boundary'`` matches on
    min(mask IoU, boundary IoU).
    """
    from mmlongtail.compat import patch_lvis_numpy
    patch_lvis_numpy()
    from lvis import LVISResults

    if len(dets) == 0:
        return _empty_output(gt, iou_type, pooled)
    lvis_gt = gt.lvis_api()
    # lvis-api logs a warning about user-provided results on every call
    res_logger = logging.getLogger('lvis.results')
    level = res_logger.level
    res_logger.setLevel(logging.ERROR)
    try:
        lvis_dt = LVISResults(lvis_gt, dets.to_anns(), max_dets=max_dets)
    finally:
        res_logger.setLevel(level)
    ev = _lvis_eval_class(iou_type, dilation_ratio)(
        lvis_gt, lvis_dt, 'bbox' if iou_type == 'bbox' else 'segm')
    ev.params.max_dets = max_dets
    ev.evaluate()
    pooled_ap = None
    if pooled:
        pooled_ap = pooled_summary(
            outcomes_from_lvis_eval(ev),
            [c['frequency'] for c in lvis_gt.load_cats(ev.params.cat_ids)],
            np.asarray(ev.params.rec_thrs), len(ev.params.iou_thrs))
    ev.accumulate()
    ev.summarize()
    res = ev.get_results()
    md = ev.params.max_dets
    summary = {k: float(res[k]) for k in AP_KEYS}
    for k in AR_KEYS:
        summary[k] = float(res[k.replace('300', str(md))])
    return EvalOutput(summary, np.asarray(ev.eval['precision']),
                      np.asarray(ev.eval['recall']), list(ev.params.cat_ids),
                      pooled_ap)


def _faster_dt(gt: LVISGroundTruth, dets: DetectionColumns, iou_type: str):
    """A ``faster_coco_eval.COCO`` results object built directly from the
    columns (what ``COCO.loadRes`` would produce, without its per-detection
    Python pass)."""
    from faster_coco_eval import COCO
    n = len(dets)
    # lvis-api and COCO's loadRes give box-format results the box area, also
    # when they carry a mask (mmdet's segm results do).
    area = (dets.bbox[:, 2] * dets.bbox[:, 3]).tolist()
    cols = [
        dets.image_id.tolist(),
        dets.category_id.tolist(),
        dets.bbox.tolist(),
        dets.score.tolist(), area,
        range(1, n + 1),
        repeat(0, n)
    ]
    keys = ['image_id', 'category_id', 'bbox', 'score', 'area', 'id',
            'iscrowd']
    if iou_type in MASK_TYPES:
        keys.append('segmentation')
        cols.append(dets.segmentation)
    anns = [dict(zip(keys, row)) for row in zip(*cols)]
    res = COCO(print_function=_silent)
    res.dataset = {
        'images': gt.dataset['images'],
        'categories': gt.dataset['categories'],
        'annotations': anns,
    }
    res.createIndex()
    return res


def summarize_lvis(precision: np.ndarray, recall: np.ndarray,
                   frequency: Sequence[str],
                   iou_thrs: np.ndarray) -> Dict[str, float]:
    """LVIS's summary numbers from accumulated arrays.

    Each entry is the mean of the selected ``precision`` ``(T, R, K, A)`` or
    ``recall`` ``(T, K, A)`` cells that are not -1, or -1 when none is, as
    lvis-api's ``LVISEval.summarize`` defines them. Areas are ordered all,
    small, medium, large; ``frequency`` gives each of the K categories' group.
    """

    def _mean(x: np.ndarray) -> float:
        v = x[x > -1]
        return float(v.mean()) if v.size else -1.0

    def _t(thr: float) -> int:
        return int(np.flatnonzero(np.isclose(iou_thrs, thr))[0])

    freq = np.asarray(frequency)
    out = {
        'AP': _mean(precision[..., 0]),
        'AP50': _mean(precision[_t(0.5), :, :, 0]),
        'AP75': _mean(precision[_t(0.75), :, :, 0]),
        'APs': _mean(precision[..., 1]),
        'APm': _mean(precision[..., 2]),
        'APl': _mean(precision[..., 3]),
    }
    for g in ('r', 'c', 'f'):
        out[f'AP{g}'] = _mean(precision[:, :, freq == g, 0])
    for key, a in zip(AR_KEYS, range(4)):
        out[key] = _mean(recall[..., a])
    return out


def evaluate_faster(gt: LVISGroundTruth, dets: DetectionColumns,
                    iou_type: str, max_dets: int = 300,
                    pooled: bool = False,
                    dilation_ratio: float = BOUNDARY_DILATION_RATIO
                    ) -> EvalOutput:
    """Evaluate with faster-coco-eval's C++ evaluator in LVIS mode.

    ``max_dets=-1`` keeps every detection (fixed AP); ``pooled`` adds
    AP^pool; ``iou_type='boundary'`` uses faster-coco-eval's boundary IoU
    (min(mask IoU, boundary IoU), the same bands as lvis-api's challenge
    branch: checked by the tests and ``tools/compare_lvis_official.py``).
    """
    faster_coco.require()
    if len(dets) == 0:
        return _empty_output(gt, iou_type, pooled)
    coco_gt = gt.faster_coco()
    # Build per-detection dicts only for the detections LVIS evaluates: on
    # LVIS-like data most detections fall in categories neither annotated
    # nor verified absent in their image.
    keep = gt.federated_mask(dets)
    dets = dets.subset(np.flatnonzero(keep))
    coco_dt = _faster_dt(gt, dets, iou_type)
    # A category without ground truth in the evaluated images has precision
    # and recall -1 (it is left out of every mean) whatever its detections, so
    # only the categories with ground truth are evaluated; pooled AP also
    # counts the false positives of the others.
    gt_cats = gt.cat_ids_with_annotations()
    K = gt.num_classes
    if len(gt_cats) == 0:
        return EvalOutput({k: -1.0 for k in AP_KEYS + AR_KEYS},
                          -np.ones((10, 101, K, 4)), -np.ones((10, K, 4)),
                          gt.cat_ids.tolist(),
                          {p: -1.0 for p in ('all', 'r', 'c', 'f')}
                          if pooled else None)
    ev = faster_coco.faster_lvis_eval_class()(
        coco_gt, coco_dt, iou_type, lvis_style=True, print_function=_silent,
        boundary_dilation_ratio=dilation_ratio)
    if max_dets < 0:  # no per-image cap: as many as any pair has
        pair = np.unique(np.stack([dets.image_id, dets.category_id], 1),
                         axis=0, return_counts=True)[1] if len(dets) else [1]
        max_dets = int(max(np.max(pair), 1))
    ev.params.maxDets = [max_dets]
    ev.params.imgIds = gt.img_ids.tolist()
    ev.params.catIds = gt_cats.tolist()
    if pooled:
        ev.record_categories = np.unique(np.concatenate(
            [gt_cats, dets.category_id])).tolist()
    ev.images_per_category = gt.images_per_category(dets)
    ev.evaluate()
    cols = np.searchsorted(gt.cat_ids, np.asarray(ev.params.catIds))
    p = ev.eval['precision'][..., -1]
    r = ev.eval['recall'][..., -1]
    precision = np.full(p.shape[:2] + (K, ) + p.shape[3:], -1.0)
    recall = np.full(r.shape[:1] + (K, ) + r.shape[2:], -1.0)
    precision[:, :, cols] = p
    recall[:, cols] = r
    summary = summarize_lvis(precision, recall, gt.frequency,
                             np.asarray(ev.params.iouThrs))
    pooled_ap = None
    if pooled:
        outcomes = [(i, int(np.searchsorted(gt.cat_ids, c))) + rec
                    for c, recs in ev.records.items() for i, rec in recs]
        pooled_ap = pooled_summary(outcomes, gt.frequency,
                                   np.asarray(ev.params.recThrs),
                                   len(ev.params.iouThrs))
    return EvalOutput(summary, precision, recall, gt.cat_ids.tolist(),
                      pooled_ap)


EVALUATORS = {'fast': evaluate_faster, 'lvis': evaluate_lvis_api}


def run_evaluation(backend: str, gt: LVISGroundTruth, dets: DetectionColumns,
                   iou_type: str, max_dets: int = 300,
                   pooled: bool = False) -> EvalOutput:
    """Dispatch to the evaluator named ``backend`` (``'fast'``/``'lvis'``).

    ``max_dets``: per-image cap (-1: none); ``pooled``: also AP^pool.
    """
    if backend not in EVALUATORS:
        raise ValueError(f'backend must be one of {BACKENDS}, got '
                         f'{backend!r}')
    if iou_type not in IOU_TYPES:
        raise ValueError(f'iou_type must be one of {IOU_TYPES}, got '
                         f'{iou_type!r}')
    return EVALUATORS[backend](gt, dets, iou_type, max_dets, pooled)


def copy_gt(dataset: dict) -> dict:
    """A deep copy (evaluators annotate ground-truth dicts in place)."""
    return copy.deepcopy(dataset)


def concat_columns(parts: Sequence[DetectionColumns]) -> DetectionColumns:
    """Concatenate column sets (e.g. from several ranks)."""
    seg = None
    if parts and parts[0].segmentation is not None:
        seg = [s for p in parts for s in p.segmentation]
    if not parts:
        return DetectionColumns(
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)),
            np.zeros(0), None)
    return DetectionColumns(
        np.concatenate([p.image_id for p in parts]),
        np.concatenate([p.category_id for p in parts]),
        np.concatenate([p.bbox for p in parts]),
        np.concatenate([p.score for p in parts]), seg)
