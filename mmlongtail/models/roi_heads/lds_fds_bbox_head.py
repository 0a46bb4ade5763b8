"""A Shared2FC box head with LDS loss weights and FDS feature calibration
for its box regression (Yang et al., "Delving into Deep Imbalanced
Regression", ICML 2021)."""
from typing import List, Optional

import torch
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.structures.bbox import bbox_overlaps, get_box_tensor
from mmengine.config import ConfigDict
from torch import Tensor

from mmlongtail.models.layers.imbalanced_regression import (
    FeatureDistributionSmoothing, LabelDistributionSmoothing)
from mmlongtail.registry import MODELS


@MODELS.register_module()
class LDSFDSShared2FCBBoxHead(Shared2FCBBoxHead):
    """mmdet's ``Shared2FCBBoxHead`` with imbalanced-regression remedies on
    its box regression (Yang et al., ICML 2021).

    * ``lds``: Label Distribution Smoothing. The regression targets are the
      encoded deltas ``(dx, dy, dw, dh)`` of the box coder (after its
      ``target_means``/``target_stds``), one histogram per coordinate
      (:class:`~mmlongtail.models.layers.LabelDistributionSmoothing`). Each
      positive RoI's four ``loss_bbox`` elements are multiplied by the
      weights of its four targets, so a rare offset in one coordinate is
      up-weighted in that coordinate only. The classification loss is
      untouched, so any ``loss_cls`` works. Per-coordinate deltas rather than
      the proposal IoU: the loss is per coordinate, and a proposal can be
      far off in one coordinate and typical in the others.

    * ``fds``: Feature Distribution Smoothing
      (:class:`~mmlongtail.models.layers.FeatureDistributionSmoothing`) of
      the features that feed ``fc_reg`` only, binned by the IoU of each
      positive proposal with its ground truth (a scalar per RoI, as FDS
      needs one label per feature row; default 50 bins of 0.01 over
      ``[0.5, 1.0)``, ``rcnn.assigner.pos_iou_thr`` being 0.5). In
      ``Shared2FCBBoxHead`` the classifier and the regressor read the same
      shared-FC output; only the regressor's copy is calibrated: the bins
      are regression targets, defined for positives only, and calibrating
      the classifier's input by a training-only IoU would let the target
      leak into the class scores and differ between training and test.
      In training, :meth:`forward` keeps ``fc_reg``'s input until
      :meth:`loss_and_target` (which drops it), where the positives'
      features are accumulated (uncalibrated) and, from epoch
      ``start_smooth``, calibrated and fed through ``fc_reg`` again for the
      regression loss; gradients reach the shared FCs through the
      calibration (an affine map with constant statistics). At test time
      nothing is calibrated (as the official code). Needs
      ``mmlongtail.FeatureDistributionSmoothingHook`` (epoch ends).

    The default LDS bins cover ``[-4, 4)`` in 80 bins of 0.1 (with the standard
    ``target_stds`` (0.1, 0.1, 0.2, 0.2) a positive RoI of IoU >= 0.5 has
    ``|dx|, |dy| <= ~3.3`` and ``|dw|, |dh| <= ~3.5``; larger values go to
    the edge bins) and the official code's Gaussian window of 5 bins,
    sigma 2, with ``'sqrt_inv'`` re-weighting.

    Args:
        lds (dict, optional): Arguments of
            :class:`~mmlongtail.models.layers.LabelDistributionSmoothing`
            (``num_targets`` is 4); None turns LDS off.
        fds (dict, optional): Arguments of
            :class:`~mmlongtail.models.layers.FeatureDistributionSmoothing`
            but ``feature_dim`` (``fc_reg``'s input width); None turns FDS
            off.
        **kwargs: ``Shared2FCBBoxHead`` arguments.

    Raises:
        ValueError: ``lds`` with ``reg_decoded_bbox=True`` (IoU-type losses
            on decoded boxes, whose corners are not the binned deltas and
            which average per-element weights over the four corners).
    """

    def __init__(self,
                 *args,
                 lds: Optional[dict] = None,
                 fds: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fds: Optional[FeatureDistributionSmoothing] = None
        self._reg_input: Optional[Tensor] = None
        if fds is not None:
            if not self.with_reg or not isinstance(self.fc_reg,
                                                   torch.nn.Linear):
                raise ValueError(
                    'LDSFDSShared2FCBBoxHead: fds calibrates the input of '
                    'a linear fc_reg; this head has '
                    f'{type(getattr(self, "fc_reg", None)).__name__}')
            if 'feature_dim' in fds:
                raise ValueError('LDSFDSShared2FCBBoxHead: fds takes its '
                                 'feature_dim from fc_reg; drop it')
            self.fds = FeatureDistributionSmoothing(
                feature_dim=self.fc_reg.in_features, **fds)
            self.fc_reg.register_forward_pre_hook(self._keep_reg_input)
        self.lds: Optional[LabelDistributionSmoothing] = None
        if lds is not None:
            if self.reg_decoded_bbox:
                raise ValueError(
                    'LDSFDSShared2FCBBoxHead: lds weights the encoded '
                    'regression deltas (dx, dy, dw, dh) per element, but '
                    'reg_decoded_bbox=True makes loss_bbox compare decoded '
                    'boxes (an IoU-type loss), whose elements are not those '
                    'deltas; use a delta loss (L1Loss, SmoothL1Loss) with '
                    'reg_decoded_bbox=False, or drop lds')
            self.lds = LabelDistributionSmoothing(
                **dict(dict(num_targets=4), **lds))
            if self.lds.num_targets != 4:
                raise ValueError('LDSFDSShared2FCBBoxHead: lds.num_targets '
                                 f'must be 4 (dx, dy, dw, dh), got '
                                 f'{self.lds.num_targets}')

    def _keep_reg_input(self, module, args) -> None:
        """``fc_reg``'s forward pre-hook: keep its input in training (and
        drop what a training forward kept at test time)."""
        self._reg_input = args[0] if self.training else None

    def _positive_ious(self, sampling_results: List[SamplingResult]
                       ) -> Tensor:
        """IoU of every positive proposal with its ground truth, in the
        order of the concatenated targets (each image's positives first)."""
        return torch.cat([
            bbox_overlaps(
                get_box_tensor(res.pos_priors),
                get_box_tensor(res.pos_gt_bboxes),
                is_aligned=True) for res in sampling_results
        ])

    def loss_and_target(self,
                        cls_score: Tensor,
                        bbox_pred: Tensor,
                        rois: Tensor,
                        sampling_results: List[SamplingResult],
                        rcnn_train_cfg: ConfigDict,
                        concat: bool = True,
                        reduction_override: Optional[str] = None) -> dict:
        """mmdet's ``loss_and_target`` with the LDS weights multiplied into
        ``bbox_weights`` of the positive RoIs and, with FDS, ``bbox_pred``
        recomputed from the calibrated features of the positives.

        Returns:
            dict: ``loss_bbox`` (the losses) and ``bbox_targets`` (labels,
            label weights, targets and the unweighted regression weights,
            as mmdet returns them for Cascade R-CNN).
        """
        reg_input, self._reg_input = self._reg_input, None
        if self.lds is None and (self.fds is None or not self.training):
            return super().loss_and_target(
                cls_score, bbox_pred, rois, sampling_results,
                rcnn_train_cfg, concat, reduction_override)
        if not concat:
            raise ValueError('LDSFDSShared2FCBBoxHead needs concat=True '
                             'targets (one row per RoI of the batch)')
        targets = self.get_targets(sampling_results, rcnn_train_cfg,
                                   concat=True)
        labels, label_weights, bbox_targets, bbox_weights = targets
        pos = (labels >= 0) & (labels < self.num_classes)
        weighted = bbox_weights.clone()
        # Counted even when empty, so every rank joins the all_reduce.
        if self.training and self.lds is not None:
            weighted[pos] = weighted[pos] * self.lds(bbox_targets[pos])
        if self.training and self.fds is not None:
            if reg_input is None or reg_input.size(0) != bbox_pred.size(0):
                raise RuntimeError(
                    'LDSFDSShared2FCBBoxHead: FDS needs the training forward '
                    'of the same RoIs before loss_and_target (got '
                    f'{None if reg_input is None else reg_input.size(0)} '
                    f'kept feature rows for {bbox_pred.size(0)} RoIs)')
            ious = self._positive_ious(sampling_results).to(reg_input.device)
            if ious.numel() != int(pos.sum()):
                raise RuntimeError(
                    f'LDSFDSShared2FCBBoxHead: {ious.numel()} positive '
                    f'proposals in the sampling results but {int(pos.sum())} '
                    'positive labels')
            self.fds.accumulate(reg_input[pos], ious)
            if self.fds.calibrating:
                calibrated = reg_input.clone()
                calibrated[pos] = self.fds.calibrate(reg_input[pos], ious)
                bbox_pred = self.fc_reg(calibrated)
                self._reg_input = None  # kept again by the call above
        losses = self.loss(
            cls_score,
            bbox_pred,
            rois,
            labels,
            label_weights,
            bbox_targets,
            weighted,
            reduction_override=reduction_override)
        return dict(loss_bbox=losses, bbox_targets=targets)
