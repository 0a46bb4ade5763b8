"""Input checks of the classification losses: one function per kind of
input, ``ValueError`` naming the problem for each kind of error, and the
target conventions every loss shares."""
from typing import Optional

import torch
from torch import Tensor

from mmlongtail.datasets.category_stats import check_num_classes  # noqa: F401

#: Reductions a loss accepts.
REDUCTIONS = ('none', 'mean', 'sum')


# ----------------------------------------------------------------------------
# input checks
def check_reduction(reduction: str, owner: str) -> str:
    """Return ``reduction`` or raise ``ValueError`` unless none/mean/sum."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be 'none', 'mean' or "
                         f"'sum', got {reduction!r}")
    return reduction


def check_cls_score(cls_score: Tensor,
                    num_outputs: int,
                    owner: str,
                    what: str = '',
                    batched: bool = True) -> None:
    """Raise ``ValueError`` unless ``cls_score`` is ``(N, num_outputs)``.

    Args:
        cls_score (Tensor): Logits, expected shape ``(N, num_outputs)``.
        num_outputs (int): Expected channels.
        owner (str): Named in the message.
        what (str): How the channels are laid out, e.g. ``'C + 2 rows'``.
        batched (bool): Require exactly two dimensions; otherwise only the
            last dimension is checked (``(..., num_outputs)``).
    """
    got = cls_score.size(-1) if cls_score.dim() else None
    if got != num_outputs or (batched and cls_score.dim() != 2):
        layout = f' ({what})' if what else ''
        shape = f'(N, {num_outputs})' if batched else f'(..., {num_outputs})'
        raise ValueError(
            f'{owner}: cls_score has {got} channels, expected {num_outputs} '
            f'channels{layout}: cls_score must be {shape}, got {got} '
            f'channels in shape {tuple(cls_score.shape)}')


def check_labels(labels: Tensor, num: int, num_classes: int,
                 owner: str) -> None:
    """Raise ``ValueError`` unless ``labels`` is ``(num,)`` integer in
    ``[0, num_classes]`` (``num_classes`` is background).

    On CPU the range check names the offending labels. On an accelerator it
    uses ``torch._assert_async`` so that it does not synchronize the device
    (a failure then surfaces as a device-side assert at the next sync).
    """
    if labels.dim() != 1 or labels.size(0) != num:
        raise ValueError(f'{owner}: labels must have shape ({num},), got '
                         f'{tuple(labels.shape)}')
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f'{owner}: labels must be an integer tensor, got '
                         f'{labels.dtype}')
    if labels.numel() == 0:
        return
    valid = (labels >= 0) & (labels <= num_classes)
    message = (f'{owner}: labels must lie in [0, {num_classes}] '
               f'(num_classes={num_classes}, {num_classes} is background)')
    if labels.device.type == 'cpu':
        if not bool(valid.all()):
            bad = labels[~valid].unique().tolist()[:8]
            raise ValueError(f'{message}, got {bad}')
    else:
        torch._assert_async(valid.all(), message)


def check_label_weights(label_weights: Optional[Tensor], num: int,
                        owner: str) -> None:
    """Raise ``ValueError`` unless ``label_weights`` is None or ``(num,)``."""
    if label_weights is not None and tuple(label_weights.shape) != (num, ):
        raise ValueError(f'{owner}: label_weights must have shape ({num},), '
                         f'got {tuple(label_weights.shape)}')


def empty_loss(cls_score: Tensor, reduction: str, none_shape: tuple) -> Tensor:
    """Loss of an empty batch: zeros connected to the graph (no NaN)."""
    if reduction == 'none':
        return cls_score.new_zeros(none_shape) + cls_score.sum() * 0
    return cls_score.sum() * 0



def sigmoid_target_mask(labels: Tensor, num_classes: int) -> Tensor:
    """``(N,)`` labels in ``[0, C]`` -> ``(N, C)`` bool targets of a sigmoid
    classifier: row ``n`` is True at column ``labels[n]`` only, and
    background (label ``C``) is the all-False row.

    The one definition of that convention for every sigmoid loss (one bool
    byte per element, the cheapest form for the lean kernels).
    """
    classes = torch.arange(num_classes, device=labels.device)
    return labels.view(-1, 1) == classes.view(1, -1)


def sigmoid_targets(labels: Tensor, num_classes: int) -> Tensor:
    """:func:`sigmoid_target_mask` as ``(N, C)`` int64 one-hot targets;
    callers cast to the dtype they need."""
    return sigmoid_target_mask(labels, num_classes).long()
