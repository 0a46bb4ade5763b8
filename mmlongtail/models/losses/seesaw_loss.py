"""Seesaw Loss (Wang et al., "Seesaw Loss for Long-Tailed Instance
Segmentation", CVPR 2021, arXiv:2008.10032).

For a positive sample of class ``i`` and any other class ``j``, the softmax
logit of ``j`` is rescaled by a seesaw factor ``S_ij = M_ij * C_ij``:

* mitigation, from the accumulated class counts ``N``:
  ``M_ij = (N_j / N_i) ** p`` if ``N_i > N_j`` else 1;
* compensation, from the (detached) predicted probabilities ``sigma``:
  ``C_ij = (sigma_j / max(sigma_i, eps)) ** q`` if that ratio exceeds 1,
  else 1.

The loss is the cross entropy of ``z_j = s_j + log S_ij`` (``S_ii = 1``).
As in the official design the classifier has ``C + 2`` outputs: ``C`` class
logits, trained with the loss above on positives only, and 2 objectness logits
(foreground, background), trained with plain cross entropy on every sample.

Implementation notes (the numbers match mmdet 3.3.0's ``SeesawLoss``; the
tests check loss, gradient, counts and activation against it):

* Everything is computed in the log domain, row by row, and only for the row
  of each sample's label. With ``l = log_softmax(s)``,
  ``log M_ij = p * min(0, log N_j - log N_i)`` needs the label's count only,
  and ``log C_ij = q * max(0, l_j - max(l_i, log eps))`` needs the row's own
  log-probabilities only, so the ``C x C`` ratio matrix is never built.
  Cross entropy is invariant to adding a constant to a row, so the row
  constants are left in ``z``: that saves two passes over ``(N, C)``.
* One autograd function computes both terms and writes the ``(N, C + 2)``
  gradient (``softmax - onehot`` per term) directly.
* On accelerators, samples that are not positive are kept in place with
  weight 0 instead of being selected with a boolean mask, so the forward
  makes no host-device synchronisation; their loss and gradient are exactly
  zero. On CPU, where selecting costs nothing, only positive rows are
  computed (``select_positives``).
* ``cum_samples`` is updated by one ``index_add_`` of the batch histogram,
  all-reduced across ranks first when ``torch.distributed`` is initialized.
"""
import math
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.losses.accuracy import accuracy
from mmdet.models.losses.utils import weight_reduce_loss
from torch import Tensor

from mmlongtail.registry import MODELS
from mmlongtail.utils import all_reduce_sum_
from .frame import AvgFactor, ClassificationLoss, LossOutput
from .protocol import (ClassifierLayout, ScoringFamily, check_cls_score,
                       register_foreign_layout)


def _seesaw_log_softmax(score: Tensor, labels: Tensor,
                        log_counts: Optional[Tensor], q: float,
                        log_eps: float) -> Tensor:
    """``log_softmax`` of the seesaw logits ``z``, shape ``(M, C)``.

    With ``l = log_softmax(s)`` and ``i`` the row's label,
    ``z_j = l_j + log M_ij + log C_ij`` up to a per-row constant (which
    ``log_softmax`` ignores):

    * ``log M_ij = p * min(0, log N_j - log N_i)
      = p * min(log N_j, log N_i) - p * log N_i``;
    * ``sigma_j / max(sigma_i, eps) > 1  <=>  l_j > r_i`` with
      ``r_i = max(l_i, log eps)``, so
      ``log C_ij = q * max(0, l_j - r_i) = q * max(l_j, r_i) - q * r_i``.
    """
    if log_counts is None and q <= 0:
        return torch.log_softmax(score, dim=1)
    log_prob = torch.log_softmax(score, dim=1)
    if log_counts is not None:
        logits = torch.minimum(log_counts[None, :], log_counts[labels, None])
        logits.add_(log_prob)
    else:
        logits = log_prob.clone() if q > 0 else log_prob
    if q > 0:
        ref = log_prob.gather(1, labels[:, None]).clamp_(min=log_eps)
        logits.add_(log_prob.clamp_(min=ref), alpha=q)
    del log_prob
    return torch.log_softmax(logits, dim=1)


