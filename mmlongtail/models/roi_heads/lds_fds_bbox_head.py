"""A Shared2FC box head with LDS loss weights and FDS feature calibration
for its box regression (Yang et al., "Delving into Deep Imbalanced
Regression", ICML 2021)."""
from typing import List, Optional

from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmengine.config import ConfigDict
from torch import Tensor

from mmlongtail.models.layers.imbalanced_regression import \
    LabelDistributionSmoothing
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

    The default bins cover ``[-4, 4)`` in 80 bins of 0.1 (with the standard
    ``target_stds`` (0.1, 0.1, 0.2, 0.2) a positive RoI of IoU >= 0.5 has
    ``|dx|, |dy| <= ~3.3`` and ``|dw|, |dh| <= ~3.5``; larger values go to
    the edge bins) and the official code's Gaussian window of 5 bins,
    sigma 2, with ``'sqrt_inv'`` re-weighting.

    Args:
        lds (dict, optional): Arguments of
            :class:`~mmlongtail.models.layers.LabelDistributionSmoothing`
            (``num_targets`` is 4); None turns LDS off.
        **kwargs: ``Shared2FCBBoxHead`` arguments.

    Raises:
        ValueError: ``lds`` with ``reg_decoded_bbox=True`` (IoU-type losses
            on decoded boxes, whose corners are not the binned deltas and
            which average per-element weights over the four corners).
    """

    def __init__(self, *args, lds: Optional[dict] = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
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

    def loss_and_target(self,
                        cls_score: Tensor,
                        bbox_pred: Tensor,
                        rois: Tensor,
                        sampling_results: List[SamplingResult],
                        rcnn_train_cfg: ConfigDict,
                        concat: bool = True,
                        reduction_override: Optional[str] = None) -> dict:
        """mmdet's ``loss_and_target`` with the LDS weights multiplied into
        ``bbox_weights`` of the positive RoIs.

        Returns:
            dict: ``loss_bbox`` (the losses) and ``bbox_targets`` (labels,
            label weights, targets and the unweighted regression weights,
            as mmdet returns them for Cascade R-CNN).
        """
        if self.lds is None:
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
        if self.training:
            # Counted even when empty so every rank joins the all_reduce.
            weighted[pos] = weighted[pos] * self.lds(bbox_targets[pos])
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
