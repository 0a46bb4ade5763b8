"""Balanced Group Softmax, BAGS (Li et al., "Overcoming Classifier Imbalance
for Long-tail Object Detection with Balanced Group Softmax", CVPR 2020)."""
import bisect
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.losses.utils import weight_reduce_loss
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.datasets.category_stats import StatsSource
from mmlongtail.registry import MODELS
from .frame import ClassificationLoss
from .protocol import ClassifierLayout, ScoringFamily, empty_loss


def check_bin_split(bin_split: Sequence[int]) -> Tuple[int, ...]:
    """Validate ``bin_split``: non-empty, positive, strictly increasing."""
    split = tuple(bin_split)
    if len(split) == 0:
        raise ValueError('GroupSoftmaxLoss: bin_split must not be empty')
    if any(not isinstance(b, (int, float)) or b <= 0 for b in split):
        raise ValueError(f'GroupSoftmaxLoss: bin_split values must be '
                         f'positive numbers, got {split}')
    if any(a >= b for a, b in zip(split[:-1], split[1:])):
        raise ValueError(f'GroupSoftmaxLoss: bin_split must be strictly '
                         f'increasing, got {split}')
    return split


def assign_groups(instance_count: Sequence[int],
                  bin_split: Sequence[int]) -> List[int]:
    """Group of each class: ``bisect_right(bin_split, count)``.

    With ``(10, 100, 1000)`` the groups are ``[0, 10)``, ``[10, 100)``,
    ``[100, 1000)`` and ``[1000, inf)`` training instances (Li et al., CVPR
    2020, Sec. 3.2). Background is not included (it is the last group).
    """
    split = list(bin_split)
    return [bisect.bisect_right(split, int(n)) for n in instance_count]


