"""The one frame of mmlongtail's classification losses.

:class:`ClassificationLoss` writes once what every loss repeated: the
``__init__`` prologue (``use_sigmoid``, ``reduction``, ``loss_weight``,
``num_classes`` and the category statistics, each checked) and mmdet's
``forward(cls_score, labels, label_weights=None, avg_factor=None,
reduction_override=None)``, which resolves the reduction, checks the inputs
against the loss's layout, calls the loss's :meth:`~ClassificationLoss._loss`
and multiplies by ``loss_weight``.

:class:`GradientStatistics` holds the accumulated positive and negative
logit-gradient sums of EQLv2 and EFL: registered float32 buffers, updated in
one vectorized op under ``no_grad`` and all-reduced when distributed.
"""
from functools import partial
from typing import Dict, Optional, Union

import torch
import torch.nn as nn
from torch import Tensor

from mmlongtail.datasets.category_stats import (CategoryStats, StatsSource,
                                                load_category_stats)
from mmlongtail.utils.dist import all_reduce_sum_
from .protocol import (ClassifierProtocol, SigmoidClassifierProtocol,
                       check_num_classes, check_reduction, watch_host)

AvgFactor = Optional[Union[float, Tensor]]
LossOutput = Union[Tensor, Dict[str, Tensor]]


class ClassificationLoss(ClassifierProtocol, nn.Module):
    """Base class of every classification loss of the package.

    A loss subclasses it (after :class:`SigmoidClassifierProtocol` for a
    ``C``-channel sigmoid classifier), calls ``super().__init__`` with the
    common arguments and implements:

    * ``_loss(cls_score, labels, label_weights, avg_factor, reduction)``:
      the loss of checked inputs with a resolved ``reduction``, before
      ``loss_weight``;
    * ``_layout`` (and ``_activation``) of :class:`ClassifierProtocol`.

    Attributes:
        SIGMOID (bool, optional): True for a sigmoid loss (``use_sigmoid``
            must be True), False for a softmax loss (it must be False), None
            when the config chooses.

    Args:
        num_classes (int, optional): ``C``; None only for a loss that takes
            it from the head (focal loss).
        reduction (str, optional): ``'none'``, ``'mean'`` or ``'sum'``
            (usually ``'mean'``). ``'none'`` keeps the per-sample loss whose
            shape the loss's ``_loss`` documents (``(N,)`` or ``(N, C)``).
            None for a wrapper that passes ``reduction_override`` on.
        loss_weight (float): Multiplier of the loss (usually 1.0).
        use_sigmoid (bool, optional): As the config gives it: mmdet's dense
            heads read it to size their classifier (``C`` if True, else
            ``C + 1``); checked against :attr:`SIGMOID`. None (default): the
            loss's kind.
        category_stats (optional): Statistics source (``'lvis_v1'``, a
            stats JSON or LVIS/COCO annotation file, a dict or a
            ``CategoryStats``); loaded into :attr:`stats` and checked
            against ``num_classes``.
        dense_head (bool, optional): For a
            :class:`SigmoidClassifierProtocol` loss: whether it sits in a
            dense head or an R-CNN ``BBoxHead``; None (default) takes it
            from the head that builds the loss, a value is checked against
            that head.
    """
    SIGMOID: Optional[bool] = None

    def __init__(self,
                 num_classes: Optional[int],
                 reduction: Optional[str] = 'mean',
                 loss_weight: float = 1.0,
                 use_sigmoid: Optional[bool] = None,
                 category_stats: Optional[StatsSource] = None,
                 dense_head: Optional[bool] = None) -> None:
        super().__init__()
        owner = type(self).__name__
        if use_sigmoid is None:  # not given: the loss's kind
            use_sigmoid = self.SIGMOID
        if self.SIGMOID is True and use_sigmoid is not True:
            raise ValueError(f'{owner} is a sigmoid loss; use_sigmoid must '
                             f'be True, got {use_sigmoid!r}')
        if self.SIGMOID is False and use_sigmoid:
            raise ValueError(f'{owner} is a softmax loss; use_sigmoid must '
                             f'be False, got {use_sigmoid!r}')
        self.use_sigmoid = bool(use_sigmoid)
        self.reduction = None if reduction is None else \
            check_reduction(reduction, owner)
        self.loss_weight = float(loss_weight)
        self.num_classes = None if num_classes is None else \
            check_num_classes(num_classes, owner)
        #: The category statistics (None if the loss takes none).
        self.stats: Optional[CategoryStats] = None
        if category_stats is not None:
            self.stats = load_category_stats(
                category_stats, num_classes=num_classes, owner=owner)
        if isinstance(self, SigmoidClassifierProtocol):
            self.set_dense_head(dense_head)
        elif dense_head is not None:
            raise ValueError(f'{owner} has no dense-head layout; drop '
                             'dense_head')
        else:
            # a query-based head that registers the loss puts it in the
            # query-head mode or refuses it (host_registered)
            watch_host(self)

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: AvgFactor,
              reduction: Optional[str]) -> LossOutput:
        raise NotImplementedError(
            f'{type(self).__name__} must implement _loss(cls_score, labels, '
            'label_weights, avg_factor, reduction)')

    def _weighted(self, loss: LossOutput) -> LossOutput:
        """``loss_weight`` times the loss (each entry of a dict)."""
        if isinstance(loss, dict):
            return {k: self.loss_weight * v for k, v in loss.items()}
        return self.loss_weight * loss

    def forward(self,
                cls_score: Tensor,
                labels: Tensor,
                label_weights: Optional[Tensor] = None,
                avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None) -> LossOutput:
        """Compute the loss, with the call signature of mmdet's losses.

        Args:
            cls_score (Tensor): ``(N, O)`` logits, ``O`` the rows of the
                loss's layout (``C``, ``C + 1``, ``C + 2`` ...).
            labels (Tensor): ``(N,)`` labels in ``[0, C]``; ``C`` is
                background.
            label_weights (Tensor, optional): ``(N,)`` per-sample weights
                (0 drops a sample).
            avg_factor (float | Tensor, optional): With ``'mean'``, divide
                the summed loss by this.
            reduction_override (str, optional): ``'none'``, ``'mean'`` or
                ``'sum'`` for this call; asserted, as mmdet's losses do.

        Returns:
            Tensor | dict[str, Tensor]: ``loss_weight`` times the loss: a
            scalar, or per sample with ``'none'`` (each loss documents its
            shape); a loss with several terms returns a dict of them.
        """
        reduction = self.resolve_reduction(reduction_override)
        self.check_inputs(cls_score, labels, label_weights)
        return self._weighted(
            self._loss(cls_score, labels, label_weights, avg_factor,
                       reduction))


