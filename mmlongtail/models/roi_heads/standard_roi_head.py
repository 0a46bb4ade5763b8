"""mmdet's ``StandardRoIHead`` with box prediction through
:mod:`mmlongtail.models.roi_heads.bbox_predict` (test-time scorers)."""
from typing import List, Tuple

from mmdet.models.roi_heads import StandardRoIHead as MMDetStandardRoIHead
from mmdet.models.utils import empty_instances
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import ConfigType, InstanceList
from torch import Tensor

from mmlongtail.models.mask_heads import GatheredMaskStandardMixin
from mmlongtail.registry import MODELS
from .bbox_predict import predict_by_feat
from .scoring import ScorersFromTestCfg


@MODELS.register_module()
class StandardRoIHead(GatheredMaskStandardMixin, ScorersFromTestCfg,
                      MMDetStandardRoIHead):
    """``StandardRoIHead`` whose box predictions go through
    :func:`~mmlongtail.models.roi_heads.bbox_predict.predict_by_feat`, so the
    test-time scorers of ``test_cfg.rcnn.score_calibration`` rescore them.
    Training, and prediction without scorers, are mmdet's, bit for bit.

    A ``mmlongtail.LabelGatheredFCNMaskHead`` gets each RoI's label (ground
    truth in training, predicted at test time) and computes only that
    channel; other mask heads are untouched.

    Use: ``model.roi_head.type='mmlongtail.StandardRoIHead'`` (any
    ``BBoxHead`` subclass as ``bbox_head``).
    """

    def predict_bbox(self,
                     x: Tuple[Tensor],
                     batch_img_metas: List[dict],
                     rpn_results_list: InstanceList,
                     rcnn_test_cfg: ConfigType,
                     rescale: bool = False) -> InstanceList:
        """Detections of each image (see mmdet's ``predict_bbox``)."""
        proposals = [res.bboxes for res in rpn_results_list]
        rois = bbox2roi(proposals)
        if rois.shape[0] == 0:
            return empty_instances(
                batch_img_metas,
                rois.device,
                task_type='bbox',
                box_type=self.bbox_head.predict_box_type,
                num_classes=self.bbox_head.num_classes,
                score_per_cls=rcnn_test_cfg is None)
        results = self._bbox_forward(x, rois)
        sizes = tuple(len(p) for p in proposals)
        bbox_preds = results['bbox_pred']
        if bbox_preds is None:
            bbox_preds = (None, ) * len(proposals)
        elif isinstance(bbox_preds, Tensor):
            bbox_preds = bbox_preds.split(sizes, 0)
        else:  # e.g. SABL's tuple predictions
            bbox_preds = self.bbox_head.bbox_pred_split(bbox_preds, sizes)
        return predict_by_feat(
            self.bbox_head,
            rois.split(sizes, 0),
            results['cls_score'].split(sizes, 0),
            bbox_preds,
            batch_img_metas,
            rcnn_test_cfg,
            rescale,
            scorers=self.scorers_for(rcnn_test_cfg))
