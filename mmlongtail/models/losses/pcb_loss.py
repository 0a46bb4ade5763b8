"""Pairwise Class Balance (He et al., "Relieving Long-tailed Instance
Segmentation via Pairwise Class Balance", CVPR 2022, arXiv:2201.02784).

PCB keeps an online confusion matrix ``M`` (``C x C``, ground truth by
prediction) of the foreground classifier: after every step, each row ``i``
seen in the (global) batch is moved towards the mean predicted
foreground distribution of that step's RoIs of class ``i``,
``M_i <- m M_i + (1 - m) mean(p)``. From ``M`` it builds a "fightback" soft
label for an RoI of class ``y``: the column ``M[:, y]`` (the classes that are
mistaken for ``y``), and trains the classifier on a mix of the one-hot label
and that soft label, weight ``alpha`` on the latter. How the soft label enters
depends on the loss PCB is put on, as in the three official files
(megvii-research/PCB, ``mmdet/models/losses/*_pcb_loss.py``):

* softmax cross entropy (mmdet's ``CrossEntropyLoss``): rows of ``M`` from the
  softmax over the ``C`` class logits, renormalized to sum 1; the soft label
  is the column normalized to sum 1; loss ``CE`` on background RoIs,
  ``(1 - alpha) CE + alpha KL(soft || softmax over C + 1)`` on positives;
* ``mmlongtail.EQLv2Loss``: rows from the sigmoids of the class logits, not
  renormalized; the soft label is the raw column; EQLv2 is trained (and
  gathers its gradient statistics) on the target
  ``(1 - alpha) onehot + alpha soft`` in the class channels of positives;
* ``mmlongtail.SeesawLoss``: rows as for cross entropy; the class term
  becomes ``(1 - alpha) Seesaw-CE + alpha Seesaw-CE(soft target)`` (the
  seesaw logits of the hard label with a soft target), returned as
  ``loss_cls_classes`` and ``loss_pcb_classes``.

PCB acts from the epoch ``start_epoch`` (1-based, as the official
``LossEpochUpdateHook`` counts; 17 of 24 there, right after the first
learning-rate step) and only once every class has been seen; the matrix is
updated from the first step on.
"""
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from mmdet.models.losses import CrossEntropyLoss
from mmdet.models.losses.accuracy import accuracy
from mmdet.models.losses.utils import weight_reduce_loss
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.registry import MODELS
from mmlongtail.utils import all_reduce_sum_
from mmlongtail.utils.runtime import training_progress
from .eqlv2_loss import EQLv2Loss, eqlv2_loss
from .frame import AvgFactor, ClassificationLoss, LossOutput
from .protocol import (ClassifierLayout, empty_loss, host_is_dense_head,
                       host_kind, loss_layout, unwatch_host, watch_host)
from .seesaw_loss import (SeesawLoss, _prepare, _seesaw_log_softmax,
                          seesaw_loss)

#: The losses PCB can be put on, by the name a message gives them.
SUPPORTED_BASES = ("mmdet's CrossEntropyLoss (softmax, no class_weight), "
                   'mmlongtail.EQLv2Loss, mmlongtail.SeesawLoss')


