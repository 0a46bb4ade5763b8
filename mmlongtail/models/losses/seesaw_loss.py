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
  of each sample's label. ``log M_ij = p * min(0, log N_j - log N_i)`` needs
  the label's count only, and ``log C_ij = q * max(0, s_j - r_i)`` with
  ``r_i = max(s_i, logsumexp(s) + log eps)`` needs one log-sum-exp per row, so
  neither the ``C x C`` ratio matrix nor a softmax is built. Cross entropy is
  invariant to adding a constant to a row, so the row constants ``q * r_i``
  and ``p * log N_i`` are left in ``z``: that saves two passes over ``(N, C)``.
* Samples that are not positive are kept in place with weight 0 instead of
  being selected with a boolean mask, so the forward makes no host-device
  synchronisation. Their loss and gradient are exactly zero.
* ``cum_samples`` is updated by one ``index_add_`` of the batch histogram,
  all-reduced across ranks first when ``torch.distributed`` is initialized.
"""
import math
from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.losses.accuracy import accuracy
from mmdet.models.losses.utils import weight_reduce_loss
from torch import Tensor

from mmlongtail.registry import MODELS
from mmlongtail.utils import all_reduce_sum_

_REDUCTIONS = ('none', 'mean', 'sum')


def seesaw_ce_loss(cls_score: Tensor,
                   labels: Tensor,
                   cum_samples: Tensor,
                   p: float = 0.8,
                   q: float = 2.0,
                   eps: float = 1e-2) -> Tensor:
    """Element-wise Seesaw cross entropy.

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
        Tensor: Loss of each sample, shape ``(N,)``, differentiable with
        respect to ``cls_score`` (the seesaw factors themselves are constants,
        as in the paper).
    """
    num_classes = cls_score.size(-1)
    if cum_samples.numel() != num_classes:
        raise ValueError(
            f'cum_samples has {cum_samples.numel()} entries but cls_score has '
            f'{num_classes} classes')
    # Work in at least float32, whatever the input precision (e.g. AMP).
    dtype = torch.promote_types(cls_score.dtype, torch.float32)
    score = cls_score.to(dtype)
    if p <= 0 and q <= 0:
        return F.cross_entropy(score, labels, reduction='none')

    with torch.no_grad():
        # log-seesaw factors of each row, up to a per-row constant.
        detached = score.detach()
        compensation = mitigation = None
        if q > 0:
            # sigma_j / max(sigma_i, eps) > 1  <=>  s_j > r_i, with
            # r_i = max(s_i, logsumexp(s) + log eps), and
            # q * max(0, s_j - r_i) = q * max(s_j, r_i) - q * r_i.
            log_eps = math.log(eps) if eps > 0 else -math.inf
            ref = torch.maximum(
                detached.gather(1, labels[:, None]),
                torch.logsumexp(detached, dim=1, keepdim=True) + log_eps)
            compensation = torch.maximum(detached, ref)
        if p > 0:
            # p * min(0, log N_j - log N_i)
            #     = p * min(log N_j, log N_i) - p * log N_i
            log_counts = cum_samples.to(
                device=score.device, dtype=torch.float32).clamp(min=1).log()
            log_counts = log_counts.mul_(p).to(dtype)
            mitigation = torch.minimum(log_counts[None, :],
                                       log_counts[labels][:, None])
        if mitigation is None:
            shift = compensation.mul_(q)
        elif compensation is None:
            shift = mitigation
        else:
            shift = mitigation.add_(compensation, alpha=q)
    return F.cross_entropy(score + shift, labels, reduction='none')


@MODELS.register_module()
class SeesawLoss(nn.Module):
    """Seesaw Loss with an objectness branch (Wang et al., CVPR 2021).

    The classifier feeding this loss has ``C + 2`` outputs: ``C`` class
    logits then 2 objectness logits (foreground, background). Labels follow
    mmdet's convention: ``0 .. C - 1`` are classes, ``C`` is background.

    * ``loss_cls_classes``: the Seesaw cross entropy on the class logits of
      positive samples (label < C).
    * ``loss_cls_objectness``: cross entropy on the objectness logits of all
      samples (target 0 for positives, 1 for background).

    Both honour ``label_weights``, ``avg_factor`` and ``reduction`` exactly as
    mmdet's losses do. With ``reduction='mean'`` and no ``avg_factor`` the
    class term is averaged over positives (as in mmdet). With
    ``reduction='none'`` the class term has shape ``(N,)``, zero at samples
    that are not positive (mmdet returns only the positive rows).

    The loss implements mmdet's custom classifier protocol, so a ``BBoxHead``
    sizes its ``fc_cls`` with :meth:`get_cls_channels`, scores detections with
    :meth:`get_activation` and logs :meth:`get_accuracy`.

    Args:
        num_classes (int): Number of classes ``C`` (1203 for LVIS v1).
            Required: the loss holds no dataset facts.
        use_sigmoid (bool): Only False (softmax) is supported; kept for config
            compatibility. Defaults to False.
        p (float): Exponent of the mitigation factor. Defaults to 0.8.
        q (float): Exponent of the compensation factor. Defaults to 2.0.
        eps (float): Lower bound of the target-class probability in the
            compensation factor. Defaults to 1e-2.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``.
            Defaults to ``'mean'``.
        loss_weight (float): Weight of both terms. Defaults to 1.0.
        return_dict (bool): Return ``dict(loss_cls_objectness=...,
            loss_cls_classes=...)``; otherwise their sum. Defaults to True.
        sync_counts (bool): All-reduce each batch's label histogram across
            ranks before accumulating it, so every rank holds the global
            counts. Only acts when a multi-rank process group is initialized.
            Defaults to True.

    Buffers:
        cum_samples (Tensor): ``(C + 1,)`` float32, the number of samples seen
            per label, background (label ``C``) included, as in mmdet; saved
            in checkpoints. It stays float32 when the module is cast to
            another floating dtype.
    """

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
                 sync_counts: bool = True) -> None:
        super().__init__()
        if use_sigmoid:
            raise ValueError(
                'SeesawLoss is a softmax loss: use_sigmoid=True is not '
                'supported')
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f'num_classes must be a positive int, got {num_classes!r}')
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f'reduction must be one of {_REDUCTIONS}, got {reduction!r}')
        if p < 0 or q < 0:
            raise ValueError(f'p and q must be >= 0, got p={p}, q={q}')
        if eps < 0:
            raise ValueError(f'eps must be >= 0, got {eps}')
        self.use_sigmoid = False
        self.num_classes = num_classes
        self.p = float(p)
        self.q = float(q)
        self.eps = float(eps)
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.return_dict = return_dict
        self.sync_counts = sync_counts

        self.register_buffer(
            'cum_samples', torch.zeros(num_classes + 1, dtype=torch.float32))

        # mmdet's custom classifier protocol (see BBoxHead).
        self.custom_cls_channels = True
        self.custom_activation = True
        self.custom_accuracy = True

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
    def _split_cls_score(self, cls_score: Tensor) -> Tuple[Tensor, Tensor]:
        """Split ``(..., C + 2)`` into class ``(..., C)`` and objectness
        ``(..., 2)`` logits."""
        expected = self.num_classes + 2
        if cls_score.size(-1) != expected:
            raise ValueError(
                f'SeesawLoss expects cls_score with num_classes + 2 = '
                f'{expected} channels (num_classes={self.num_classes}), got '
                f'{cls_score.size(-1)}')
        return cls_score[..., :-2], cls_score[..., -2:]

    def get_cls_channels(self, num_classes: int) -> int:
        """Number of classifier outputs for ``num_classes`` classes: C + 2."""
        if num_classes != self.num_classes:
            raise ValueError(
                f'num_classes mismatch: the head has {num_classes} classes '
                f'but SeesawLoss was built with num_classes='
                f'{self.num_classes}')
        return num_classes + 2

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Scores from logits.

        Args:
            cls_score (Tensor): Logits, shape ``(..., C + 2)``.

        Returns:
            Tensor: ``(..., C + 1)``: ``softmax(classes) * P(foreground)``,
            then ``P(background)`` in the last column.
        """
        cls_logits, obj_logits = self._split_cls_score(cls_score)
        obj_prob = F.softmax(obj_logits, dim=-1)
        cls_prob = F.softmax(cls_logits, dim=-1) * obj_prob[..., :1]
        return torch.cat([cls_prob, obj_prob[..., 1:]], dim=-1)

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
        cls_logits, obj_logits = self._split_cls_score(cls_score)
        pos = labels < self.num_classes
        obj_labels = (~pos).long()
        return dict(
            acc_objectness=accuracy(obj_logits, obj_labels),
            acc_classes=accuracy(cls_logits[pos], labels[pos]))

    # ------------------------------------------------------------------
    @torch.no_grad()
    def _accumulate(self, labels: Tensor) -> None:
        """Add the batch's label histogram (global when distributed)."""
        hist = torch.zeros_like(self.cum_samples)
        hist.index_add_(0, labels,
                        torch.ones_like(labels, dtype=hist.dtype))
        all_reduce_sum_(hist, enabled=self.sync_counts)
        self.cum_samples.add_(hist)

    def _check_inputs(self, cls_score: Tensor, labels: Tensor,
                      label_weights: Optional[Tensor]) -> None:
        if cls_score.dim() != 2:
            raise ValueError('SeesawLoss expects cls_score of shape '
                             f'(N, C + 2), got {tuple(cls_score.shape)}')
        self._split_cls_score(cls_score)
        if labels.dim() != 1 or labels.size(0) != cls_score.size(0):
            raise ValueError(
                f'labels must have shape ({cls_score.size(0)},), got '
                f'{tuple(labels.shape)}')
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(
                f'labels must be an integer tensor, got {labels.dtype}')
        if label_weights is not None and label_weights.shape != labels.shape:
            raise ValueError(
                f'label_weights must have shape {tuple(labels.shape)}, got '
                f'{tuple(label_weights.shape)}')
        # Checked on the device: no host synchronisation on CUDA (a failure
        # surfaces as a device-side assert there), an immediate error on CPU.
        if labels.numel() > 0:
            torch._assert_async(
                ((labels >= 0) & (labels <= self.num_classes)).all(),
                f'SeesawLoss: labels must lie in [0, {self.num_classes}] '
                f'(num_classes={self.num_classes}, {self.num_classes} is '
                'background)')

    def forward(
        self,
        cls_score: Tensor,
        labels: Tensor,
        label_weights: Optional[Tensor] = None,
        avg_factor: Optional[Union[float, Tensor]] = None,
        reduction_override: Optional[str] = None
    ) -> Union[Tensor, Dict[str, Tensor]]:
        """Accumulate the batch's labels, then compute the loss.

        Args:
            cls_score (Tensor): Logits, shape ``(N, C + 2)``.
            labels (Tensor): Labels in ``[0, C]`` (``C`` = background), shape
                ``(N,)``.
            label_weights (Tensor, optional): Per-sample weights, ``(N,)``.
            avg_factor (float | Tensor, optional): Divisor of the summed loss
                for ``reduction='mean'``.
            reduction_override (str, optional): ``'none'``, ``'mean'`` or
                ``'sum'``; overrides ``self.reduction``.

        Returns:
            dict[str, Tensor] | Tensor: ``loss_cls_objectness`` and
            ``loss_cls_classes`` (or their sum if ``return_dict=False``).
        """
        assert reduction_override in (None, 'none', 'mean', 'sum')
        reduction = reduction_override if reduction_override else \
            self.reduction
        self._check_inputs(cls_score, labels, label_weights)
        labels = labels.long()

        self._accumulate(labels)

        if label_weights is None:
            label_weights = cls_score.new_ones(labels.shape,
                                               dtype=torch.float32)
        else:
            label_weights = label_weights.float()
        pos = labels < self.num_classes
        cls_logits, obj_logits = self._split_cls_score(cls_score)

        # Class term: every row is computed, rows that are not positive get
        # weight 0 (and a valid dummy target), so nothing depends on the
        # number of positives on the host.
        cls_labels = labels.masked_fill(~pos, 0)
        cls_weights = label_weights * pos
        loss_classes = seesaw_ce_loss(cls_logits, cls_labels,
                                      self.cum_samples[:self.num_classes],
                                      self.p, self.q, self.eps)
        if reduction == 'mean' and avg_factor is None:
            # mmdet averages over the positive rows only.
            loss_classes = weight_reduce_loss(
                loss_classes, cls_weights, reduction='sum') / pos.sum().clamp(
                    min=1)
        else:
            loss_classes = weight_reduce_loss(loss_classes, cls_weights,
                                              reduction, avg_factor)

        # Objectness term: target 0 = foreground, 1 = background.
        obj_labels = (~pos).long()
        loss_objectness = F.cross_entropy(
            obj_logits.to(torch.promote_types(obj_logits.dtype,
                                              torch.float32)),
            obj_labels,
            reduction='none')
        loss_objectness = weight_reduce_loss(loss_objectness, label_weights,
                                             reduction, avg_factor)

        loss_classes = self.loss_weight * loss_classes
        loss_objectness = self.loss_weight * loss_objectness
        if self.return_dict:
            return dict(
                loss_cls_objectness=loss_objectness,
                loss_cls_classes=loss_classes)
        return loss_classes + loss_objectness
