"""mmdet's ``CascadeRoIHead`` with box prediction through
:mod:`mmlongtail.models.roi_heads.bbox_predict` (test-time scorers, per
stage where that means something)."""
from typing import List, Optional, Tuple

from mmdet.models.roi_heads import CascadeRoIHead as MMDetCascadeRoIHead
from mmdet.models.utils import empty_instances
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import ConfigType, InstanceList
from torch import Tensor

from mmlongtail.models.mask_heads import GatheredMaskCascadeMixin
from mmlongtail.registry import MODELS
from mmlongtail.models.losses.protocol import head_layout
from .bbox_predict import apply_scorers, classifier_scores, predict_by_feat
from .scoring import ScorersFromTestCfg

#: How a Cascade combines its stages' classifications at test time.
CASCADE_SCORING = ('mean_logits', 'mean_scores')


@MODELS.register_module()
class CascadeRoIHead(GatheredMaskCascadeMixin, ScorersFromTestCfg,
                     MMDetCascadeRoIHead):
    """``CascadeRoIHead`` whose box predictions go through
    :mod:`~mmlongtail.models.roi_heads.bbox_predict`. Training, and
    prediction without scorers, are mmdet's, bit for bit.

    How stages are scored, chosen by ``test_cfg.rcnn.cascade_scoring``:

    * ``'mean_logits'`` (default, mmdet's): the stages' raw logits are
      averaged and scored once by the last stage's loss. Only that one
      scoring exists, so only ``score_calibration`` (applied to it, with the
      last stage's layout) is meaningful.
    * ``'mean_scores'`` (as detectron2's Cascade R-CNN): each stage scores its
      own logits with its own loss, runs its own scorers
      (``stage_score_calibration``: one list per stage, None or ``[]`` for
      none), and the probabilities are averaged; ``score_calibration`` then
      runs on the average (it gets the averaged logits and the last stage's
      layout).

    Boxes are the last stage's in both modes, refined as mmdet does.

    Use: ``model.roi_head.type='mmlongtail.CascadeRoIHead'``.
    """

    def _bbox_forward(self, stage: int, x: Tuple[Tensor],
                      rois: Tensor) -> dict:
        results = super()._bbox_forward(stage, x, rois)
        record: Optional[list] = self.__dict__.get('_stage_logits')
        if record is not None:
            record.append(results['cls_score'])
        return results

    def _stage_scorers(self, rcnn_test_cfg: ConfigType) -> List[list]:
        cfgs = rcnn_test_cfg.get('stage_score_calibration')
        if cfgs is None:
            return [[] for _ in range(self.num_stages)]
        if not isinstance(cfgs, (list, tuple)) or len(cfgs) != \
                self.num_stages:
            raise ValueError(
                'stage_score_calibration must be a list with one list of '
                f'scorer configs per stage ({self.num_stages}), got {cfgs!r}')
        return [self.build_scorers_once(c) for c in cfgs]

    def predict_bbox(self,
                     x: Tuple[Tensor],
                     batch_img_metas: List[dict],
                     rpn_results_list: InstanceList,
                     rcnn_test_cfg: ConfigType,
                     rescale: bool = False,
                     **kwargs) -> InstanceList:
        """Detections of each image (see the class docstring)."""
        mode = 'mean_logits' if rcnn_test_cfg is None else \
            rcnn_test_cfg.get('cascade_scoring', 'mean_logits')
        if mode not in CASCADE_SCORING:
            raise ValueError(f'cascade_scoring must be one of '
                             f'{CASCADE_SCORING}, got {mode!r}')
        if (mode == 'mean_logits' and rcnn_test_cfg is not None
                and rcnn_test_cfg.get('stage_score_calibration')):
            raise ValueError(
                "stage_score_calibration needs cascade_scoring='mean_scores':"
                ' with mmdet\'s mean_logits the stages are never scored one '
                'by one')
        proposals = [res.bboxes for res in rpn_results_list]
        sizes = tuple(len(p) for p in proposals)
        rois = bbox2roi(proposals)
        last = self.bbox_head[-1]
        if rois.shape[0] == 0:
            return empty_instances(
                batch_img_metas,
                rois.device,
                task_type='bbox',
                box_type=last.predict_box_type,
                num_classes=last.num_classes,
                score_per_cls=rcnn_test_cfg is None)
        record = [] if mode == 'mean_scores' else None
        self.__dict__['_stage_logits'] = record
        try:
            rois, cls_scores, bbox_preds = self._refine_roi(
                x=x,
                rois=rois,
                batch_img_metas=batch_img_metas,
                num_proposals_per_img=sizes,
                **kwargs)
        finally:
            self.__dict__['_stage_logits'] = None
        scores = None
        if mode == 'mean_scores':
            scores = self._mean_stage_scores(record, sizes,
                                             self._stage_scorers(
                                                 rcnn_test_cfg))
        return predict_by_feat(
            last, rois, cls_scores, bbox_preds, batch_img_metas,
            rcnn_test_cfg, rescale,
            scorers=self.scorers_for(rcnn_test_cfg), scores=scores)

    def _mean_stage_scores(self, stage_logits: List[Tensor],
                           sizes: Tuple[int, ...],
                           stage_scorers: List[list]) -> List[Tensor]:
        """Per image, the mean over stages of each stage's scored (and
        rescored) probabilities, ``(N_i, C + 1)``."""
        total = None
        for head, logits, scorers in zip(self.bbox_head, stage_logits,
                                         stage_scorers):
            probs = classifier_scores(head, logits)
            if scorers:
                probs = apply_scorers(scorers, logits, probs,
                                      head_layout(head))
            total = probs if total is None else total + probs
        return list((total / len(stage_logits)).split(sizes, 0))
