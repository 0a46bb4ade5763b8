"""Per-class top-k detections over a stream of images, memory-bounded.

The fixed-AP protocol (Dave et al., 2021; the LVIS 2021 challenge) keeps, for
each class, its ``k`` best-scored detections over the whole evaluation set
(``k`` = 10,000) and no per-image cap. :class:`PerClassTopK` selects them
while images are processed, so memory is bounded by classes x k, not by the
number of images:

* each class has a threshold, the score of its k-th kept detection once it
  has k (-inf before); a new detection scored below its class's threshold
  cannot enter and is dropped on arrival (before its mask is encoded);
* the others go to a pending buffer; when that holds as many rows as the
  kept set (and at least ``chunk``), kept + pending are sorted and cut to k
  per class. So at most ``2 x classes x k + chunk`` rows are held, and each
  row is sorted O(1) times on average.

Order: score descending, then image id, then the detection's index in its
image's predictions (both ascending). That is lvis-api's order on a results
file listing detections image by image (its per-category cut is a stable
sort by score), and it does not depend on how images were split across
ranks, so :meth:`merge` of per-rank selections gives the single-process one.

Rows carry the image id, label, score, ``xyxy`` box and, for mask metrics, a
compact RLE (kept only for surviving rows).
"""
from typing import Any, Dict, List, Optional

import numpy as np

_DET_BITS = 24  # detection index within an image < 2**24


def _desc_score_key(scores: np.ndarray) -> np.ndarray:
    """uint64 keys whose ascending order is ``scores`` (float32) descending.
    """
    b = np.ascontiguousarray(scores, np.float32).view(np.uint32).astype(
        np.uint64)
    neg = (b >> np.uint64(31)).astype(bool)
    asc = np.where(neg, ~b & np.uint64(0xFFFFFFFF), b | np.uint64(1 << 31))
    return np.uint64(0xFFFFFFFF) - asc


