"""Predictions as a few NumPy columns (:class:`DetectionColumns`), and the
vectorized conversions that fill them: boxes to ``xywh``, the per-image
top-``max_dets`` cut, masks to RLE."""
from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np

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


def to_numpy(x: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a NumPy array."""
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def compact_rles(masks: Any) -> List[dict]:
    """Masks as compressed RLE dicts with ``str`` counts.

    Accepts ``(N, H, W)`` binary masks (tensor or array), encoded in one
    pycocotools call, or a list of already encoded RLE dicts.
    """
    if isinstance(masks, (list, tuple)):
        rles = list(masks)
    else:
        rles = encode_masks(to_numpy(masks))
    out = []
    for r in rles:
        c = r['counts']
        out.append({
            'size': [int(r['size'][0]), int(r['size'][1])],
            'counts': c.decode() if isinstance(c, bytes) else c
        })
    return out
