"""What an LVIS evaluation is about and what it returns: the iou types, the
summary keys, :class:`EvalOutput` and LVIS's summary from accumulated
arrays (one definition for both backends, :mod:`.lvis_backends`)."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

#: Summary keys, in the order lvis-api reports them.
AP_KEYS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf')
AR_KEYS = ('AR@300', 'ARs@300', 'ARm@300', 'ARl@300')
#: ``'boundary'``: mask IoU replaced by min(mask IoU, boundary IoU) (Cheng et
#: al., "Boundary IoU", CVPR 2021), the LVIS 2021 challenge's mask metric.
IOU_TYPES = ('bbox', 'segm', 'boundary')
MASK_TYPES = ('segm', 'boundary')
#: Boundary width as a fraction of the image diagonal (the challenge's 0.02).
BOUNDARY_DILATION_RATIO = 0.02


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


def empty_output(cat_ids: Sequence[int], pooled: bool = False) -> EvalOutput:
    """The output of an evaluation without detections: every number 0."""
    K = len(cat_ids)
    return EvalOutput(
        summary={k: 0.0 for k in AP_KEYS + AR_KEYS},
        precision=np.zeros((10, 101, K, 4)),
        recall=np.zeros((10, K, 4)),
        cat_ids=[int(c) for c in cat_ids],
        pooled={p: 0.0 for p in ('all', 'r', 'c', 'f')} if pooled else None)


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