class GradientStatistics:
    """Accumulated positive / negative logit-gradient sums per class (EQLv2,
    EFL), written once.

    Buffers (float32, ``(C,)``, saved in checkpoints): ``pos_grad``,
    ``neg_grad`` and their ratio ``pos_neg = pos_grad / (neg_grad +
    RATIO_EPS)`` (clamped to ``[0, 1]`` when ``clamp_ratio``). Updates are
    one vectorized op under ``no_grad``; :meth:`reduce_gradient_sums`
    all-reduces a batch's sums when a multi-rank process group exists and
    ``use_distributed`` is set.
    """
    #: Added to the accumulated negative gradient before dividing (the
    #: official value of EQLv2 and EFL).
    RATIO_EPS = 1e-10
    #: Keeps per-class statistics that every call's labels feed (a query
    #: head refuses binary encoder targets for it).
    KEEPS_CLASS_STATISTICS = True

    def init_gradient_statistics(self, num_classes: int,
                                 initial_ratio: float, use_distributed: bool,
                                 clamp_ratio: bool) -> None:
        """Register the buffers (call from ``__init__``).

        Args:
            num_classes (int): ``C``.
            initial_ratio (float): ``pos_neg`` before any update.
            use_distributed (bool): All-reduce each batch's sums.
            clamp_ratio (bool): Clamp ``pos_neg`` to ``[0, 1]``.
        """
        self.use_distributed = use_distributed
        self.clamp_ratio = clamp_ratio
        zeros = torch.zeros(num_classes, dtype=torch.float32)
        self.register_buffer('pos_grad', zeros.clone())
        self.register_buffer('neg_grad', zeros.clone())
        self.register_buffer(
            'pos_neg',
            torch.full((num_classes, ), initial_ratio, dtype=torch.float32))

    @torch.no_grad()
    def reduce_gradient_sums(self, pos_grad: Tensor,
                             neg_grad: Tensor) -> Tensor:
        """``(C,)`` and ``(C,)`` sums of one call -> ``(2C,)``, summed over
        ranks when distributed (every rank must call it)."""
        return all_reduce_sum_(
            torch.cat([pos_grad, neg_grad]), enabled=self.use_distributed)

    def add_gradient_sums_on_backward(self, loss: Tensor, pos_grad: Tensor,
                                      neg_grad: Tensor) -> None:
        """All-reduce one call's ``(C,)`` sums now (every rank makes the same
        calls in forward) and add them when backward reaches ``loss``.

        So every call of a training step (each FPN level of a dense head;
        each decoder layer, the encoder proposals and the denoising part of
        a query head) uses the statistics of the previous steps, their
        backward adds all of them, and an output that is never
        backpropagated (evaluation) changes nothing: the official EFL's
        hook on the classifier's output, in closed form.
        """
        both = self.reduce_gradient_sums(pos_grad, neg_grad)
        loss.register_hook(partial(self.add_gradient_sums, both))

    @torch.no_grad()
    def add_gradient_sums(self, pos_neg_grad: Tensor, *_) -> None:
        """Add one call's (already reduced) ``(2C,)`` sums and update the
        ratio. Trailing arguments are ignored, so that it can run as a
        tensor hook (which passes the gradient)."""
        num = self.pos_grad.numel()
        self.pos_grad += pos_neg_grad[:num]
        self.neg_grad += pos_neg_grad[num:]
        ratio = self.pos_grad / (self.neg_grad + self.RATIO_EPS)
        if self.clamp_ratio:
            ratio = torch.clamp(ratio, min=0, max=1)
        self.pos_neg.copy_(ratio)
