"""Federated loss (Zhou, Koltun and Krähenbühl, "Probabilistic two-stage
detection", arXiv:2103.07461, 2021), as in detectron2's
``FastRCNNOutputLayers`` (``use_fed_loss=True``) and CenterNet2.

A ``C``-channel sigmoid classifier whose binary cross-entropy runs, in each
batch, only over a subset of the classes: the ground-truth classes ``U`` of
the batch's RoIs, plus negative classes drawn at random with probability
proportional to ``image_count ** freq_weight_power`` until the subset has
``num_classes_sampled`` members. LVIS is federated: an image is exhaustively
annotated only for some classes, so a loss over every class punishes
unannotated true objects; the drawn negatives stand for the classes that were
checked.
"""
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from torch import Tensor

from .protocol import empty_loss


def fed_loss_class_weights(image_count: np.ndarray,
                           freq_weight_power: float) -> Tensor:
    """Sampling weight of each class, ``image_count ** freq_weight_power``.

    Computed as detectron2's ``get_fed_loss_cls_weights`` does (float32
    power of the image counts), so the weights and hence the draws match it
    bit for bit.

    Args:
        image_count (np.ndarray): ``(C,)`` training images per class, in label
            order.
        freq_weight_power (float): Exponent; 0.5 in the paper and in
            detectron2's config (detectron2's helper function itself defaults
            to 1.0).

    Returns:
        Tensor: ``(C,)`` float32.
    """
    counts = torch.as_tensor(np.asarray(image_count, dtype=np.int64))
    return counts.float()**float(freq_weight_power)


def federated_classes(labels: Tensor,
                      num_classes: int,
                      num_classes_sampled: int,
                      class_weights: Tensor) -> Tensor:
    """The classes the loss runs over in this batch.

    ``U = unique(labels)``, the background label ``C`` included when present
    (as in detectron2, where it counts towards ``num_classes_sampled``). If
    ``|U| < num_classes_sampled``, ``num_classes_sampled - |U|`` further
    classes are drawn without replacement from the ``C + 1`` entries
    ``[class_weights, 0]`` with ``U`` zeroed, by ``torch.multinomial`` on the
    labels' device and torch's default generator. This is the same call on
    the same vector as detectron2's ``get_fed_loss_classes``, so under one
    torch seed the drawn classes are the same. Where fewer classes than that
    have a positive weight, all of them are taken (detectron2 raises in
    ``torch.multinomial`` instead).

    Args:
        labels (Tensor): ``(N,)`` labels in ``[0, C]``.
        num_classes (int): ``C``.
        num_classes_sampled (int): The size the subset is filled up to.
        class_weights (Tensor): ``(C,)`` non-negative sampling weights.

    Returns:
        Tensor: ``(K,)`` int64 class indices: ``U`` (sorted), then the drawn
        classes in draw order. May contain ``C`` (background).
    """
    unique = torch.unique(labels)
    num_unique = unique.numel()
    if num_unique >= num_classes_sampled:
        return unique
    prob = torch.zeros(
        num_classes + 1, dtype=torch.float32, device=labels.device)
    prob[:num_classes] = class_weights.float()
    prob[unique] = 0
    num_draw = min(num_classes_sampled - num_unique,
                   int(prob.count_nonzero()))
    if num_draw == 0:
        return unique
    drawn = torch.multinomial(prob, num_draw, replacement=False)
    return torch.cat([unique, drawn])


def federated_class_mask(classes: Tensor, num_classes: int) -> Tensor:
    """``(C,)`` float mask, 1 for the classes in ``classes`` (the background
    index ``C`` is ignored)."""
    mask = classes.new_zeros(num_classes + 1, dtype=torch.float32)
    mask[classes] = 1
    return mask[:num_classes]


def federated_loss(cls_score: Tensor,
                   labels: Tensor,
                   class_mask: Tensor,
                   weight: Optional[Tensor] = None,
                   reduction: str = 'mean',
                   avg_factor: Optional[float] = None) -> Tensor:
    r"""Binary cross-entropy over the federated classes.

    .. math::
        L = \frac{1}{N} \sum_i \sum_{j \in S} \mathrm{BCE}(x_{ij}, y_{ij})

    with :math:`S` the classes of ``class_mask`` and :math:`y_{ij} = 1` iff
    RoI :math:`i` has label :math:`j` (background: all zero).

    For ``'mean'`` and ``'sum'`` the ``(N, C)`` terms are summed in one
    reduction, as detectron2 sums them, so that with all-one weights the
    result equals detectron2's bit for bit (mmdet's ``avg_factor + eps``
    denominator rounds to ``N`` in float32 for ``N >= 2``).

    Args:
        cls_score (Tensor): ``(N, C)`` logits.
        labels (Tensor): ``(N,)`` in ``[0, C]``; ``C`` is background.
        class_mask (Tensor): ``(C,)`` 0/1 mask of the classes in the loss.
        weight (Tensor, optional): ``(N,)`` per-RoI weights.
        reduction (str): ``'none'`` gives the ``(N,)`` per-RoI loss (summed
            over classes); ``'mean'`` divides the sum by ``N`` (or
            ``avg_factor``); ``'sum'`` sums it.
        avg_factor (float, optional): Normalizer for ``'mean'``.

    Returns:
        Tensor: Reduced loss.
    """
    num, num_classes = cls_score.shape
    if num == 0:
        return empty_loss(cls_score, reduction, (0, ))
    target = F.one_hot(labels, num_classes + 1)[:, :num_classes]
    target = target.to(cls_score.dtype)
    loss = F.binary_cross_entropy_with_logits(
        cls_score, target, reduction='none')
    loss = loss * class_mask.to(loss.dtype)[None, :]
    if reduction == 'none':
        return weight_reduce_loss(loss.sum(dim=1), weight, reduction)
    if weight is not None:
        weight = weight[:, None]
    if reduction == 'mean' and avg_factor is None:
        avg_factor = num
    return weight_reduce_loss(loss, weight, reduction, avg_factor)