class _SeesawFunction(torch.autograd.Function):
    """Seesaw cross entropy on class logits, and optionally plain cross
    entropy on two objectness logits, with one hand-written backward.

    Input ``score`` is ``(N, C)`` or ``(N, C + 2)``. The class term runs on
    the rows ``rows`` (all rows when None); the objectness term on every row
    of the last two columns. The seesaw factors are constants (as in the
    paper), so the gradient of each term is ``softmax - onehot``. Writing the
    backward by hand fills one ``(N, C + 2)`` gradient directly instead of
    letting autograd build, zero and add one buffer per slice, which is most
    of the cost on CPU.
    """

    @staticmethod
    def forward(ctx: Any, score: Tensor, cls_labels: Tensor,
                rows: Optional[Tensor], obj_labels: Optional[Tensor],
                log_counts: Optional[Tensor], q: float, log_eps: float,
                num_classes: int) -> Tuple[Tensor, Tensor]:
        cls_score = score[:, :num_classes]
        if rows is not None:
            cls_score = cls_score[rows]
        log_prob = _seesaw_log_softmax(cls_score, cls_labels, log_counts, q,
                                       log_eps)
        loss_cls = log_prob.gather(1, cls_labels[:, None]).squeeze(1).neg_()
        if obj_labels is not None:
            obj_log_prob = torch.log_softmax(score[:, num_classes:], dim=1)
            loss_obj = obj_log_prob.gather(1, obj_labels[:, None]).squeeze(
                1).neg_()
        else:
            obj_log_prob = None
            loss_obj = score.new_zeros(0)
        ctx.num_classes = num_classes
        ctx.score_shape = score.shape
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(
                log_prob.exp_(), cls_labels, rows,
                None if obj_log_prob is None else obj_log_prob.exp_(),
                obj_labels)
        return loss_cls, loss_obj

    @staticmethod
    def backward(ctx: Any, grad_cls: Tensor, grad_obj: Tensor) -> tuple:
        prob, cls_labels, rows, obj_prob, obj_labels = ctx.saved_tensors
        c = ctx.num_classes
        grad = prob.new_empty(ctx.score_shape)
        # class columns: (softmax(z) - onehot) * upstream, on `rows`
        grad_cls = grad_cls[:, None]
        if rows is None:
            grad_rows = torch.mul(prob, grad_cls, out=grad[:, :c])
        else:
            grad[:, :c].zero_()
            grad_rows = prob * grad_cls
        grad_rows.scatter_add_(1, cls_labels[:, None], grad_cls.neg())
        if rows is not None:
            grad[:, :c].index_copy_(0, rows, grad_rows)
        # objectness columns: (softmax - onehot) * upstream, on every row
        if obj_prob is not None:
            grad_obj = grad_obj[:, None]
            torch.mul(obj_prob, grad_obj, out=grad[:, c:]).scatter_add_(
                1, obj_labels[:, None], grad_obj.neg())
        return grad, None, None, None, None, None, None, None


