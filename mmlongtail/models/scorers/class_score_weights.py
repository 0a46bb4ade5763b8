"""Fixed per-class score weights, the simplest test-time scorer."""
from typing import Sequence

import torch
from torch import Tensor

from mmlongtail.models.losses.protocol import ClassifierLayout
from mmlongtail.registry import MODELS
from .base import TestTimeScorer


@MODELS.register_module()
class ClassScoreWeights(TestTimeScorer):
    """Multiply the score of class ``j`` by ``weights[j]``; the background
    column is kept.

    With ``score_thr`` and NMS per class, a weight of 0 removes a class from
    the detections and a weight in ``(0, 1)`` lowers its scores (and its
    rank in ``max_per_img``).

    Args:
        weights (Sequence[float]): ``C`` non-negative weights.
    """

    def __init__(self, weights: Sequence[float]) -> None:
        w = torch.as_tensor(list(weights), dtype=torch.float64)
        if w.dim() != 1 or len(w) == 0 or not bool((w >= 0).all()):
            raise ValueError('ClassScoreWeights: weights must be a non-empty '
                             f'list of numbers >= 0, got {list(weights)}')
        self.weights = w

    def rescore(self, cls_score: Tensor, scores: Tensor,
                layout: ClassifierLayout) -> Tensor:
        if len(self.weights) != layout.num_classes:
            raise ValueError(
                f'ClassScoreWeights has {len(self.weights)} weights but the '
                f'classifier ({layout.owner}) has {layout.num_classes} '
                'classes')
        w = self.weights.to(device=scores.device, dtype=scores.dtype)
        return torch.cat([scores[:, :-1] * w, scores[:, -1:]], dim=1)
