"""Equalization Loss v2 (Tan et al., "Equalization Loss v2: A New Gradient
Balance Approach for Long-tailed Object Detection", CVPR 2021)."""
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.registry import MODELS
from .frame import ClassificationLoss, GradientStatistics
from .protocol import (SIGMOID_SCORING, ClassifierLayout, ScoringFamily,
                       empty_loss, sigmoid_scores_times_objectness,
                       sigmoid_scores_with_background, sigmoid_targets)

#: Initial pos/neg gradient ratio. Any value well above ``mu`` maps to a
#: negative weight of 1 (and a positive weight of 1), so training starts as
#: plain BCE, as in the official implementation.
INITIAL_POS_NEG_RATIO = 100.0
#: Added to the accumulated negative gradient before dividing (official value).


def eqlv2_weights(pos_neg: Tensor, gamma: float, mu: float,
                  alpha: float) -> Tuple[Tensor, Tensor]:
    r"""Per-channel positive and negative weights from the gradient ratio.

    :math:`q_j = 1 / (1 + e^{-\gamma (g_j - \mu)})` with :math:`g_j` the
    accumulated positive-to-negative gradient ratio; negatives get
    :math:`q_j` and positives :math:`1 + \alpha (1 - q_j)` (Tan et al., CVPR
    2021, Eq. 6-8). The objectness channel always gets weight 1.

    Args:
        pos_neg (Tensor): ``(C,)`` float32 ratio.

    Returns:
        tuple[Tensor, Tensor]: ``(pos_w, neg_w)``, each ``(C + 1,)``.
    """
    neg_w = 1 / (1 + torch.exp(-gamma * (pos_neg - mu)))
    neg_w = torch.cat([neg_w, neg_w.new_ones(1)])
    pos_w = 1 + alpha * (1 - neg_w)
    return pos_w, neg_w


