"""A ``StandardRoIHead`` whose classifier also learns from virtual RoI
features (FASA, feature cloud, SMOTE:
:mod:`mmlongtail.models.feature_augment`)."""
from typing import List, Tuple

import torch
import torch.nn as nn
from mmdet.models.task_modules.samplers import SamplingResult
from torch import Tensor

from mmlongtail.registry import MODELS
from mmlongtail.utils.runtime import training_progress
from .standard_roi_head import StandardRoIHead
from .feature_capture import bbox_loss_with_features


@MODELS.register_module()
class FeatureAugRoIHead(StandardRoIHead):
    """:class:`StandardRoIHead` with a feature augmentation.

    In training, the features that ``bbox_head.fc_cls`` receives (captured
    by a forward pre-hook held only during the call, so any ``ConvFCBBoxHead``
    such as ``Shared2FCBBoxHead`` works unchanged) and the RoI labels go to
    ``feature_augment.loss``, which updates its per-class statistics with the
    positive RoIs and adds ``loss_cls_aug``: the classification loss of
    virtual features. Box regression, masks and prediction are the parent's,
    unchanged: virtual features have no box target.

    The current epoch comes from mmengine's message hub (set by the runner's
    ``RuntimeInfoHook``).

    Example::

        roi_head=dict(
            type='mmlongtail.FeatureAugRoIHead',
            feature_augment=dict(type='mmlongtail.FASA',
                                 category_stats='lvis_v1'),
            bbox_head=dict(type='Shared2FCBBoxHead', ...))

    Args:
        feature_augment (dict): Config of a
            :class:`~mmlongtail.models.feature_augment.FeatureAugmentation`;
            ``num_classes`` and ``feat_dim`` are filled in from the bbox
            head.
        *args, **kwargs: Those of :class:`StandardRoIHead`.
    """

    def __init__(self, *args, feature_augment: dict, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        fc_cls = getattr(self.bbox_head, 'fc_cls', None)
        if not isinstance(fc_cls, nn.Linear):
            raise TypeError(
                'FeatureAugRoIHead needs a bbox head with a linear fc_cls '
                '(e.g. Shared2FCBBoxHead, optionally with a NormedLinear '
                f'cls_predictor_cfg); {type(self.bbox_head).__name__} has '
                f'{type(fc_cls).__name__}')
        self.feature_augment = MODELS.build(
            feature_augment,
            default_args=dict(
                num_classes=self.bbox_head.num_classes,
                feat_dim=fc_cls.in_features))
        reason = self.feature_augment.check_classifier(fc_cls)
        if reason is not None:
            raise ValueError(reason)
        #: Set by FASASamplingHook: in eval mode, accumulate per-class
        #: validation losses instead of training.
        self.collect_val_loss = False

    def check_train_loop(self, loop) -> None:
        """Called by ``LongTailConsistencyHook`` before training: refuse a
        loop that never reaches ``feature_augment.start_epoch`` (0-based),
        which would train without a single virtual feature. mmengine's
        ``IterBasedTrainLoop`` keeps the epoch at 0 (``max_epochs`` 1)."""
        from mmengine.runner import IterBasedTrainLoop
        start = self.feature_augment.start_epoch
        max_epochs = getattr(loop, 'max_epochs', None)
        if max_epochs is None or start < max_epochs:
            return
        aug = type(self.feature_augment).__name__
        if isinstance(loop, IterBasedTrainLoop):
            raise ValueError(
                f'FeatureAugRoIHead: {aug} generates from epoch {start} '
                '(start_epoch, 0-based), but the train loop is an '
                f'IterBasedTrainLoop ({loop.max_iters} iterations), whose '
                'epoch stays 0, so it would never generate; set '
                'feature_augment.start_epoch=0 or train with an '
                'EpochBasedTrainLoop')
        raise ValueError(
            f'FeatureAugRoIHead: {aug} generates from epoch {start} '
            f'(start_epoch, 0-based), but training runs {max_epochs} '
            'epoch(s), so it would never generate; set '
            f'feature_augment.start_epoch < {max_epochs}')

    def bbox_loss(self, x: Tuple[Tensor],
                  sampling_results: List[SamplingResult]) -> dict:
        """mmdet's ``bbox_loss`` plus ``loss_cls_aug`` (see the class)."""
        bbox_results, out, feats = bbox_loss_with_features(
            self, x, sampling_results)
        losses = dict(out['loss_bbox'])
        labels, label_weights = out['bbox_targets'][:2]
        aug = self.feature_augment
        if self.training:
            epoch = training_progress('epoch')[0] or 0
            losses.update(
                aug.loss(feats, labels, self.bbox_head, int(epoch)))
        elif self.collect_val_loss:
            with torch.no_grad():
                per_roi = self.bbox_head.loss_cls(
                    bbox_results['cls_score'],
                    labels,
                    label_weights,
                    reduction_override='none')
                if isinstance(per_roi, dict):
                    per_roi = sum(v for k, v in per_roi.items()
                                  if 'loss' in k)
                if per_roi.dim() > 1:
                    per_roi = per_roi.sum(1)
                aug.accumulate_val_loss(per_roi, labels)
        bbox_results.update(loss_bbox=losses)
        return bbox_results
