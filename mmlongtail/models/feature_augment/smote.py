"""SMOTE-style interpolation of RoI features (after Chawla, Bowyer, Hall
and Kegelmeyer, "SMOTE: Synthetic Minority Over-sampling Technique", JAIR
2002, applied to the features a detector's box classifier sees)."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from mmlongtail.datasets.category_stats import StatsSource
from mmlongtail.registry import MODELS
from ._split import tail_mask
from .base import FeatureAugmentation


@MODELS.register_module()
class SMOTE(FeatureAugmentation):
    """Virtual features on the segments between same-class RoI features.

    In each step, each positive RoI feature ``f_i`` of a tail class with at
    least one other positive RoI of its class on this GPU yields
    ``num_virtual`` features ``f_i + lam (f_j - f_i)``, ``j`` drawn
    uniformly among the other RoIs of the class and ``lam ~ U(0, 1)``.

    An interpolated feature has no box target: it feeds the classifier
    (``fc_cls`` and ``loss_cls``) alone and never reaches box regression
    (nor the mask head). It keeps the real features' graph.

    SMOTE interpolates between a sample and one of its k nearest
    neighbours in the same class; within a step's RoIs of a class (mostly
    RoIs of the same few objects) every other RoI is taken as a neighbour.
    No statistics are kept: nothing is communicated across ranks.

    The tail classes: ``tail_groups`` (LVIS frequency groups, default
    ``('r', 'c')``), or ``head_min_instances`` (classes with fewer training
    instances), or every class when ``category_stats`` is None.

    Args:
        num_classes (int): ``C``.
        feat_dim (int): ``D``.
        category_stats: Training statistics (for the split), or None.
        tail_groups (Sequence[str], optional): See above.
        head_min_instances (int, optional): See above.
        num_virtual (int): Interpolants per tail RoI. Defaults to 1.
        loss_weight (float): Defaults to 1.0.
        start_epoch (int): Defaults to 0.
        seed (int): Generator seed.
        use_distributed (bool): Unused (SMOTE keeps no statistics); kept
            for the common signature.
    """

    #: Interpolants are over-sampled RoIs: each weighs one RoI of
    #: ``loss_cls`` (the loss is divided by the step's RoI count).
    average_over_rois = True

    def __init__(self,
                 num_classes: int,
                 feat_dim: int,
                 category_stats: Optional[StatsSource] = None,
                 tail_groups: Optional[Sequence[str]] = ('r', 'c'),
                 head_min_instances: Optional[int] = None,
                 num_virtual: int = 1,
                 loss_weight: float = 1.0,
                 start_epoch: int = 0,
                 seed: int = 0,
                 use_distributed: bool = True) -> None:
        super().__init__(num_classes, feat_dim, loss_weight, start_epoch,
                         seed, use_distributed)
        if num_virtual < 1:
            raise ValueError(f'num_virtual must be >= 1, got {num_virtual}')
        self.num_virtual = int(num_virtual)
        if category_stats is None:
            tail = torch.ones(num_classes, dtype=torch.bool)
        else:
            if head_min_instances is not None and tail_groups == ('r', 'c'):
                tail_groups = None
            tail = tail_mask(category_stats, num_classes, 'SMOTE',
                             tail_groups, head_min_instances)
        self.register_buffer('tail', tail, persistent=False)

    def interpolate(self, feats: Tensor, labels: Tensor,
                    generator: torch.Generator
                    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Interpolants with their ends.

        Returns:
            tuple: ``(M, D)`` features, ``(M,)`` labels, ``(M,)`` indices
            ``i`` and ``j`` into ``feats`` and ``(M,)`` weights ``lam``.
        """
        dev = feats.device
        count = torch.bincount(labels, minlength=self.num_classes)
        ok = self.tail[labels] & (count[labels] >= 2)
        idx = ok.nonzero().flatten()
        if len(idx) == 0:
            empty = idx.new_zeros(0)
            return feats[:0], labels[:0], empty, empty, feats.new_zeros(0)
        lab = labels[idx]
        order = torch.argsort(lab, stable=True)
        idx, lab = idx[order], lab[order]  # grouped by class
        # every RoI of a kept class is kept, so a group has count[c] RoIs
        size = count[lab]
        first = torch.ones_like(lab, dtype=torch.bool)
        first[1:] = lab[1:] != lab[:-1]
        group_start = torch.cummax(
            torch.where(first, torch.arange(len(lab), device=dev),
                        torch.zeros_like(lab)), 0).values
        rank_in = torch.arange(len(lab), device=dev) - group_start
        i = idx.repeat(self.num_virtual)
        rank_in = rank_in.repeat(self.num_virtual)
        size = size.repeat(self.num_virtual)
        group_start = group_start.repeat(self.num_virtual)
        lab = lab.repeat(self.num_virtual)
        u = torch.rand(len(i), generator=generator, device=dev)
        step = 1 + (u * (size - 1)).long().clamp(max=size - 2)
        j = idx[group_start + (rank_in + step) % size]
        lam = torch.rand(len(i), generator=generator, device=dev)
        out = feats[i] + lam[:, None].to(feats.dtype) * (feats[j] - feats[i])
        return out, lab, i, j, lam

    def generate(self, feats: Tensor, labels: Tensor, fc_cls: nn.Module,
                 generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        return self.interpolate(feats, labels, generator)[:2]
