"""ROG's GAP ranking loss in the loop form of its official code, written
anew for the benchmark (tools/benchmark_gap_loss.py) and for the tests.

It follows the official algorithm (github.com/EricZsy/ROG,
``mmdet/models/losses/gap_loss.py``) step by step: a Python loop over the
classes present and, inside, over each class's positives, each step a
vector operation over that class's relevant negatives (logits no lower than
the class's lowest positive minus ``delta``). It is the yardstick for
:func:`mmlongtail.models.losses.gap_loss.gap_loss`, which computes the same
value and gradient without the loops; the library never imports it.
"""
from typing import Tuple

import torch
from torch import Tensor


def _step(x: Tensor, delta: float) -> Tensor:
    if delta > 0:
        return (x / (2 * delta) + 0.5).clamp(0, 1)
    return (x >= 0).float()


def gap_loop(logits: Tensor,
             labels: Tensor,
             class_weight: Tensor,
             lam: float = 0.1,
             delta: float = 0.5,
             eps: float = 1e-10) -> Tuple[Tensor, Tensor]:
    """Value and gradient of GAP, by loops over classes and positives.

    Args:
        logits (Tensor): ``(N, C)`` foreground logits.
        labels (Tensor): ``(N,)`` in ``[0, C]``; ``C`` is background.
        class_weight (Tensor): ``(C,)`` class weights (``gap_class_weights``).
        lam (float): Scale of the gradient.
        delta (float): Half-width of the smoothed step.
        eps (float): Smallest false-positive mass that sends an update.

    Returns:
        tuple[Tensor, Tensor]: the scalar loss and the ``(N, C)`` gradient
        of the logits.
    """
    num, num_classes = logits.shape
    flat = logits.detach().float().reshape(-1)
    is_pos = torch.zeros(num, num_classes, dtype=torch.bool,
                         device=logits.device)
    fg = labels < num_classes
    is_pos[fg.nonzero().squeeze(1), labels[fg]] = True
    is_pos = is_pos.reshape(-1)
    grad = torch.zeros_like(flat)
    value = flat.new_zeros(())
    present = labels[fg].unique()
    for m in present.tolist():
        own = torch.zeros_like(is_pos)
        rows = (labels == m).nonzero().squeeze(1)
        own[rows * num_classes + m] = True
        pos = flat[own]
        cut = pos.min() - delta
        neg_mask = ~is_pos & (flat >= cut)
        neg = flat[neg_mask]
        neg_grad = torch.zeros_like(neg)
        pos_grad = torch.zeros_like(pos)
        errors = torch.zeros_like(pos)
        for k in range(pos.numel()):
            above_pos = _step(pos - pos[k], delta).sum()
            above_neg = _step(neg - pos[k], delta)
            false_pos = above_neg.sum()
            rank = above_pos + false_pos
            errors[k] = false_pos / rank
            if false_pos > eps:
                pos_grad[k] = -false_pos / rank
                neg_grad += above_neg / rank
        value = value + errors.mean() / len(present)
        scale = lam * class_weight[m] / (pos.numel() * len(present))
        grad[own] += pos_grad * scale
        grad[neg_mask] += neg_grad * scale
    return value, grad.view(num, num_classes)
