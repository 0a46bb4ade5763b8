"""The interface of a test-time scorer."""
from torch import Tensor

from mmlongtail.models.losses.protocol import ClassifierLayout


class TestTimeScorer:
    """Base class of test-time scorers.

    A scorer is called once per image (and per Cascade stage where
    configured) with:

    * ``cls_score``: ``(N, O)`` raw logits of the classifier;
    * ``scores``: ``(N, C + 1)`` probabilities (the loss's activation, or
      the previous scorer's output), background last;
    * ``layout``: the classifier's
      :class:`~mmlongtail.models.losses.ClassifierLayout` (which row of
      ``cls_score`` is which class, the background / objectness rows, the
      BAGS groups),

    and returns new ``(N, C + 1)`` scores. It must not change anything else:
    boxes, NMS and training are not its business. It holds no trained state
    (it is not part of the model's ``state_dict``), so it applies to any
    checkpoint.

    Subclasses implement :meth:`rescore` and register with
    ``@MODELS.register_module()``.
    """

    def rescore(self, cls_score: Tensor, scores: Tensor,
                layout: ClassifierLayout) -> Tensor:
        raise NotImplementedError

    def __call__(self, cls_score: Tensor, scores: Tensor,
                 layout: ClassifierLayout) -> Tensor:
        return self.rescore(cls_score, scores, layout)
