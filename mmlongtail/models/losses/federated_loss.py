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

Differences from detectron2, none of which changes its numbers in mmdet's
``BBoxHead`` (all-one ``label_weights``, ``avg_factor = N``):

* ``C`` outputs; detectron2's box predictor keeps a ``C + 1``-th logit that
  this loss never reads (it only adds a meaningless test-time column);
* ``label_weights`` and ``avg_factor`` are honoured, and ``U`` is taken over
  the RoIs with a positive weight (a zero-weight RoI is as if absent);
* when fewer classes than needed have a positive weight, all of them are
  taken (detectron2's ``torch.multinomial`` raises);
* the weights come from category statistics (``'lvis_v1'`` or an annotation
  file) instead of detectron2's dataset metadata.
"""
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.datasets.category_stats import StatsSource
from mmlongtail.registry import MODELS
from .frame import ClassificationLoss
from .protocol import SigmoidClassifierProtocol, empty_loss, sigmoid_targets
from .sigmoid_kernels import bce_terms, lean_bce_loss


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
    target = sigmoid_targets(labels, num_classes)
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


@MODELS.register_module()
class FederatedLoss(SigmoidClassifierProtocol, ClassificationLoss):
    """Federated loss (Zhou et al., 2021), detectron2's ``use_fed_loss``.

    A ``C``-channel sigmoid classifier (background = label ``C`` = all-zero
    target) trained with binary cross-entropy over the batch's federated
    classes only (:func:`federated_classes`), summed and divided by the
    number of RoIs; test-time scores are per-class sigmoids.

    Randomness: the negative classes are drawn by ``torch.multinomial`` with
    torch's default generator on the labels' device, exactly the call of
    detectron2, so ``torch.manual_seed`` (mmengine's ``randomness.seed``)
    makes the draws reproducible and equal to detectron2's. Each rank draws
    its own set from its own batch, as in detectron2; nothing is
    synchronized. A Cascade head has one loss, and one draw, per stage.

    In a query-based head (DINO, Deformable DETR; the query-head mode is
    taken when the head builds the loss) every call draws once, as
    detectron2 draws once per loss call of a box predictor: each decoder
    layer's matched queries, the encoder proposals and each layer's
    denoising queries get their own draw. A call's positives are the
    classes of its own targets (the denoising targets are the batch's gt
    labels; DINO noises the queries' input labels, never the targets), and
    they are always in its draw (``U`` comes first). Independent draws per
    output, not one shared draw per step: each output is its own binary
    problem over its own positives, as each Cascade stage is.

    Note detectron2's trap: its ``get_fed_loss_cls_weights`` helper defaults
    the power to 1.0, while its config (``FED_LOSS_FREQ_WEIGHT_POWER``) and
    the paper use 0.5, the default here.

    It also takes the frame's keyword arguments, ``reduction``,
    ``loss_weight``, ``use_sigmoid``, ``dense_head`` (see
    :class:`~mmlongtail.models.losses.frame.ClassificationLoss`).

    Args:
        num_classes (int): ``C``. Must match the category statistics.
        category_stats: ``'lvis_v1'``, a path to a stats JSON or an LVIS/COCO
            annotation file, a dict, or a ``CategoryStats``.
        num_classes_sampled (int): Size of the class subset, background
            included when present (as in detectron2). Defaults to 50.
        freq_weight_power (float): Sampling weight ``image_count ** power``.
            Defaults to 0.5.
        lean (bool): In a dense head, compute the loss with
            :func:`~mmlongtail.models.losses.sigmoid_kernels.lean_bce_loss`
            (one ``(N, C)`` temporary, the closed-form gradient; float32 for
            lower-precision logits). False, or in an R-CNN head:
            :func:`federated_loss` through autograd (detectron2's
            summation order). Defaults to True.
    """

    def __init__(self,
                 num_classes: int,
                 category_stats: StatsSource,
                 num_classes_sampled: int = 50,
                 freq_weight_power: float = 0.5,
                 lean: bool = True,
                 **frame: Any) -> None:
        owner = 'FederatedLoss'
        if isinstance(num_classes_sampled, bool) or not isinstance(
                num_classes_sampled, int) or num_classes_sampled < 1:
            raise ValueError(f'{owner}: num_classes_sampled must be a '
                             f'positive int, got {num_classes_sampled!r}')
        if not freq_weight_power >= 0:
            raise ValueError(f'{owner}: freq_weight_power must be >= 0, got '
                             f'{freq_weight_power}')
        super().__init__(num_classes, category_stats=category_stats,
                         **frame)
        self.num_classes_sampled = num_classes_sampled
        self.freq_weight_power = float(freq_weight_power)
        self.lean = bool(lean)
        # derived from the statistics, not trained: not saved in checkpoints
        self.register_buffer(
            'class_weights',
            fed_loss_class_weights(self.stats.image_count,
                                   self.freq_weight_power),
            persistent=False)
        MMLogger.get_current_instance().info(
            f'FederatedLoss: {self.num_classes_sampled} of '
            f'{self.num_classes} classes per batch, sampling weight '
            f'image_count^{self.freq_weight_power} (from '
            f'{self.stats.source})')

    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: Optional[float],
              reduction: str) -> Tensor:
        """Draw this batch's classes; ``(N, C)`` logits, ``'none'`` gives
        ``(N,)``."""
        if cls_score.size(0) == 0:  # detectron2 draws nothing either
            mask = cls_score.new_zeros(self.num_classes)
        else:
            present = labels if label_weights is None else labels[
                label_weights > 0]
            classes = federated_classes(present, self.num_classes,
                                        self.num_classes_sampled,
                                        self.class_weights)
            mask = federated_class_mask(classes, self.num_classes)
            if self.lean and self.dense_head:
                if reduction == 'mean' and avg_factor is None:
                    avg_factor = cls_score.size(0)  # as federated_loss
                return lean_bce_loss(cls_score, labels, label_weights,
                                     bce_terms(cls_score, class_weight=mask),
                                     reduction, avg_factor)
        return federated_loss(cls_score, labels, mask, label_weights,
                              reduction, avg_factor)
