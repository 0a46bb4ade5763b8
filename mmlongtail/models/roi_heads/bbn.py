"""BBN's cumulative learning, adapted to the RoI box head.

Zhou et al., "BBN: Bilateral-Branch Network with Cumulative Learning
Strategy for Long-Tailed Visual Recognition", CVPR 2020; official code
https://github.com/megvii-research/BBN (``lib/core/combiner.py``,
``lib/net/network.py``, ``lib/backbone/resnet.py``).

**The reference.** A shared backbone with one last residual block per
branch. The conventional branch sees image ``a`` from the uniform sampler,
the re-balancing branch image ``b`` from the reversed sampler. One linear
classifier ``W = [W_c, W_r]``, bias ``b``, reads the weighted concatenation

    z = W · 2[α f_c(a); (1 - α) f_r(b)] + b
      = 2α W_c f_c(a) + 2(1 - α) W_r f_r(b) + b,

the loss is ``α CE(z, y_a) + (1 - α) CE(z, y_b)`` and the cumulative
learning ``α = 1 - ((epoch - 1) / T)^2`` (``epoch`` from 1, ``T`` the number
of epochs; the official code uses ``T = 100, 200`` for 90, 180 epochs). At
test both branches read the same image and the classifier reads
``[f_c; f_r]``, i.e. the rule above with ``α = 1/2``.

**Here.** Backbone, neck, RPN, RoI extractor and mask head are shared by both
streams. The box head has two stacks of shared FCs (``shared_fcs``: the
conventional branch; ``rb_shared_fcs``: the re-balancing branch) and one
classifier ``fc_cls`` over their concatenation, as the reference. The RoIs
of conventional-stream images go through the conventional branch, those of
re-balancing-stream images through the re-balancing branch:

    z_c = W · 2[f_c; 0] + b,   z_r = W · 2[0; f_r] + b,
    L_cls = α CE(z_c, y_c) + (1 - α) CE(z_r, y_r),

each CE averaged over its own stream's RoIs (mmdet's ``avg_factor``). At
test ``z = W · 2[w_c f_c; w_r f_r] + b`` on every RoI, ``(w_c, w_r) = (1/2,
1/2)`` by default: exactly the reference's test rule.

**Where this differs from the official code, and why.** The reference pairs
sample ``a`` with sample ``b`` and gives the *one* mixed logit both labels.
Detection RoIs have no such pairing (images hold different numbers of RoIs,
each with its own label), so each stream's RoIs are classified by their own
branch alone. At ``α = 1`` and ``α = 0`` this *is* the reference's loss (the
other branch's term is multiplied by zero); in between the reference's
mixed-logit cross terms are absent. Box regression (``fc_reg``) reads the
conventional branch and is trained on the conventional stream only, with
weight 1 (not α): boxes need no re-balancing, the conventional branch is the
one trained on the natural distribution, and routing re-balancing RoIs
through it would feed that branch the reversed data BBN keeps away from it;
an α-weighted regression would also fade out as α goes to 0.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.structures.bbox import bbox2roi
from torch import Tensor

from mmlongtail.datasets.bbn_streams import (CONVENTIONAL, REBALANCING,
                                             STREAM_KEY)
from mmlongtail.registry import MODELS
from .standard_roi_head import StandardRoIHead


def cumulative_alpha(t: float, total: float) -> float:
    """BBN's cumulative-learning weight ``α(t) = 1 - (t / T)^2``.

    ``t`` counts from 0: the official ``1 - ((epoch - 1) / T)^2`` with its
    1-based epoch is ``t = runner.epoch`` of mmengine (0-based).

    Args:
        t (float): Progress, in ``[0, T]``.
        total (float): ``T > 0``.

    Returns:
        float: ``α`` in ``[0, 1]``.

    Raises:
        ValueError: ``T <= 0`` or ``t`` outside ``[0, T]``.
    """
    if not total > 0:
        raise ValueError(f'BBN cumulative learning needs T > 0, got {total}')
    if not 0 <= t <= total:
        raise ValueError(f'BBN cumulative learning: progress t={t} is outside'
                         f' [0, T={total}]')
    return 1.0 - (float(t) / float(total))**2


def cumulative_mix(conventional: Dict[str, Tensor],
                   rebalancing: Dict[str, Tensor],
                   alpha: float) -> Dict[str, Tensor]:
    """Mix the two branches' box-head losses.

    Every ``loss_*`` key the two dicts share (the classification losses:
    ``loss_cls`` or a loss's ``loss_cls_*`` parts) becomes
    ``α · conventional + (1 - α) · rebalancing``; the conventional branch's
    other entries (``loss_bbox``, ``acc``) are kept; the re-balancing
    branch's ``acc*`` entries come back with a ``_rb`` suffix.

    Args:
        conventional (dict): Losses of the conventional stream's RoIs.
        rebalancing (dict): Losses of the re-balancing stream's RoIs.
        alpha (float): ``α`` in ``[0, 1]``.

    Returns:
        dict: The mixed losses.
    """
    out = dict(conventional)
    for key, value in rebalancing.items():
        if key.startswith('loss') and key in conventional:
            out[key] = alpha * conventional[key] + (1.0 - alpha) * value
        elif key.startswith('acc'):
            out[f'{key}_rb'] = value
    return out


@MODELS.register_module()
class BBNBBoxHead(Shared2FCBBoxHead):
    """Two-branch box head of BBN (see the module docstring).

    ``shared_fcs`` (mmdet's name, so a Shared2FC checkpoint loads into it) is
    the conventional branch, ``rb_shared_fcs`` the re-balancing branch, with
    the same architecture; ``fc_cls`` reads ``2 · fc_out_channels`` features
    (both branches concatenated), ``fc_reg`` the conventional branch's.

    Args:
        test_weights (Sequence[float]): ``(w_c, w_r)`` of the test rule
            ``z = fc_cls(2[w_c f_c; w_r f_r])``. Defaults to ``(0.5, 0.5)``,
            the reference's.
        *args, **kwargs: ``Shared2FCBBoxHead``'s.
    """

    def __init__(self,
                 *args,
                 test_weights: Sequence[float] = (0.5, 0.5),
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if len(test_weights) != 2 or any(
                not 0 <= float(w) <= 1 for w in test_weights):
            raise ValueError('BBNBBoxHead: test_weights must be two numbers '
                             f'in [0, 1] (w_c, w_r), got {test_weights!r}')
        self.test_weights = tuple(float(w) for w in test_weights)
        if not self.with_cls:
            raise ValueError('BBNBBoxHead needs a classifier (with_cls=True)')
        _, self.rb_shared_fcs, _ = self._add_conv_fc_branch(
            0, self.num_shared_fcs, self.in_channels, True)
        cls_cfg = self.cls_predictor_cfg.copy()
        cls_cfg.update(in_features=2 * self.cls_last_dim,
                       out_features=self.fc_cls.out_features)
        self.fc_cls = MODELS.build(cls_cfg)
        if kwargs.get('init_cfg') is None:
            self.init_cfg += [
                dict(
                    type='Xavier',
                    distribution='uniform',
                    override=dict(name='rb_shared_fcs'))
            ]

    def branch_features(self, x: Tensor, rebalancing: bool) -> Tensor:
        """``(n, fc_out_channels)`` features of one branch.

        Args:
            x (Tensor): ``(n, C, h, w)`` RoI features.
            rebalancing (bool): The re-balancing branch (else conventional).
        """
        if self.with_avg_pool:
            x = self.avg_pool(x)
        x = x.flatten(1)
        for fc in (self.rb_shared_fcs if rebalancing else self.shared_fcs):
            x = self.relu(fc(x))
        return x

    def mixed_logits(self, f_c: Tensor, f_r: Tensor, w_c: float,
                     w_r: float) -> Tensor:
        """``fc_cls(2[w_c f_c; w_r f_r])``, ``(n, cls_channels)``."""
        return self.fc_cls(2.0 * torch.cat([w_c * f_c, w_r * f_r], dim=1))

    def forward(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """The test rule on every RoI: both branches, mixed with
        ``test_weights``; boxes from the conventional branch.

        Args:
            x (Tensor): ``(n, C, h, w)`` RoI features.

        Returns:
            tuple: ``cls_score (n, cls_channels)``, ``bbox_pred (n, 4)`` or
            ``(n, 4C)`` (None without regression).
        """
        f_c = self.branch_features(x, False)
        f_r = self.branch_features(x, True)
        cls_score = self.mixed_logits(f_c, f_r, *self.test_weights)
        bbox_pred = self.fc_reg(f_c) if self.with_reg else None
        return cls_score, bbox_pred

    def forward_streams(self, x_c: Tensor, x_r: Tensor
                        ) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        """Training: each stream's RoIs through their own branch.

        Args:
            x_c (Tensor): ``(n_c, C, h, w)`` conventional-stream RoIs.
            x_r (Tensor): ``(n_r, C, h, w)`` re-balancing-stream RoIs.

        Returns:
            tuple: ``z_c = fc_cls(2[f_c; 0])`` ``(n_c, O)``, the
            conventional ``bbox_pred`` (None without regression) and
            ``z_r = fc_cls(2[0; f_r])`` ``(n_r, O)``.
        """
        f_c = self.branch_features(x_c, False)
        f_r = self.branch_features(x_r, True)
        z_c = self.mixed_logits(f_c, torch.zeros_like(f_c), 1.0, 0.0)
        z_r = self.mixed_logits(torch.zeros_like(f_r), f_r, 0.0, 1.0)
        bbox_pred = self.fc_reg(f_c) if self.with_reg else None
        return z_c, bbox_pred, z_r


@MODELS.register_module()
class BBNRoIHead(StandardRoIHead):
    """RoI head that trains a :class:`BBNBBoxHead` on BBN's two streams.

    Each training image carries ``metainfo['bbn_stream']`` (from
    :class:`~mmlongtail.datasets.BBNStreamDataset`); its RoIs train the
    branch of its stream, and the classification losses are mixed with
    ``α`` (:func:`cumulative_mix`), which
    :class:`~mmlongtail.engine.BBNCumulativeLearningHook` sets from the
    runner's progress before every iteration. RPN and mask losses take
    every image of both streams (they are shared, like BBN's backbone).
    Prediction is :class:`~mmlongtail.models.roi_heads.StandardRoIHead`'s
    with the head's test rule.

    Use: ``model.roi_head.type='mmlongtail.BBNRoIHead'`` with
    ``bbox_head.type='mmlongtail.BBNBBoxHead'``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.bbox_head, BBNBBoxHead):
            raise TypeError('BBNRoIHead needs bbox_head of type '
                            "'mmlongtail.BBNBBoxHead', got "
                            f'{type(self.bbox_head).__name__}')
        #: α of the current iteration, set by BBNCumulativeLearningHook.
        self.bbn_alpha: Optional[float] = None

    def set_alpha(self, alpha: float) -> None:
        """Set ``α`` in ``[0, 1]`` for the next training iterations."""
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f'BBN alpha must be in [0, 1], got {alpha}')
        self.bbn_alpha = float(alpha)

    @staticmethod
    def batch_streams(batch_data_samples: List) -> List[int]:
        """The stream of each image of a training batch.

        Raises:
            ValueError: An image has no stream tag, or the batch lacks a
                stream.
        """
        streams = [s.metainfo.get(STREAM_KEY) for s in batch_data_samples]
        if any(s not in (CONVENTIONAL, REBALANCING) for s in streams):
            raise ValueError(
                'BBNRoIHead: training images need metainfo '
                f"'{STREAM_KEY}' (0 or 1), got {streams}; wrap the training "
                "dataset in 'mmlongtail.BBNStreamDataset' and sample it "
                "with 'mmlongtail.BBNPairSampler'")
        counts = [streams.count(CONVENTIONAL), streams.count(REBALANCING)]
        if 0 in counts:
            raise ValueError(
                f'BBNRoIHead: a training batch holds {counts[0]} '
                f'conventional and {counts[1]} re-balancing images; each '
                'batch needs both streams (BBNPairSampler with an even '
                'batch_size and batch_sampler=None)')
        return streams

    def loss(self, x: Tuple[Tensor], rpn_results_list: List,
             batch_data_samples: List) -> dict:
        """mmdet's ``loss`` with the box head trained per stream."""
        streams = self.batch_streams(batch_data_samples)
        if self.bbn_alpha is None:
            raise RuntimeError(
                'BBNRoIHead: alpha is unset; add '
                "dict(type='mmlongtail.BBNCumulativeLearningHook') to "
                'custom_hooks (it sets alpha from the runner\'s progress)')
        self.__dict__['_bbn_streams'] = streams
        try:
            return super().loss(x, rpn_results_list, batch_data_samples)
        finally:
            self.__dict__['_bbn_streams'] = None

    def bbox_loss(self, x: Tuple[Tensor], sampling_results: List) -> dict:
        """Each stream's RoIs through their branch, the classification
        losses mixed by ``α`` (module docstring)."""
        streams = self.__dict__.get('_bbn_streams')
        if streams is None:
            raise RuntimeError('BBNRoIHead.bbox_loss is called from loss()')
        rois = bbox2roi([res.priors for res in sampling_results])
        bbox_feats = self.bbox_roi_extractor(
            x[:self.bbox_roi_extractor.num_inputs], rois)
        if self.with_shared_head:
            bbox_feats = self.shared_head(bbox_feats)
        tag = torch.as_tensor(streams, device=rois.device)
        is_rb = tag[rois[:, 0].long()] == REBALANCING
        z_c, bbox_pred, z_r = self.bbox_head.forward_streams(
            bbox_feats[~is_rb], bbox_feats[is_rb])
        picked = [[r for r, s in zip(sampling_results, streams) if s == k]
                  for k in (CONVENTIONAL, REBALANCING)]
        loss_c = self.bbox_head.loss_and_target(
            z_c, bbox_pred, rois[~is_rb], picked[0],
            self.train_cfg)['loss_bbox']
        loss_r = self.bbox_head.loss_and_target(
            z_r, None, rois[is_rb], picked[1], self.train_cfg)['loss_bbox']
        return dict(
            bbox_feats=bbox_feats,
            loss_bbox=cumulative_mix(loss_c, loss_r, self.bbn_alpha))
