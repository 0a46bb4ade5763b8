"""The classification match cost of query-based heads (DETR, Deformable
DETR, DINO) that takes its per-class probabilities from the head's loss.

mmdet's ``FocalLossCost`` scores classes with its own ``sigmoid`` of the
logits. A loss whose probabilities are not the sigmoid (GOL's Gumbel,
``exp(-exp(-z))``) would then be matched with one activation, trained with
another and scored with a third. :class:`LossActivationCost` asks the loss
(``class_probability_fn``: the loss's ``class_probabilities``, the one
owner of the activation, which the query heads' scoring asks too) and
computes the same focal-form cost, in float32 with autocast off: mmdet's
cost overflows in fp16 (mmdet #11559) and under bf16 its ``log`` / ``pow``
lose the small differences that decide an assignment.
"""
from typing import Optional, Union

import torch
import torch.nn as nn
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmengine.structures import InstanceData
from torch import Tensor

from mmlongtail.models.losses.protocol import class_probability_fn
from mmlongtail.registry import TASK_UTILS


@TASK_UTILS.register_module()
class LossActivationCost(BaseMatchCost):
    r"""Focal-form classification cost on the loss's class probabilities.

    For query :math:`i` and ground truth :math:`k` of class :math:`c_k`,
    with :math:`p = \mathrm{loss.class\_probabilities}(z_i)_{c_k}`,

    .. math::
        \mathrm{cost}_{ik} = w \left[-\alpha (1 - p)^\gamma \log(p + \epsilon)
        + (1 - \alpha) p^\gamma \log(1 - p + \epsilon)\right],

    mmdet's ``FocalLossCost`` formula (Zhu et al., "Deformable DETR", ICLR
    2021, Sec. 4.1 / appendix; DINO uses it unchanged), so for a loss whose
    activation is the sigmoid (focal, federated, EQLv2, EFL ...) it equals
    ``FocalLossCost`` exactly; for GOL it is the same form on the Gumbel
    probabilities that GOL trains and scores with.

    Binding: when an mmlongtail loss is registered as the ``loss_cls`` of a
    ``DETRHead``-family head (``self.loss_cls = MODELS.build(...)`` in the
    head's ``__init__``, which builds ``self.assigner`` first), the loss
    binds every ``LossActivationCost`` of ``head.assigner.match_costs`` to
    itself. No config wiring: write it in place of ``FocalLossCost``::

        train_cfg=dict(assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='mmlongtail.LossActivationCost', weight=2.0),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0)]))

    Args:
        weight (float): Cost weight. Defaults to 1.0.
        alpha (float): Focal balance. Defaults to 0.25.
        gamma (float): Focal exponent. Defaults to 2.0.
        eps (float): Added inside the logs. Defaults to 1e-12.
    """

    #: What the loss registration (``bind_match_costs``) binds: a match
    #: cost that asks the head's loss for its activation.
    ASKS_LOSS_ACTIVATION = True

    def __init__(self,
                 weight: Union[float, int] = 1.0,
                 alpha: Union[float, int] = 0.25,
                 gamma: Union[float, int] = 2.0,
                 eps: float = 1e-12) -> None:
        super().__init__(weight=weight)
        self.alpha = alpha
        self.gamma = gamma
        self.eps = eps
        self.loss: Optional[nn.Module] = None
        #: The dtype of the last cost computed (float32 whatever autocast).
        self.last_dtype: Optional[torch.dtype] = None

    def bind(self, loss: nn.Module) -> None:
        """Take the activation of ``loss`` (a head's ``loss_cls``): the
        per-class probabilities that
        :func:`~mmlongtail.models.losses.protocol.class_probability_fn`
        gives for it, the rule the query heads score with.

        Raises:
            ValueError: ``loss`` has no per-class form (a softmax loss).
        """
        try:
            class_probability_fn(loss)
        except ValueError as err:
            raise ValueError(
                f'LossActivationCost takes its activation from the head\'s '
                f'loss_cls, which has none: {err}') from err
        self.loss = loss

    def focal_cost(self, cls_pred: Tensor, gt_labels: Tensor) -> Tensor:
        """``(num_queries, C)`` logits and ``(num_gt,)`` labels ->
        ``(num_queries, num_gt)`` float32 cost (weighted)."""
        if self.loss is None:
            raise RuntimeError(
                'mmlongtail.LossActivationCost is not bound to a loss: it '
                'binds to the loss_cls of the DETR-family head whose '
                'assigner holds it, when that head builds an mmlongtail '
                'loss (FocalLoss, FederatedLoss, EQLv2Loss, GumbelLoss ...). '
                'Put it in such a head\'s train_cfg.assigner.match_costs, or '
                'call bind(loss) when using it on its own')
        with torch.autocast(cls_pred.device.type, enabled=False):
            prob = class_probability_fn(self.loss)(
                cls_pred.float()).float()
            # the ground truths' columns only: (Q, num_gt), not (Q, C)
            prob = prob[:, gt_labels]
            neg_cost = -(1 - prob + self.eps).log() * (
                1 - self.alpha) * prob.pow(self.gamma)
            pos_cost = -(prob + self.eps).log() * self.alpha * (
                1 - prob).pow(self.gamma)
            cost = (pos_cost - neg_cost) * self.weight
        self.last_dtype = cost.dtype
        return cost

    def __call__(self,
                 pred_instances: InstanceData,
                 gt_instances: InstanceData,
                 img_meta: Optional[dict] = None,
                 **kwargs) -> Tensor:
        """The cost matrix, as mmdet's match costs are called.

        Args:
            pred_instances (InstanceData): ``scores``: ``(num_queries, C)``
                logits.
            gt_instances (InstanceData): ``labels``: ``(num_gt,)``.
            img_meta (dict, optional): Unused.

        Returns:
            Tensor: ``(num_queries, num_gt)`` float32.
        """
        return self.focal_cost(pred_instances.scores, gt_instances.labels)

    def __repr__(self) -> str:
        bound = type(self.loss).__name__ if self.loss is not None else \
            'unbound'
        return (f'LossActivationCost(weight={self.weight}, alpha='
                f'{self.alpha}, gamma={self.gamma}, eps={self.eps}, '
                f'loss={bound})')