@torch.no_grad()
def update_confusion_matrix(matrix: Tensor,
                            counts: Tensor,
                            fg_prob: Tensor,
                            labels: Tensor,
                            momentum: float,
                            renormalize: bool,
                            use_distributed: bool = True) -> None:
    """One PCB update of the confusion matrix and instance counts, in place.

    The batch's per-class sums of ``fg_prob`` over positive RoIs and their
    counts are summed over ranks in one all-reduce (when distributed), then
    every row seen in the global batch becomes
    ``m * row + (1 - m) * mean``, renormalized to sum 1 when
    ``renormalize``. Rows not seen are left alone. Every rank applies the
    same update to the same sums, so the buffers stay identical.

    Args:
        matrix (Tensor): ``(C, C)`` float32 buffer, ground truth by
            prediction.
        counts (Tensor): ``(C,)`` float32 buffer, positives seen per class.
        fg_prob (Tensor): ``(N, C)`` predicted foreground distribution of
            every RoI (rows of background RoIs are ignored).
        labels (Tensor): ``(N,)`` in ``[0, C]``, ``C`` = background.
        momentum (float): ``m``.
        renormalize (bool): Renormalize updated rows to sum 1.
        use_distributed (bool): All-reduce the batch sums when a multi-rank
            process group exists.
    """
    num_classes = matrix.size(0)
    pos = (labels < num_classes).to(torch.float32)
    # (N, C + 1): the distribution, then 1 in the count column; 0 rows for
    # background, whose label C indexes a row dropped below
    payload = torch.cat([fg_prob.float() * pos[:, None], pos[:, None]], 1)
    sums = matrix.new_zeros(num_classes + 1, num_classes + 1)
    sums.index_add_(0, labels.long(), payload)
    all_reduce_sum_(sums, enabled=use_distributed)  # the one collective
    batch_counts = sums[:num_classes, num_classes]
    seen = (batch_counts > 0)[:, None]
    mean = sums[:num_classes, :num_classes] / batch_counts.clamp(min=1)[:,
                                                                        None]
    new = matrix * momentum + mean * (1 - momentum)
    if renormalize:
        row_sum = new.sum(1, keepdim=True)
        new = new / torch.where(seen, row_sum, torch.ones_like(row_sum))
    matrix.copy_(torch.where(seen, new, matrix))
    counts.add_(batch_counts)


def fightback_targets(matrix: Tensor, labels: Tensor,
                      normalize_columns: bool) -> Tensor:
    """``(N, C)`` PCB soft labels: row ``n`` is the column
    ``matrix[:, labels[n]]`` (divided by its sum when
    ``normalize_columns``; a column summing to 0 is left at 0).

    Args:
        matrix (Tensor): ``(C, C)`` confusion matrix.
        labels (Tensor): ``(N,)``; entries ``>= C`` (background) give an
            arbitrary row, which callers mask.
    """
    num_classes = matrix.size(0)
    cm = matrix.detach()
    if normalize_columns:
        col = cm.sum(0, keepdim=True)
        cm = cm / torch.where(col > 0, col, torch.ones_like(col))
    return cm.t()[labels.clamp(max=num_classes - 1)]


