# CAB (class-agnostic branch, Zhu et al., ECCV 2024) with the ECM loss:
# configs/ecm/ecm_mask_rcnn_r50_fpn_normed_mask_ms_rfs_1x_lvis.py (C + 1
# sigmoid outputs, normalized classifier, Norm Mask, RFS 1e-3, multi-scale,
# ECM's 1x schedule) plus the blended box regressor.
_base_ = [
    '../ecm/ecm_mask_rcnn_r50_fpn_normed_mask_ms_rfs_1x_lvis.py',
    '../_base_/models/class_agnostic_branch.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(reg_predictor_cfg={{_base_.cab_reg_predictor}})))