def seesaw_loss(cls_score: Tensor,
                labels: Tensor,
                cum_samples: Tensor,
                label_weights: Optional[Tensor] = None,
                p: float = 0.8,
                q: float = 2.0,
                eps: float = 1e-2,
                reduction: str = 'mean',
                avg_factor: Optional[Union[float, Tensor]] = None,
                select_positives: Optional[bool] = None
                ) -> Tuple[Tensor, Optional[Tensor]]:
    """Seesaw cross entropy on the class logits of positives, and plain
    cross entropy on the objectness logits of every sample when present.

    Args:
        cls_score (Tensor): Logits, ``(N, C + 2)`` (classes, then the
            objectness pair foreground / background) or ``(N, C)`` (classes
            only).
        labels (Tensor): ``(N,)`` int64 in ``[0, C]``, ``C`` = background.
        cum_samples (Tensor): ``(C,)`` accumulated sample count of each class
            (counts below 1 are treated as 1). Its length gives ``C``.
        label_weights (Tensor, optional): ``(N,)`` per-sample weights.
        p (float): Exponent of the mitigation factor; 0 turns it off.
        q (float): Exponent of the compensation factor; 0 turns it off.
        eps (float): Lower bound of the target-class probability in the
            compensation factor.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. With
            ``'mean'`` and no ``avg_factor`` the class term is averaged over
            positives (as in mmdet); with ``'none'`` it has shape ``(N,)``,
            zero off positives.
        avg_factor (float | Tensor, optional): Divisor of the summed loss for
            ``'mean'``.
        select_positives (bool, optional): See :class:`SeesawLoss`.

    Returns:
        tuple[Tensor, Tensor | None]: ``(loss_classes, loss_objectness)``,
        the latter None for ``(N, C)`` input. Both are in at least float32 and
        differentiable with respect to ``cls_score`` (the seesaw factors are
        constants, as in the paper).
    """
    num_classes = cum_samples.numel()
    if cls_score.dim() != 2 or cls_score.size(1) not in (num_classes,
                                                         num_classes + 2):
        raise ValueError(
            f'seesaw_loss: cum_samples has {num_classes} entries, so '
            f'cls_score must be (N, {num_classes}) or (N, {num_classes + 2}),'
            f' got {tuple(cls_score.shape)}')
    if labels.shape != cls_score.shape[:1]:
        raise ValueError(
            f'seesaw_loss: labels must have shape ({cls_score.size(0)},), '
            f'got {tuple(labels.shape)}')
    with_objectness = cls_score.size(1) == num_classes + 2
    labels = labels.long()
    if label_weights is None:
        label_weights = cls_score.new_ones(labels.shape, dtype=torch.float32)
    else:
        label_weights = label_weights.float()
    pos = labels < num_classes
    obj_labels = (~pos).long() if with_objectness else None  # 0: foreground

    # The class term runs on positives only. Selecting their rows needs
    # their number on the host: free on CPU, a synchronisation on an
    # accelerator, where every row is computed instead and the rows that
    # are not positive get weight 0 (and a valid dummy target).
    select = select_positives
    rows = None
    if select is None:
        select = cls_score.device.type == 'cpu'
    if select:
        rows = pos.nonzero(as_tuple=True)[0]
        if select_positives is None and 2 * rows.numel() > len(pos):
            rows = None  # mostly positives: gathering would cost more
    if rows is not None:
        cls_labels = labels[rows]
        cls_weights = label_weights[rows]
    else:
        cls_labels = labels.masked_fill(~pos, 0)
        cls_weights = label_weights * pos
    score, cls_labels, log_counts, log_eps = _prepare(
        cls_score, cls_labels, cum_samples, num_classes, p, q, eps)
    loss_classes, loss_objectness = _SeesawFunction.apply(
        score, cls_labels, rows, obj_labels, log_counts, q, log_eps,
        num_classes)

    if rows is not None and reduction == 'none':
        # Same layout as the masked branch: (N,), 0 off positives.
        loss_classes = loss_classes.new_zeros(labels.shape).index_add(
            0, rows, loss_classes * cls_weights)
        cls_weights = None
    if reduction == 'mean' and avg_factor is None:
        # mmdet averages over the positive rows.
        loss_classes = weight_reduce_loss(
            loss_classes, cls_weights, reduction='sum') / pos.sum().clamp(
                min=1)
    else:
        loss_classes = weight_reduce_loss(loss_classes, cls_weights,
                                          reduction, avg_factor)
    if not with_objectness:
        return loss_classes, None
    if reduction == 'mean' and avg_factor is None and not len(labels):
        reduction = 'sum'  # an empty batch: 0, not the mean of nothing
    loss_objectness = weight_reduce_loss(loss_objectness, label_weights,
                                         reduction, avg_factor)
    return loss_classes, loss_objectness


def seesaw_ce_loss(cls_score: Tensor,
                   labels: Tensor,
                   cum_samples: Tensor,
                   p: float = 0.8,
                   q: float = 2.0,
                   eps: float = 1e-2) -> Tensor:
    """Element-wise Seesaw cross entropy of class logits (no objectness):
    :func:`seesaw_loss` with ``reduction='none'`` on ``(N, C)`` input, in
    the form of mmdet's ``seesaw_ce_loss``.

    Args:
        cls_score (Tensor): Class logits, shape ``(N, C)``.
        labels (Tensor): Target classes in ``[0, C)``, shape ``(N,)``, int64.
        cum_samples (Tensor): Accumulated sample count of each class, shape
            ``(C,)``. Counts below 1 are treated as 1.
        p (float): Exponent of the mitigation factor; 0 turns it off.
            Defaults to 0.8.
        q (float): Exponent of the compensation factor; 0 turns it off.
            Defaults to 2.0.
        eps (float): Lower bound of the target-class probability in the
            compensation factor. Defaults to 1e-2.

    Returns:
        Tensor: Loss of each sample, shape ``(N,)``, in at least float32.
    """
    loss, _ = seesaw_loss(cls_score, labels, cum_samples, p=p, q=q, eps=eps,
                          reduction='none')
    return loss