def eqlv2_loss(cls_score: Tensor,
               labels: Tensor,
               pos_w: Tensor,
               neg_w: Tensor,
               weight: Optional[Tensor] = None,
               reduction: str = 'mean',
               avg_factor: Optional[float] = None,
               target: Optional[Tensor] = None,
               query: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    r"""EQLv2's weighted BCE and its gradient statistics for this batch.

    The loss is :math:`\sum_{ij} w_{ij}\,\mathrm{BCE}(x_{ij}, y_{ij}) / N`
    with :math:`w_{ij} = y_{ij}\,pos_j + (1 - y_{ij})\,neg_j` over ``C + 1``
    sigmoid channels, the last being objectness (on for background).

    The statistics are the magnitudes of the gradient of
    :math:`\sum_{ij} w_{ij}\,\mathrm{BCE}_{ij}` (times the per-proposal
    ``weight`` when given) with respect to the logits,
    :math:`|\partial/\partial x_{ij}| = w_{ij}\,|\sigma(x_{ij}) - y_{ij}|`,
    summed over proposals separately for positives and negatives. This is the
    closed form of what a backward hook on the logits would see for that sum,
    and it is what the official ``collect_grad`` accumulates. It is computed
    in float32 whatever the logits' dtype.

    Args:
        cls_score (Tensor): ``(N, C + 1)`` logits.
        labels (Tensor): ``(N,)`` in ``[0, C]``.
        pos_w (Tensor): ``(C + 1,)`` positive weights.
        neg_w (Tensor): ``(C + 1,)`` negative weights.
        weight (Tensor, optional): ``(N,)`` per-proposal weights.
        reduction (str): ``'none'`` gives ``(N,)`` (summed over channels);
            ``'mean'`` divides the sum by ``N`` (or ``avg_factor``).
        avg_factor (float, optional): Normalizer for ``'mean'``.
        target (Tensor, optional): ``(N, C + 1)`` soft targets in
            ``[0, 1]`` in place of the one-hot of ``labels`` (PCB's
            fightback labels); weights and statistics follow it.
        query (bool): The ``C``-output form of query-based heads:
            ``cls_score`` is ``(N, C)``, ``pos_w`` / ``neg_w`` are ``(C,)``,
            background (label ``C``) is the all-zero target and every
            channel is a class (no objectness channel to drop).

    Returns:
        tuple: ``(loss, pos_grad, neg_grad)``; the last two are ``(C,)``
        float32 without the objectness channel and without autograd history.
    """
    num, channels = cls_score.shape
    if target is None:
        target = (F.one_hot(labels, channels) if not query else
                  sigmoid_targets(labels, channels))
    target = target.to(cls_score.dtype)
    elem_w = pos_w.to(cls_score.dtype) * target + neg_w.to(
        cls_score.dtype) * (1 - target)
    if num == 0:
        loss = empty_loss(cls_score, reduction, (0, ))
    else:
        loss = F.binary_cross_entropy_with_logits(
            cls_score, target, reduction='none') * elem_w
        loss = weight_reduce_loss(
            loss.sum(dim=1), weight, reduction, avg_factor)
    with torch.no_grad():
        t32 = target.float()
        grad = (cls_score.detach().float().sigmoid() - t32).abs()
        grad = grad * (pos_w.float() * t32 + neg_w.float() * (1 - t32))
        if weight is not None:
            grad = grad * weight.detach().float()[:, None]
        keep = channels if query else channels - 1  # objectness dropped
        pos_grad = (grad * t32).sum(dim=0)[:keep]
        neg_grad = (grad * (1 - t32)).sum(dim=0)[:keep]
    return loss, pos_grad, neg_grad


@MODELS.register_module()
class EQLv2Loss(GradientStatistics, ClassificationLoss):
    r"""Equalization Loss v2 (Tan et al., CVPR 2021).

    Exact to the official ``EQLv2`` of tztztztztz/eqlv2: ``C + 1`` sigmoid
    channels (the last is objectness), weights from the accumulated
    positive/negative gradient ratio (``gamma=12, mu=0.8, alpha=4``, initial
    ratio 100 so that training starts with all weights 1), loss
    ``sum / N``. The gradient statistics are computed in closed form in
    forward, under ``no_grad``, with the weights in force for this batch, then
    added to the running sums; the weights of the next batch use the updated
    ratio.

    Differences from the official code, none of which changes its numbers in
    mmdet's ``BBoxHead`` (all-one ``label_weights``, ``avg_factor=N``):

    * ``label_weights`` and ``avg_factor`` are honoured when given, in the
      loss and in the gradient statistics;
    * the statistics are persistent float32 buffers (``pos_grad``,
      ``neg_grad``, ``pos_neg``), saved in checkpoints and restored on resume;
    * they are all-reduced only when a multi-rank process group exists (the
      official code calls ``all_reduce`` unconditionally and crashes without
      one);
    * it implements the classifier protocol
      (:class:`~mmlongtail.models.losses.protocol.ClassifierProtocol`), so
      ``BBoxHead`` scores its logits with a sigmoid times
      ``1 - objectness`` instead of mmdet 3.x's softmax.

    In a query-based head (mmdet's ``DETRHead``, ``DeformableDETRHead``,
    ``DINOHead``; chosen when the head registers the loss) it has the
    ``C``-output form those heads size from ``use_sigmoid``: ``C`` sigmoid
    channels and no objectness channel (a query head has none; unmatched
    queries get the all-zero target, so their negative gradients are
    weighted by :math:`q_j` like every other negative), the head's
    ``avg_factor``, per-class sigmoid scores. The statistics there are
    summed over every classification output of a step (each decoder
    layer's matched queries, the encoder proposals, each layer's denoising
    queries: all train the classes' classifiers, which is what the ratio
    measures), each call's sums all-reduced in forward and added when
    backward reaches its output (as :class:`EqualizedFocalLoss`), so that
    all calls of one step use the weights of the previous steps, as the
    single call of an R-CNN step does, whatever order the head makes them
    in. The sums stay the official ones (unnormalized
    :math:`w_{ij}|\sigma(x_{ij}) - y_{ij}|`, times ``label_weights``).

    It also takes the frame's keyword arguments, ``reduction``,
    ``loss_weight``, ``use_sigmoid`` (see
    :class:`~mmlongtail.models.losses.frame.ClassificationLoss`).

    Args:
        num_classes (int): ``C``.
        gamma (float): Slope of the mapping function. Defaults to 12.
        mu (float): Center of the mapping function. Defaults to 0.8.
        alpha (float): Extra weight of positives. Defaults to 4.0.
        test_with_obj (bool): Multiply class scores by ``1 - objectness`` at
            test time. Defaults to True.
        use_distributed (bool): All-reduce the statistics when distributed.
            Defaults to True.
    """

    SIGMOID = True

    def __init__(self,
                 num_classes: int,
                 gamma: float = 12.0,
                 mu: float = 0.8,
                 alpha: float = 4.0,
                 test_with_obj: bool = True,
                 use_distributed: bool = True,
                 **frame: Any) -> None:
        super().__init__(num_classes, **frame)
        self.gamma = float(gamma)
        self.mu = float(mu)
        self.alpha = float(alpha)
        self.test_with_obj = test_with_obj
        self.init_gradient_statistics(
            self.num_classes, INITIAL_POS_NEG_RATIO, use_distributed,
            clamp_ratio=False)
        MMLogger.get_current_instance().info(
            f'EQLv2Loss: gamma={self.gamma}, mu={self.mu}, '
            f'alpha={self.alpha}')

    def get_weights(self) -> Tuple[Tensor, Tensor]:
        """Current ``(pos_w, neg_w)``, each ``(C + 1,)`` float32."""
        return eqlv2_weights(self.pos_neg, self.gamma, self.mu, self.alpha)

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: Optional[float],
              reduction: str) -> Tensor:
        """``(N, C + 1)`` logits (``(N, C)`` in a query head); ``'none'``
        gives ``(N,)``. Updates the gradient statistics."""
        pos_w, neg_w = self.get_weights()
        if self.query_head:
            return self._query_loss(cls_score, labels, label_weights,
                                    avg_factor, reduction, pos_w[:-1],
                                    neg_w[:-1])
        loss, pos_grad, neg_grad = eqlv2_loss(cls_score, labels, pos_w,
                                              neg_w, label_weights, reduction,
                                              avg_factor)
        # every rank calls this, also with an empty batch, so that the
        # all-reduce matches up
        self.add_gradient_sums(self.reduce_gradient_sums(pos_grad, neg_grad))
        return loss

    def _query_loss(self, cls_score: Tensor, labels: Tensor,
                    label_weights: Optional[Tensor],
                    avg_factor: Optional[float], reduction: str,
                    pos_w: Tensor, neg_w: Tensor) -> Tensor:
        """EQLv2 in a query-based head: ``(N, C)`` logits, background =
        all-zero target, the head's ``avg_factor``; the statistics are
        added when backward reaches the output, so that every call of a
        step (decoder layers, encoder proposals, denoising part) uses the
        weights of the previous steps and all of them feed the sums."""
        loss, pos_grad, neg_grad = eqlv2_loss(
            cls_score, labels, pos_w, neg_w, label_weights, reduction,
            avg_factor, query=True)
        if cls_score.requires_grad and torch.is_grad_enabled():
            # same condition on every rank: the collective matches up
            self.add_gradient_sums_on_backward(loss, pos_grad, neg_grad)
        return loss

    def class_probabilities(self, cls_score: Tensor) -> Tensor:
        """In a query-based head (``C`` outputs): the sigmoid of each
        logit. The ``C + 1`` R-CNN layout has none (its scores need the
        objectness row): refused, naming the layout."""
        if not self.query_head:
            return super().class_probabilities(cls_score)
        return cls_score.sigmoid()

    # ------------------------------------------------- classifier protocol
    def _layout(self, num_classes: int) -> ClassifierLayout:
        """``C + 1`` sigmoid rows: the classes, then objectness (on for
        background); ``C`` sigmoid rows in a query-based head."""
        if self.query_head:
            return ClassifierLayout.classes_first(
                'EQLv2Loss', num_classes, scoring=SIGMOID_SCORING,
                family=ScoringFamily.SIGMOID)
        scoring = ('sigmoid per class' +
                   (' * (1 - P(background))' if self.test_with_obj else '') +
                   '; background column sigmoid(objectness)')
        return ClassifierLayout.classes_first(
            'EQLv2Loss', num_classes, ('background', ), scoring=scoring,
            family=ScoringFamily.SIGMOID_OBJECTNESS)

    def _activation(self, cls_score: Tensor) -> Tensor:
        """``(N, C + 1)`` logits -> ``(N, C + 1)`` probabilities.

        Sigmoid per channel; with ``test_with_obj`` the class scores are
        multiplied by ``1 - sigmoid(objectness)``. The last column stays the
        background (objectness) probability.
        """
        if self.query_head:
            return sigmoid_scores_with_background(cls_score)
        if not self.test_with_obj:
            return cls_score.sigmoid()
        return sigmoid_scores_times_objectness(cls_score)