def sample_others(group_labels: Tensor, valid: Tensor,
                  beta: float) -> Tensor:
    """Choose which "others" samples of each group enter the loss.

    In every foreground group, all of the group's positives (group label > 0)
    are kept and ``floor(beta * num_pos)`` of its "others" (group label 0) are
    drawn uniformly without replacement; all of them when there are fewer. A
    group without positives contributes nothing. The draw uses torch's RNG on
    the labels' device, so ``torch.manual_seed`` makes it reproducible.

    Args:
        group_labels (Tensor): ``(G, N)`` labels within each foreground group.
        valid (Tensor): ``(N,)`` bool, proposals that may enter the loss.
        beta (float): Others-to-positives ratio.

    Returns:
        Tensor: ``(G, N)`` bool selection.
    """
    pos = (group_labels > 0) & valid
    others = (group_labels == 0) & valid
    num_pos = pos.sum(dim=1, keepdim=True)
    num_draw = torch.floor(num_pos.to(torch.float64) * beta)
    # uniform sampling without replacement: the num_draw smallest random keys
    keys = torch.rand(group_labels.shape, device=group_labels.device)
    keys = keys.masked_fill(~others, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    drawn = others & (rank < num_draw)
    return (pos | drawn) & (num_pos > 0)


@MODELS.register_module()
class GroupSoftmaxLoss(ClassificationLoss):
    """Balanced Group Softmax (BAGS; Li et al., CVPR 2020).

    Classes are put into groups by their training instance count with
    ``bin_split`` (bisect-right); background forms one more group. Each group
    has its own softmax over ``[others, the group's classes in label order]``,
    so the classifier has ``C + 1 + G`` channels (``G`` groups, background
    included), in the layout of the official eqlv2 implementation::

        [others_0, classes of group 0, others_1, classes of group 1, ...,
         others_bg, background]

    In the background group a foreground proposal is "others" (label 0) and a
    background proposal label 1. In every other group, a proposal of a class
    outside it is "others"; those are sampled at ``beta`` times the group's
    positives (:func:`sample_others`). Each group's cross-entropy is summed
    over its selected proposals and divided by their number (at least 1), and
    the groups are added.

    Reductions: ``'mean'`` (default) is that per-group normalized loss, the
    official one. ``avg_factor`` does not apply (each group has its own
    normalizer) and is ignored. ``'none'`` gives the ``(N,)`` un-normalized
    per-proposal sum over groups, and ``'sum'`` its sum. ``label_weights``
    multiply each proposal's cross-entropy and count in the normalizers; a
    proposal with weight 0 is left out, also from the sampling.

    At test time :meth:`get_activation` returns ``(N, C + 1)``
    probabilities: a class's in-group softmax probability times the
    foreground probability of the background group, and as last column the
    background probability.

    It also takes the frame's keyword arguments, ``reduction``,
    ``loss_weight``, ``use_sigmoid`` (see
    :class:`~mmlongtail.models.losses.frame.ClassificationLoss`).

    Args:
        num_classes (int): ``C``. Must match the category statistics.
        category_stats: ``'lvis_v1'``, a path, a dict or ``CategoryStats``
            (uses ``instance_count``).
        bin_split (Sequence[int]): Group boundaries on instance counts.
            Defaults to ``(10, 100, 1000)``.
        beta (float): Others-to-positives sampling ratio. Defaults to 8.
    """

    SIGMOID = False

    def __init__(self,
                 num_classes: int,
                 category_stats: StatsSource,
                 bin_split: Sequence[int] = (10, 100, 1000),
                 beta: float = 8.0,
                 **frame: Any) -> None:
        if not beta >= 0:
            raise ValueError(f'GroupSoftmaxLoss: beta must be >= 0, got '
                             f'{beta}')
        bin_split = check_bin_split(bin_split)
        super().__init__(num_classes, category_stats=category_stats,
                         **frame)
        self.bin_split = bin_split
        self.beta = float(beta)
        stats = self.stats

        C = self.num_classes
        class_group = assign_groups(stats.instance_count, self.bin_split)
        self.num_groups = len(self.bin_split) + 2  # + background group
        bg_group = self.num_groups - 1
        groups = class_group + [bg_group]  # label C is background
        self.group_sizes = [groups.count(g) for g in range(self.num_groups)]
        self.group_offsets = []
        start = 0
        for size in self.group_sizes:
            self.group_offsets.append(start)
            start += size + 1  # + "others"
        assert start == C + 1 + self.num_groups

        # label_map[g, label]: label inside group g (0 = others)
        label_map = torch.zeros(self.num_groups, C + 1, dtype=torch.long)
        # channel of each label (0..C) in the flat layout
        label_channel = torch.zeros(C + 1, dtype=torch.long)
        seen = [0] * self.num_groups
        for label, g in enumerate(groups):
            seen[g] += 1
            label_map[g, label] = seen[g]
            label_channel[label] = self.group_offsets[g] + seen[g]
        # derived from the statistics: moved by .to(), not checkpointed
        self.register_buffer('label_map', label_map, persistent=False)
        self.register_buffer('label_channel', label_channel, persistent=False)
        MMLogger.get_current_instance().info(
            f'GroupSoftmaxLoss: bin_split={self.bin_split}, classes per '
            f'group (last = background) {self.group_sizes}, beta={self.beta}')

    # ------------------------------------------------- classifier protocol
    def _layout(self, num_classes: int) -> ClassifierLayout:
        """``C + 1 + G`` rows; ``groups`` are the softmax groups."""
        C = num_classes
        offsets = self.group_offsets
        return ClassifierLayout(
            owner='GroupSoftmaxLoss',
            num_classes=C,
            num_outputs=C + 1 + self.num_groups,
            class_rows=tuple(self.label_channel[:C].tolist()),
            extra_rows=(('others', tuple(offsets[:-1])),
                        ('objectness', (offsets[-1], )),
                        ('background', (int(self.label_channel[C]), ))),
            groups=tuple(
                tuple(range(o, o + n + 1))
                for o, n in zip(offsets, self.group_sizes)),
            scoring='in-group softmax per class * P(objectness) of the '
            'background group; background column its P(background)',
            family=ScoringFamily.GROUP_SOFTMAX)

    def split_groups(self, cls_score: Tensor) -> List[Tensor]:
        """``(N, C + 1 + G)`` -> per group ``(N, 1 + n_g)`` logits."""
        return list(
            cls_score.split([n + 1 for n in self.group_sizes], dim=1))

    def _activation(self, cls_score: Tensor) -> Tensor:
        """``(N, C + 1 + G)`` logits -> ``(N, C + 1)`` probabilities."""
        probs = torch.cat(
            [F.softmax(g, dim=1) for g in self.split_groups(cls_score)],
            dim=1)
        bg_probs = probs[:, self.group_offsets[-1]:]  # [fg, bg]
        scores = probs[:, self.label_channel]
        cls_scores = scores[:, :-1] * bg_probs[:, :1]
        return torch.cat([cls_scores, bg_probs[:, 1:]], dim=1)

    # ------------------------------------------------------------------ loss
    def _loss(self, cls_score: Tensor, labels: Tensor,
              label_weights: Optional[Tensor], avg_factor: Optional[float],
              reduction: str) -> Tensor:
        """``(N, C + 1 + G)`` logits; ``'none'`` gives ``(N,)``;
        ``avg_factor`` is ignored (see the class doc)."""
        num = cls_score.size(0)
        if num == 0:
            return empty_loss(cls_score, reduction, (0, ))

        group_labels = self.label_map[:, labels]  # (G, N)
        if label_weights is None:
            lw = cls_score.new_ones(num)
        else:
            lw = label_weights.to(cls_score.dtype)
        valid = lw > 0
        select = torch.ones_like(group_labels, dtype=torch.bool)
        select[:-1] = sample_others(group_labels[:-1], valid, self.beta)
        sel_w = select.to(cls_score.dtype) * lw[None, :]  # (G, N)
        # per group and proposal cross-entropy, (G, N)
        ce = torch.stack([
            F.cross_entropy(logits, group_labels[g], reduction='none')
            for g, logits in enumerate(self.split_groups(cls_score))
        ])
        raw = ce * sel_w
        if reduction == 'mean':
            count = sel_w.sum(dim=1, keepdim=True).clamp(min=1.0)
            per_proposal = (raw / count).sum(dim=0)
            loss = weight_reduce_loss(per_proposal, reduction='sum')
        else:
            loss = weight_reduce_loss(raw.sum(dim=0), reduction=reduction)
        return loss
