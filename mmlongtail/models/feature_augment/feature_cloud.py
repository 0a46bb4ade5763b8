"""Feature cloud (Liu, Sun, Han, Dou and Li, "Deep Representation Learning
on Long-tailed Data: A Learnable Embedding Augmentation Perspective", CVPR
2020, arXiv:2002.10826)."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmlongtail.datasets.category_stats import StatsSource
from mmlongtail.registry import MODELS
from ._split import tail_mask
from .base import FeatureAugmentation
from .statistics import ClassFeatureStatistics


def rotate_by(feats: Tensor, angles: Tensor, noise: Tensor) -> Tensor:
    """Rotate each feature by an angle, towards a random direction.

    ``f' = |f| (cos(d) f/|f| + sin(d) u)`` with ``u`` the unit component of
    ``noise`` orthogonal to ``f``, so the angle between ``f'`` and ``f`` is
    ``|d|`` (for ``|d| <= pi``) and ``|f'| = |f|``.

    Args:
        feats (Tensor): ``(N, D)``, nonzero rows.
        angles (Tensor): ``(N,)`` radians.
        noise (Tensor): ``(N, D)``, e.g. standard normal draws.

    Returns:
        Tensor: ``(N, D)``.
    """
    norm = feats.norm(dim=1, keepdim=True)
    unit = feats / norm.clamp(min=1e-12)
    fixed = unit.detach()
    ortho = noise - (noise * fixed).sum(1, keepdim=True) * fixed
    ortho = F.normalize(ortho, dim=1)
    a = angles[:, None].to(feats.dtype)
    return norm * (a.cos() * unit + a.sin() * ortho)


@MODELS.register_module()
class FeatureCloud(FeatureAugmentation):
    """Feature cloud for a cosine classifier (Liu et al., CVPR 2020).

    For each class ``c`` a running variance ``s2_c`` of the angle between a
    positive RoI feature and the class's weight vector (its centre in a
    cosine classifier, ``bbox_head.fc_cls``, a ``NormedLinear``) is kept
    (:class:`ClassFeatureStatistics` with ``D = 1``). The head classes'
    intra-class angular variance ``sigma_h^2`` is the mean of ``s2_c`` over
    the head classes, ``sigma_t^2`` that over the tail classes (classes with
    at least two angles). Each positive RoI of a tail class then yields
    ``num_virtual`` virtual features, the real one rotated by
    ``d ~ N(0, sigma_h^2 - sigma_t^2)`` towards a random direction
    (:func:`rotate_by`): the tail class gets the head classes' angular
    spread. Virtual features keep the real feature's graph, so the network
    learns from them (the paper's point: a tail sample, made a cloud, pushes
    other classes away). Nothing is generated while the difference is not
    positive.

    The head/tail split is one of the two: ``tail_groups`` (LVIS frequency
    groups, default ``('r', 'c')``) or ``head_min_instances`` (classes with
    fewer training instances are tail).

    Where we differ: the paper learns from person re-identification and
    face recognition batches; here the features are the RoI features of a
    detector's box classifier and the angles are running statistics over
    training (``momentum``), all-reduced across ranks.

    Memory: ``16 C`` bytes of angle statistics (19 KB at ``C = 1203``).

    Args:
        num_classes (int): ``C``.
        feat_dim (int): ``D``.
        category_stats: Training statistics (for the split).
        tail_groups (Sequence[str], optional): See above.
        head_min_instances (int, optional): See above.
        num_virtual (int): Virtual features per tail RoI. Defaults to 1.
        momentum (float, optional): Of the angle statistics; None: all
            angles seen so far. Defaults to 0.1.
        loss_weight (float): Defaults to 1.0.
        start_epoch (int): Defaults to 0.
        seed (int): Generator seed.
        use_distributed (bool): All-reduce the statistics.
    """

    requires_cosine_classifier = True
    #: Each virtual feature weighs one RoI of ``loss_cls`` (the loss is
    #: divided by the step's RoI count), as the paper's cloud samples join
    #: the batch's loss beside the real ones.
    average_over_rois = True

    def __init__(self,
                 num_classes: int,
                 feat_dim: int,
                 category_stats: StatsSource,
                 tail_groups: Optional[Sequence[str]] = ('r', 'c'),
                 head_min_instances: Optional[int] = None,
                 num_virtual: int = 1,
                 momentum: Optional[float] = 0.1,
                 loss_weight: float = 1.0,
                 start_epoch: int = 0,
                 seed: int = 0,
                 use_distributed: bool = True) -> None:
        super().__init__(num_classes, feat_dim, loss_weight, start_epoch,
                         seed, use_distributed)
        if head_min_instances is not None and tail_groups == ('r', 'c'):
            tail_groups = None  # the default yields to the count split
        if num_virtual < 1:
            raise ValueError(f'num_virtual must be >= 1, got {num_virtual}')
        self.num_virtual = int(num_virtual)
        self.register_buffer(
            'tail',
            tail_mask(category_stats, num_classes, 'FeatureCloud',
                      tail_groups, head_min_instances),
            persistent=False)
        if bool(self.tail.all()) or not bool(self.tail.any()):
            raise ValueError(
                'FeatureCloud needs both head and tail classes, but the '
                f'split makes {int(self.tail.sum())} of {num_classes} '
                'classes tail')
        self.angles = ClassFeatureStatistics(num_classes, 1, momentum,
                                             use_distributed)

    @staticmethod
    def class_angles(feats: Tensor, labels: Tensor,
                     fc_cls: nn.Module) -> Tensor:
        """``(N,)`` angle (radians) between each feature and the weight row
        of its class."""
        w = fc_cls.weight[labels]
        cos = F.cosine_similarity(feats, w.to(feats.dtype), dim=1)
        return cos.clamp(-1, 1).acos()

    def observe(self, feats: Tensor, labels: Tensor,
                fc_cls: nn.Module) -> None:
        # an all-zero feature (ReLU) has no angle: it is not counted
        keep = feats.norm(dim=1) > 0
        with torch.no_grad():
            self.angles.update(
                self.class_angles(feats[keep], labels[keep], fc_cls)[:, None],
                labels[keep])

    def variance_gap(self) -> Tensor:
        """``sigma_h^2 - sigma_t^2`` (0-dim; may be <= 0, or nan while a
        side has no class with two angles)."""
        var = self.angles.var[:, 0]
        known = self.angles.count >= 2
        head, tail = known & ~self.tail, known & self.tail
        return var[head].mean() - var[tail].mean()

    def generate(self, feats: Tensor, labels: Tensor, fc_cls: nn.Module,
                 generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        gap = float(self.variance_gap())
        chosen = self.tail[labels]
        if not gap > 0 or not bool(chosen.any()):
            return feats[:0], labels[:0]
        real = feats[chosen].repeat(self.num_virtual, 1)
        lab = labels[chosen].repeat(self.num_virtual)
        angle = torch.randn(
            len(lab), generator=generator, device=feats.device) * gap**0.5
        noise = torch.randn(
            real.shape, generator=generator, device=feats.device)
        return rotate_by(real, angle, noise.to(real.dtype)), lab