@MODELS.register_module()
class PCBLoss(ClassificationLoss):
    """Pairwise Class Balance (He et al., CVPR 2022) on a base loss.

    Wraps softmax cross entropy (mmdet's ``CrossEntropyLoss``),
    ``mmlongtail.EQLv2Loss`` or ``mmlongtail.SeesawLoss`` (see the module
    docstring for how PCB enters each). The wrapped loss keeps its layout,
    test-time activation, accuracy, ``loss_weight`` and running statistics
    (EQLv2's gradient sums, Seesaw's counts, which it updates as it does
    alone); PCB adds its confusion matrix.

    Example::

        loss_cls=dict(
            type='mmlongtail.PCBLoss', num_classes=1203, alpha=0.05,
            start_epoch=17,
            loss=dict(type='mmlongtail.SeesawLoss', num_classes=1203))

    Numbers equal the official ``CrossEntropyPCBLoss``, ``EQLv2PCBLoss`` and
    ``SeesawPCBLoss`` (loss, gradient, matrix over iterations; tests pin
    them) in mmdet's ``BBoxHead`` (all-one ``label_weights``,
    ``avg_factor=N``) at their last refinement step. Deliberate differences:

    * the official runs put the box head in an ``IterativeRoIHead`` (3
      refinement passes, loss weights 0.2/0.2/0.6) whose pass ``k`` uses
      ``alpha * k / 2``; that head is not part of this loss, which always
      applies ``alpha`` (the official value at the last pass);
    * the epoch comes from mmengine's runtime information (``'epoch'`` in
      the ``MessageHub``, which the runner keeps and restores on resume)
      rather than a buffer bumped by a hook, so no extra hook is needed;
      without a runner the epoch counts as 1;
    * "all classes seen" is a 0/1 tensor factor on ``alpha`` rather than a
      Python ``if`` on a tensor, so the forward never synchronizes with the
      device;
    * with cross entropy, the KL term is weighted by ``label_weights`` and
      divided by ``avg_factor`` like the CE term (the official divides it by
      ``N`` and ignores weights; equal in ``BBoxHead``); ``reduction='none'``
      gives ``(N,)`` (the official cannot);
    * the batch sums are all-reduced (one collective, only when distributed)
      instead of all-gathered, so memory does not grow with the world size.

    Memory: the matrix is ``C * C`` float32, 5.79 MB (5.5 MiB) at C = 1203,
    plus ``C`` counts; a step adds a ``(C + 1) x (C + 1)`` sum (the same
    again), an ``(N, C + 1)`` payload (4.9 MB for 1024 RoIs) and, while PCB
    is active, one normalized copy of the matrix.

    Args:
        loss (dict): Config of the wrapped loss (one of
            :data:`SUPPORTED_BASES`), with the same ``num_classes``.
        num_classes (int): ``C``.
        alpha (float): Weight of the soft label, in ``[0, 1]``. The official
            configs use 0.4 (cross entropy), 0.2 (EQLv2), 0.05 (Seesaw).
        momentum (float): Of the matrix update, in ``[0, 1)``. Defaults to
            0.99.
        start_epoch (int): First epoch (1-based) in which PCB acts.
            Defaults to 17 (of the official 24).
        use_distributed (bool): All-reduce the matrix update when a
            multi-rank process group exists. Defaults to True.
        loss_weight (float): Multiplier on top of the wrapped loss's own.
            Defaults to 1.0.

    Buffers (float32, saved in checkpoints; kept float32 by ``.half()``):
        confusion_matrix (Tensor): ``(C, C)``, ground truth by prediction.
        instance_count (Tensor): ``(C,)``, positive RoIs seen per class.
    """

    #: Why a query-based (DETR-family) head cannot hold it.
    QUERY_HEAD_REFUSAL = (
        'PCB keeps a confusion matrix over the sampled RoIs of an R-CNN '
        'BBoxHead and mixes soft labels into a C + 1 RoI classifier; a '
        'query head has neither')

    def __init__(self,
                 loss: dict,
                 num_classes: int,
                 alpha: float,
                 momentum: float = 0.99,
                 start_epoch: int = 17,
                 use_distributed: bool = True,
                 loss_weight: float = 1.0) -> None:
        owner = 'PCBLoss'
        if not isinstance(loss, dict) or 'type' not in loss:
            raise ValueError(f'{owner}: loss must be the config dict of the '
                             f'wrapped loss, got {loss!r}')
        if not 0 <= alpha <= 1:
            raise ValueError(f'{owner}: alpha must lie in [0, 1], got '
                             f'{alpha}')
        if not 0 <= momentum < 1:
            raise ValueError(f'{owner}: momentum must lie in [0, 1), got '
                             f'{momentum}')
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) \
                or start_epoch < 0:
            raise ValueError(f'{owner}: start_epoch must be an int >= 0 '
                             f'(1-based epoch), got {start_epoch!r}')
        super().__init__(num_classes, None, loss_weight)
        self.alpha = float(alpha)
        self.momentum = float(momentum)
        self.start_epoch = start_epoch
        self.use_distributed = use_distributed
        self.loss = MODELS.build(loss)
        self.kind = self._base_kind(self.loss)
        # registered under this wrapper, never by a head
        unwatch_host(self.loss)
        loss_layout(self.loss, self.num_classes)  # raises on a C mismatch
        self.use_sigmoid = getattr(self.loss, 'use_sigmoid', False)
        watch_host(self)
        self.register_buffer(
            'confusion_matrix',
            torch.zeros(num_classes, num_classes, dtype=torch.float32))
        self.register_buffer('instance_count',
                             torch.zeros(num_classes, dtype=torch.float32))
        MMLogger.get_current_instance().info(
            f'PCBLoss on {type(self.loss).__name__}: alpha={self.alpha}, '
            f'momentum={self.momentum}, from epoch {start_epoch}')

    def _base_kind(self, base: torch.nn.Module) -> str:
        name = type(base).__name__
        if isinstance(base, SeesawLoss):
            return 'seesaw'
        if isinstance(base, EQLv2Loss):
            return 'eqlv2'
        if isinstance(base, CrossEntropyLoss):
            bad = [
                k for k in ('use_sigmoid', 'use_mask', 'class_weight')
                if getattr(base, k, None)
            ]
            if getattr(base, 'ignore_index', None) is not None:
                bad.append('ignore_index')
            if not bad:
                return 'softmax'
            raise ValueError(
                f'PCBLoss: the wrapped CrossEntropyLoss sets {bad}; PCB '
                'puts its soft label on plain softmax cross entropy')
        raise ValueError(
            f'PCBLoss cannot wrap {name}: its soft label has to enter the '
            f'wrapped loss itself, which is written for {SUPPORTED_BASES}')

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, alpha={self.alpha}, '
                f'momentum={self.momentum}, start_epoch={self.start_epoch}')

    def _apply(self, fn: Any, recurse: bool = True) -> 'PCBLoss':
        """Move like any module, but keep the statistics in float32."""
        keep = {
            k: getattr(self, k)
            for k in ('confusion_matrix', 'instance_count')
        }
        super()._apply(fn, recurse)
        for key, old in keep.items():
            moved = getattr(self, key)
            if moved.dtype != torch.float32:
                setattr(self, key,
                        old.to(device=moved.device, dtype=torch.float32))
        return self

    # ------------------------------------------------- classifier protocol
    def _layout(self, num_classes: int) -> ClassifierLayout:
        return loss_layout(self.loss, num_classes)

    def _activation(self, cls_score: Tensor) -> Tensor:
        if getattr(self.loss, 'custom_activation', False):
            return self.loss.get_activation(cls_score)
        return F.softmax(cls_score, dim=-1)

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """The wrapped loss's accuracy (mmdet's top-1 for cross
        entropy)."""
        if getattr(self.loss, 'custom_accuracy', False):
            return self.loss.get_accuracy(cls_score, labels)
        return dict(acc=accuracy(cls_score, labels))

    def host_registered(self, host: torch.nn.Module) -> bool:
        """Refuse a dense head: PCB's matrix is over the RoIs of an R-CNN
        ``BBoxHead`` (labels ``C`` = background)."""
        if host_kind(host) == 'query':  # refused there, naming the fix
            self.enter_query_head(host)
        dense = host_is_dense_head(host)
        if dense:
            raise ValueError(
                f'PCBLoss is the loss_cls of {type(host).__name__}, a dense '
                'head; PCB wraps the RoI classification loss of an R-CNN '
                'BBoxHead (e.g. Shared2FCBBoxHead)')
        return dense is not None

    def resolve_reduction(self, reduction_override: Optional[str]) -> str:
        """``reduction_override`` or the wrapped loss's ``reduction``."""
        return super().resolve_reduction(reduction_override
                                         or self.loss.reduction)

    # ----------------------------------------------------------- the loss
    def current_epoch(self) -> int:
        """The 1-based training epoch (mmengine's runtime ``'epoch'`` + 1;
        1 when no runner has set it)."""
        epoch, _ = training_progress('epoch')
        return 1 if epoch is None else epoch + 1

    def active_alpha(self) -> Optional[Tensor]:
        """``alpha`` as a 0-dim float32 tensor, times 0 until every class has
        been seen; None before ``start_epoch``."""
        if self.alpha == 0 or self.current_epoch() < self.start_epoch:
            return None
        ready = (self.instance_count > 0).all().to(torch.float32)
        return ready * self.alpha

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: AvgFactor,
              reduction: str) -> LossOutput:
        """Update the matrix from this batch, then the wrapped loss with
        PCB's soft label (``(N, O)`` logits in the wrapped loss's layout;
        its output shape)."""
        labels = labels.long()
        num = self.num_classes
        # float32 whatever the autocast dtype, as the official force_fp32
        score = cls_score.float()
        if label_weights is not None:
            label_weights = label_weights.float()
        if self.kind == 'seesaw':
            self.loss._accumulate(labels)  # as SeesawLoss does, first
        with torch.no_grad():
            cls_logits = score.detach()[:, :num]
            fg_prob = (cls_logits.sigmoid() if self.kind == 'eqlv2' else
                       cls_logits.softmax(dim=1))
        update_confusion_matrix(self.confusion_matrix, self.instance_count,
                                fg_prob, labels, self.momentum,
                                self.kind != 'eqlv2', self.use_distributed)
        alpha = self.active_alpha()
        pos = labels < num
        soft = None
        if alpha is not None:
            soft = fightback_targets(self.confusion_matrix, labels,
                                     self.kind != 'eqlv2')
        if self.kind == 'softmax':
            out = self._softmax_loss(score, labels, pos, soft, alpha,
                                     label_weights, avg_factor, reduction)
        elif self.kind == 'eqlv2':
            out = self._eqlv2_loss(score, labels, pos, soft, alpha,
                                   label_weights, avg_factor, reduction)
        else:
            return self._seesaw_loss(score, labels, pos, soft, alpha,
                                     label_weights, avg_factor, reduction)
        return out * self.loss.loss_weight

    def _softmax_loss(self, score: Tensor, labels: Tensor, pos: Tensor,
                      soft: Optional[Tensor], alpha: Optional[Tensor],
                      weight: Optional[Tensor], avg_factor: AvgFactor,
                      reduction: str) -> Tensor:
        if not len(labels):
            return empty_loss(score, reduction, (0, ))
        loss = F.cross_entropy(score, labels, reduction='none')
        if soft is not None:
            a = alpha * pos.float()
            target = torch.cat([soft, soft.new_zeros(len(soft), 1)], 1)
            kl = F.kl_div(F.log_softmax(score, dim=1), target,
                          reduction='none').sum(1)
            loss = loss * (1 - a) + kl * a
        return weight_reduce_loss(loss, weight, reduction, avg_factor)

    def _eqlv2_loss(self, score: Tensor, labels: Tensor, pos: Tensor,
                    soft: Optional[Tensor], alpha: Optional[Tensor],
                    weight: Optional[Tensor], avg_factor: AvgFactor,
                    reduction: str) -> Tensor:
        base = self.loss
        target = None
        if soft is not None:
            target = F.one_hot(labels, score.size(1)).float()
            a = (alpha * pos.float())[:, None]
            cls_t = target[:, :self.num_classes]
            target = torch.cat([cls_t + a * (soft - cls_t),
                                target[:, self.num_classes:]], 1)
        pos_w, neg_w = base.get_weights()
        loss, pos_grad, neg_grad = eqlv2_loss(score, labels, pos_w, neg_w,
                                              weight, reduction, avg_factor,
                                              target=target)
        base.add_gradient_sums(base.reduce_gradient_sums(pos_grad, neg_grad))
        return loss

    def _seesaw_loss(self, score: Tensor, labels: Tensor, pos: Tensor,
                     soft: Optional[Tensor], alpha: Optional[Tensor],
                     weight: Optional[Tensor], avg_factor: AvgFactor,
                     reduction: str) -> LossOutput:
        base = self.loss
        counts = base.cum_samples[:self.num_classes]
        loss_classes, loss_obj = seesaw_loss(score, labels, counts, weight,
                                             base.p, base.q, base.eps,
                                             reduction, avg_factor,
                                             base.select_positives)
        if soft is None:
            loss_pcb = loss_classes * 0
        else:
            loss_pcb = self._seesaw_soft_term(score, labels, pos, soft,
                                              counts, weight, avg_factor,
                                              reduction) * alpha
            loss_classes = loss_classes * (1 - alpha)
        out = dict(loss_cls_objectness=loss_obj,
                   loss_cls_classes=loss_classes,
                   loss_pcb_classes=loss_pcb)
        out = {k: v * base.loss_weight for k, v in out.items()}
        if base.return_dict:
            return out
        return sum(out.values())

    def _seesaw_soft_term(self, score: Tensor, labels: Tensor, pos: Tensor,
                          soft: Tensor, counts: Tensor,
                          weight: Optional[Tensor], avg_factor: AvgFactor,
                          reduction: str) -> Tensor:
        """``-sum_j soft_j log softmax(z)_j`` on positives, ``z`` the seesaw
        logits of the hard label (constant factors, as in the paper)."""
        base = self.loss
        num = self.num_classes
        cls_score = score[:, :num]
        cls_labels = labels.masked_fill(~pos, 0)
        with torch.no_grad():
            s, lab, log_counts, log_eps = _prepare(cls_score.detach(),
                                                   cls_labels, counts, num,
                                                   base.p, base.q, base.eps)
            # seesaw log-factors up to a per-row constant
            offset = _seesaw_log_softmax(s, lab, log_counts, base.q,
                                         log_eps) - s.log_softmax(dim=1)
        log_prob = F.log_softmax(cls_score + offset, dim=1)
        term = -(soft * log_prob).sum(1)
        w = pos.float() if weight is None else weight * pos
        if reduction == 'mean' and avg_factor is None:
            return (term * w).sum() / pos.sum().clamp(min=1)
        return weight_reduce_loss(term, w, reduction, avg_factor)
