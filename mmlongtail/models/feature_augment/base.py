"""The frame of a RoI-feature augmentation: observe the real positive RoI
features of a step, generate virtual ones, and score them with the bbox
head's own classifier and classification loss.

:class:`~mmlongtail.models.roi_heads.FeatureAugRoIHead` owns one such module
(``roi_head.feature_augment``) and calls :meth:`FeatureAugmentation.loss` in
every training step with the features fed to ``bbox_head.fc_cls``.
"""
from typing import Dict, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from mmlongtail.datasets.category_stats import check_num_classes
from mmlongtail.utils.dist import is_distributed

#: Key of the virtual features' loss in the loss dict.
LOSS_KEY = 'loss_cls_aug'


def is_cosine_classifier(fc_cls: nn.Module) -> bool:
    """Whether ``fc_cls`` is a normalized (cosine) linear classifier:
    mmlongtail's or mmdet's ``NormedLinear``."""
    from mmdet.models.layers import NormedLinear as MMDetNormedLinear

    from mmlongtail.models.layers import NormedLinear
    return isinstance(fc_cls, (NormedLinear, MMDetNormedLinear))


class FeatureAugmentation(nn.Module):
    """Base of the feature generators (FASA, feature cloud, SMOTE).

    Subclasses implement :meth:`observe` (update their statistics with the
    step's real positive features) and :meth:`generate` (virtual features
    and their labels). :meth:`loss` runs both and scores the virtual
    features with ``bbox_head.fc_cls`` and ``bbox_head.loss_cls``, each
    virtual feature weighted ``loss_weight``. The loss is averaged over the
    virtual features (as FASA's official code does) or, with
    ``average_over_rois`` (SMOTE, feature cloud), divided by the step's
    number of sampled RoIs, ``loss_cls``'s own ``avg_factor``: a virtual
    feature then weighs what one real RoI weighs in ``loss_cls``, as an
    over-sampled RoI would. Averaged over the few virtual features of a
    step instead, each weighs ``N / M`` RoIs (``M`` virtual among ``N``
    RoIs, 10-60 on the synthetic benchmark); the features of SMOTE and the
    feature cloud are real RoIs of a few classes, so that loss alone puts a
    gradient of norm about ``|f|`` on ``fc_cls``, and SGD at the detector's
    learning rate overshoots: the virtual features' loss rose from 4 to
    7-9 and box AP fell to 0 (issue 26). Virtual features have
    no box: they never reach box regression. A ``loss_cls`` with running
    statistics of its own (Seesaw's counts, EQLv2's gradient sums) counts
    the virtual features too, as in the official FASA code.

    Randomness: one ``torch.Generator`` on the features' device, seeded per
    step from ``(seed, step, rank)``. ``step`` is a buffer, so a resumed run
    draws exactly what the uninterrupted run would have drawn; ranks draw
    differently.

    Args:
        num_classes (int): ``C``, foreground classes of the bbox head.
        feat_dim (int): ``D``, width of the features fed to ``fc_cls``.
        loss_weight (float): Weight of each virtual feature's loss.
        start_epoch (int): First (0-based) epoch that generates; before it
            only statistics are gathered.
        seed (int): Seed of the generator.
        use_distributed (bool): All-reduce statistics across ranks.
    """

    #: Refused by the RoI head (with a reason) unless ``fc_cls`` is cosine.
    requires_cosine_classifier = False
    #: Divide the virtual features' loss by the number of sampled RoIs
    #: (True) or by the number of virtual features (False); see above.
    average_over_rois = False

    def __init__(self,
                 num_classes: int,
                 feat_dim: int,
                 loss_weight: float = 1.0,
                 start_epoch: int = 0,
                 seed: int = 0,
                 use_distributed: bool = True) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes, type(self).__name__)
        if not isinstance(feat_dim, int) or feat_dim < 1:
            raise ValueError(f'{type(self).__name__} needs a positive '
                             f'feat_dim, got {feat_dim!r}')
        if loss_weight < 0:
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight}')
        if start_epoch < 0:
            raise ValueError(f'start_epoch must be >= 0, got {start_epoch}')
        self.feat_dim = feat_dim
        self.loss_weight = float(loss_weight)
        self.start_epoch = int(start_epoch)
        self.seed = int(seed)
        self.use_distributed = use_distributed
        self.register_buffer('step', torch.zeros((), dtype=torch.int64))

    # -- to implement -----------------------------------------------------
    def observe(self, feats: Tensor, labels: Tensor,
                fc_cls: nn.Module) -> None:
        """Update statistics with the step's real positive features
        ``(N, D)`` and labels ``(N,)``. Called on every rank every step."""

    def generate(self, feats: Tensor, labels: Tensor, fc_cls: nn.Module,
                 generator: torch.Generator) -> Tuple[Tensor, Tensor]:
        """Virtual features ``(M, D)`` and their labels ``(M,)``."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------
    def check_classifier(self, fc_cls: nn.Module) -> Optional[str]:
        """Why ``fc_cls`` cannot be used, or None if it can."""
        if self.requires_cosine_classifier and not is_cosine_classifier(
                fc_cls):
            return (f'{type(self).__name__} needs a cosine classifier (the '
                    'angles it samples are angles between normalized '
                    'features), but bbox_head.fc_cls is '
                    f'{type(fc_cls).__name__}; set the bbox head\'s '
                    "cls_predictor_cfg=dict(type='mmlongtail.NormedLinear', "
                    'temperature=20)')
        return None

    def generator(self, device: torch.device) -> torch.Generator:
        """This step's generator (see the class docstring)."""
        rank = dist.get_rank() if is_distributed() else 0
        g = torch.Generator(device=device)
        g.manual_seed((self.seed * 1_000_003 + int(self.step)) * 4099 + rank)
        return g

    def loss(self,
             feats: Tensor,
             labels: Tensor,
             bbox_head: nn.Module,
             epoch: int = 0) -> Dict[str, Tensor]:
        """Observe the step's positives, generate, and score.

        Args:
            feats (Tensor): ``(N, D)`` features fed to ``bbox_head.fc_cls``
                for the step's sampled RoIs (with their graph).
            labels (Tensor): ``(N,)`` RoI labels, ``C`` for background.
            bbox_head (nn.Module): Its ``fc_cls`` and ``loss_cls`` score the
                virtual features.
            epoch (int): Current 0-based epoch (see ``start_epoch``).

        Returns:
            dict: ``{'loss_cls_aug': Tensor}``, 0 when nothing is generated
            (the key is always there, so every rank logs the same keys).
        """
        C = self.num_classes
        if (labels.numel() and (int(labels.min()) < 0
                                or int(labels.max()) > C)):
            raise ValueError(f'RoI labels must be in [0, {C}] ({C} is '
                             f'background), got min {int(labels.min())} and '
                             f'max {int(labels.max())}')
        pos = labels < C
        fc_cls = bbox_head.fc_cls
        self.observe(feats[pos].detach(), labels[pos], fc_cls)
        g = self.generator(feats.device)
        self.step += 1
        zero = feats.sum() * 0.
        if epoch < self.start_epoch or self.loss_weight == 0:
            return {LOSS_KEY: zero}
        aug_feats, aug_labels = self.generate(feats[pos], labels[pos],
                                              fc_cls, g)
        if len(aug_labels) == 0:
            return {LOSS_KEY: zero}
        score = fc_cls(aug_feats.to(feats.dtype))
        n = len(aug_labels)
        avg = len(labels) if self.average_over_rois else n
        out = bbox_head.loss_cls(
            score,
            aug_labels,
            score.new_full((n, ), self.loss_weight),
            avg_factor=float(avg))
        if isinstance(out, dict):  # losses that return several terms
            out = sum(v for k, v in out.items() if 'loss' in k)
        return {LOSS_KEY: out + zero}