def _prepare(cls_score: Tensor, labels: Tensor, cum_samples: Tensor,
             num_classes: int, p: float, q: float,
             eps: float) -> Tuple[Tensor, Tensor, Optional[Tensor], float]:
    """Promote to at least float32 and turn counts into ``p * log N``."""
    # Work in at least float32, whatever the input precision (e.g. AMP).
    score = cls_score.to(torch.promote_types(cls_score.dtype, torch.float32))
    log_counts = None
    if p > 0:
        with torch.no_grad():
            log_counts = cum_samples.to(
                device=score.device, dtype=score.dtype).clamp(min=1).log_()
            log_counts = log_counts.mul_(p)
    log_eps = math.log(eps) if eps > 0 else -math.inf
    return score, labels.long(), log_counts, log_eps


SEESAW_SCORING = ('softmax(classes) * P(objectness) per class; '
                  'background column P(background)')


def seesaw_layout(owner: str, num_classes: int) -> ClassifierLayout:
    """``C + 2`` rows: the classes, then the objectness pair (foreground,
    background). Also the layout of mmdet's ``SeesawLoss``."""
    return ClassifierLayout.classes_first(
        owner, num_classes, ('objectness', 'background'),
        scoring=SEESAW_SCORING, family=ScoringFamily.SEESAW)


def seesaw_activation(cls_score: Tensor) -> Tensor:
    """``(..., C + 2)`` logits -> ``(..., C + 1)`` scores:
    ``softmax(classes) * P(foreground)``, then ``P(background)``."""
    obj_prob = F.softmax(cls_score[..., -2:], dim=-1)
    cls_prob = F.softmax(cls_score[..., :-2], dim=-1) * obj_prob[..., :1]
    return torch.cat([cls_prob, obj_prob[..., 1:]], dim=-1)