class PerClassTopK:
    """The ``k`` best detections of each of ``num_classes`` classes.

    Args:
        num_classes (int): Number of classes (labels ``0..num_classes-1``).
        k (int): Detections kept per class (10,000 in the LVIS challenge).
        with_masks (bool): Rows carry an RLE mask each.
        chunk (int): Minimum pending rows before a compaction.
            Defaults to 2**20.
    """

    def __init__(self, num_classes: int, k: int, with_masks: bool = False,
                 chunk: int = 1 << 20) -> None:
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        if k < 1:
            raise ValueError(f'k must be >= 1, got {k}')
        self.num_classes = int(num_classes)
        self.k = int(k)
        self.with_masks = with_masks
        self.chunk = int(chunk)
        self.threshold = np.full(num_classes, -np.inf, np.float32)
        self.img_ids: set = set()
        self._kept = self._empty()
        self._pending: List[Dict[str, Any]] = []
        self._num_pending = 0

    def _empty(self) -> Dict[str, Any]:
        return dict(
            labels=np.zeros(0, np.int64), scores=np.zeros(0, np.float32),
            img_ids=np.zeros(0, np.int64), det_idx=np.zeros(0, np.int64),
            bboxes=np.zeros((0, 4), np.float32),
            masks=[] if self.with_masks else None)

    def __len__(self) -> int:
        return int(self._kept['labels'].shape[0]) + self._num_pending

    # ------------------------------------------------------------------
    def candidates(self, labels: np.ndarray,
                   scores: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: which of an image's detections can still enter
        (score not below its class's current threshold)."""
        return scores >= self.threshold[labels]

    def add(self, img_id: int, labels: np.ndarray, scores: np.ndarray,
            bboxes: np.ndarray, det_idx: Optional[np.ndarray] = None,
            masks: Optional[list] = None) -> None:
        """Offer one image's detections.

        Args:
            img_id (int): The image id.
            labels (np.ndarray): ``(N,)`` int labels in ``0..C-1``.
            scores (np.ndarray): ``(N,)`` float32.
            bboxes (np.ndarray): ``(N, 4)`` float32 xyxy.
            det_idx (np.ndarray, optional): ``(N,)`` each row's index in the
                image's predictions (the tie order). Defaults to
                ``arange(N)``.
            masks (list, optional): ``N`` RLE dicts (with ``with_masks``).
        """
        labels = np.asarray(labels, np.int64).ravel()
        scores = np.asarray(scores, np.float32).ravel()
        n = labels.shape[0]
        bboxes = np.asarray(bboxes, np.float32).reshape(n, 4)
        if scores.shape[0] != n:
            raise ValueError(f'{n} labels but {scores.shape[0]} scores for '
                             f'image {img_id}')
        if n and ((labels < 0).any() or (labels >= self.num_classes).any()):
            bad = sorted(set(labels[(labels < 0) |
                                    (labels >= self.num_classes)].tolist()))
            raise ValueError(f'labels {bad[:10]} of image {img_id} are '
                             f'outside 0..{self.num_classes - 1}')
        if np.isnan(scores).any():
            raise ValueError(f'image {img_id} has NaN scores')
        if det_idx is None:
            det_idx = np.arange(n, dtype=np.int64)
        det_idx = np.asarray(det_idx, np.int64).ravel()
        if n and det_idx.max() >= 1 << _DET_BITS:
            raise ValueError(f'image {img_id} has more than 2**{_DET_BITS} '
                             'detections')
        if self.with_masks and (masks is None or len(masks) != n):
            raise ValueError(f'image {img_id}: {n} detections need {n} '
                             'masks')
        self.img_ids.add(int(img_id))
        keep = self.candidates(labels, scores)
        if not keep.all():
            idx = np.flatnonzero(keep)
            labels, scores, bboxes, det_idx = (labels[idx], scores[idx],
                                               bboxes[idx], det_idx[idx])
            if masks is not None:
                masks = [masks[i] for i in idx.tolist()]
        if labels.shape[0] == 0:
            return
        self._pending.append(
            dict(labels=labels, scores=scores,
                 img_ids=np.full(labels.shape[0], int(img_id), np.int64),
                 det_idx=det_idx, bboxes=bboxes,
                 masks=list(masks) if self.with_masks else None))
        self._num_pending += labels.shape[0]
        if self._num_pending >= max(self.chunk,
                                    self._kept['labels'].shape[0]):
            self.compact()

    # ------------------------------------------------------------------
    def compact(self) -> None:
        """Cut kept + pending to the top ``k`` of each class."""
        parts = [self._kept] + self._pending
        self._pending, self._num_pending = [], 0
        cat = {
            key: np.concatenate([p[key] for p in parts])
            for key in ('labels', 'scores', 'img_ids', 'det_idx', 'bboxes')
        }
        if self.with_masks:
            cat['masks'] = [m for p in parts for m in p['masks']]
        self._kept = self._select(cat)

    def _select(self, rows: Dict[str, Any]) -> Dict[str, Any]:
        labels = rows['labels']
        n = labels.shape[0]
        if n == 0:
            return self._empty()
        primary = (labels.astype(np.uint64) << np.uint64(32)) | \
            _desc_score_key(rows['scores'])
        tie = (rows['img_ids'].astype(np.uint64) << np.uint64(_DET_BITS)) | \
            rows['det_idx'].astype(np.uint64)
        order = np.lexsort((tie, primary))
        primary, tie = primary[order], tie[order]
        # the same detection offered twice (an image seen by two ranks, as
        # distributed samplers pad their last batch) is kept once
        dup = np.zeros(n, bool)
        dup[1:] = (primary[1:] == primary[:-1]) & (tie[1:] == tie[:-1])
        order, lab = order[~dup], labels[order][~dup]
        starts = np.searchsorted(lab, np.arange(self.num_classes))
        rank = np.arange(lab.shape[0]) - starts[lab]
        order = order[rank < self.k]
        out = {key: rows[key][order]
               for key in ('labels', 'scores', 'img_ids', 'det_idx',
                           'bboxes')}
        out['masks'] = [rows['masks'][i] for i in order.tolist()] \
            if self.with_masks else None
        counts = np.bincount(out['labels'], minlength=self.num_classes)
        full = counts >= self.k
        if full.any():
            ends = np.cumsum(counts) - 1
            self.threshold[full] = out['scores'][ends[full]]
        return out

    # ------------------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        """The selection as plain arrays (what ranks exchange): ``labels``,
        ``scores``, ``img_ids``, ``det_idx``, ``bboxes``, ``masks`` (RLE list
        or None), ``seen`` (image ids offered), ``num_classes``, ``k``."""
        self.compact()
        out = dict(self._kept)
        out.update(seen=np.array(sorted(self.img_ids), np.int64),
                   num_classes=self.num_classes, k=self.k)
        return out

    def merge(self, state: Dict[str, Any]) -> None:
        """Merge another selection's :meth:`state` (same classes and k)."""
        if state['num_classes'] != self.num_classes or state['k'] != self.k:
            raise ValueError(
                f'cannot merge a top-{state["k"]} selection over '
                f'{state["num_classes"]} classes into a top-{self.k} one '
                f'over {self.num_classes}')
        if (state['masks'] is not None) != self.with_masks:
            raise ValueError('cannot merge selections with and without '
                             'masks')
        self.img_ids.update(state['seen'].tolist())
        rows = {key: state[key] for key in ('labels', 'scores', 'img_ids',
                                            'det_idx', 'bboxes', 'masks')}
        self._pending.append(rows)
        self._num_pending += rows['labels'].shape[0]
        self.compact()

    def result(self) -> Dict[str, Any]:
        """The selected rows in results-file order (image id, then index in
        the image): ``labels``, ``scores``, ``img_ids``, ``det_idx``,
        ``bboxes``, ``masks``."""
        self.compact()
        kept = self._kept
        order = np.lexsort((kept['det_idx'], kept['img_ids']))
        out = {key: kept[key][order]
               for key in ('labels', 'scores', 'img_ids', 'det_idx',
                           'bboxes')}
        out['masks'] = [kept['masks'][i] for i in order.tolist()] \
            if self.with_masks else None
        return out