@MODELS.register_module()
class SeesawLoss(ClassificationLoss):
    """Seesaw Loss with an objectness branch (Wang et al., CVPR 2021).

    The classifier feeding this loss has ``C + 2`` outputs: ``C`` class
    logits then 2 objectness logits (foreground, background). Labels follow
    mmdet's convention: ``0 .. C - 1`` are classes, ``C`` is background.

    * ``loss_cls_classes``: the Seesaw cross entropy on the class logits of
      positive samples (label < C).
    * ``loss_cls_objectness``: cross entropy on the objectness logits of all
      samples (target 0 for positives, 1 for background).

    Both honour ``label_weights``, ``avg_factor`` and ``reduction`` exactly as
    mmdet's losses do (see :func:`seesaw_loss`, which ``forward`` runs
    after counting the batch's labels).

    The loss implements the classifier protocol
    (:class:`~mmlongtail.models.losses.protocol.ClassifierProtocol`), so a
    ``BBoxHead`` sizes its ``fc_cls`` with :meth:`get_cls_channels`, scores
    detections with :meth:`get_activation` and logs :meth:`get_accuracy`.

    Args:
        num_classes (int): Number of classes ``C`` (1203 for LVIS v1).
            Required: the loss holds no dataset facts.
        p (float): Exponent of the mitigation factor. Defaults to 0.8.
        q (float): Exponent of the compensation factor. Defaults to 2.0.
        eps (float): Lower bound of the target-class probability in the
            compensation factor. Defaults to 1e-2.
        return_dict (bool): Return ``dict(loss_cls_objectness=...,
            loss_cls_classes=...)``; otherwise their sum. Defaults to True.
        sync_counts (bool): All-reduce each batch's label histogram across
            ranks before accumulating it, so every rank holds the global
            counts. Only acts when a multi-rank process group is initialized.
            Defaults to True.
        select_positives (bool, optional): How the class term restricts
            itself to positives. True: gather their rows (needs their number
            on the host). False: compute every row and give the others weight
            0 (no host-device synchronisation). None picks True on CPU when
            at most half the samples are positive, False otherwise and on
            accelerators. Results agree up to float rounding.
            Defaults to None.
        reduction, loss_weight, use_sigmoid: As
            :class:`~mmlongtail.models.losses.frame.ClassificationLoss`
            takes them.

    Buffers:
        cum_samples (Tensor): ``(C + 1,)`` float32, the number of samples seen
            per label, background (label ``C``) included, as in mmdet; saved
            in checkpoints. It stays float32 when the module is cast to
            another floating dtype.
    """

    SIGMOID = False

    def __init__(self,
                 *,
                 num_classes: int,
                 use_sigmoid: bool = False,
                 p: float = 0.8,
                 q: float = 2.0,
                 eps: float = 1e-2,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 return_dict: bool = True,
                 sync_counts: bool = True,
                 select_positives: Optional[bool] = None) -> None:
        super().__init__(num_classes, reduction, loss_weight, use_sigmoid)
        if p < 0 or q < 0:
            raise ValueError(f'p and q must be >= 0, got p={p}, q={q}')
        if eps < 0:
            raise ValueError(f'eps must be >= 0, got {eps}')
        self.p = float(p)
        self.q = float(q)
        self.eps = float(eps)
        self.return_dict = return_dict
        self.sync_counts = sync_counts
        self.select_positives = select_positives

        self.register_buffer(
            'cum_samples', torch.zeros(num_classes + 1, dtype=torch.float32))

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, p={self.p}, q={self.q}, '
                f'eps={self.eps}, reduction={self.reduction!r}, '
                f'loss_weight={self.loss_weight}, '
                f'sync_counts={self.sync_counts}')

    def _apply(self, fn: Callable, recurse: bool = True) -> 'SeesawLoss':
        """Move the module like any other, but keep counts in float32.

        ``model.half()`` would otherwise round counts above 2048.
        """
        counts = self.cum_samples
        super()._apply(fn, recurse)
        moved = self.cum_samples
        if moved.dtype != torch.float32:
            self.cum_samples = counts.to(
                device=moved.device, dtype=torch.float32)
        return self

    # ------------------------------------------------------------------
    # classifier protocol
    def _layout(self, num_classes: int) -> ClassifierLayout:
        return seesaw_layout('SeesawLoss', num_classes)

    def _activation(self, cls_score: Tensor) -> Tensor:
        """``(..., C + 2)`` logits -> ``(..., C + 1)``:
        ``softmax(classes) * P(foreground)``, then ``P(background)`` in the
        last column."""
        return seesaw_activation(cls_score)

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """Accuracy of the objectness logits on all samples, and of the
        class logits on positives.

        Args:
            cls_score (Tensor): Logits, shape ``(N, C + 2)``.
            labels (Tensor): Labels in ``[0, C]``, shape ``(N,)``.

        Returns:
            dict[str, Tensor]: ``acc_objectness`` and ``acc_classes`` (%).
        """
        layout = self.classifier_layout()
        check_cls_score(cls_score, layout.num_outputs, 'SeesawLoss',
                        layout.describe())
        pos = labels < self.num_classes
        obj_labels = (~pos).long()
        return dict(
            acc_objectness=accuracy(cls_score[:, -2:], obj_labels),
            acc_classes=accuracy(cls_score[pos, :-2], labels[pos]))

    # ------------------------------------------------------------------
    @torch.no_grad()
    def _accumulate(self, labels: Tensor) -> None:
        """Add the batch's label histogram (global when distributed)."""
        hist = torch.zeros_like(self.cum_samples)
        hist.index_add_(0, labels,
                        torch.ones_like(labels, dtype=hist.dtype))
        all_reduce_sum_(hist, enabled=self.sync_counts)
        self.cum_samples.add_(hist)

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: AvgFactor,
              reduction: str) -> Dict[str, Tensor]:
        """Accumulate the batch's labels, then both terms of the loss on
        ``(N, C + 2)`` logits."""
        labels = labels.long()
        self._accumulate(labels)
        loss_classes, loss_objectness = seesaw_loss(
            cls_score, labels, self.cum_samples[:self.num_classes],
            label_weights, self.p, self.q, self.eps, reduction, avg_factor,
            self.select_positives)
        return dict(
            loss_cls_objectness=loss_objectness,
            loss_cls_classes=loss_classes)

    def _weighted(self, loss: Dict[str, Tensor]) -> LossOutput:
        """Both terms times ``loss_weight``: the dict
        (``loss_cls_objectness``, ``loss_cls_classes``), or their sum if
        ``return_dict=False``."""
        loss = super()._weighted(loss)
        if self.return_dict:
            return loss
        return loss['loss_cls_classes'] + loss['loss_cls_objectness']


def _mmdet_seesaw_layout(loss: nn.Module,
                         num_classes: int) -> ClassifierLayout:
    return seesaw_layout(f'{type(loss).__module__}.SeesawLoss', num_classes)


def _register_mmdet_seesaw() -> None:
    """mmdet's own ``SeesawLoss`` has the same ``C + 2`` layout."""
    from mmdet.models.losses import SeesawLoss as MMDetSeesawLoss
    register_foreign_layout(MMDetSeesawLoss, _mmdet_seesaw_layout)


_register_mmdet_seesaw()
