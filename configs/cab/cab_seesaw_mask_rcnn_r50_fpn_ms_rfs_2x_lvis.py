# CAB (class-agnostic branch, Zhu et al., ECCV 2024) with Seesaw Loss:
# configs/seesaw/seesaw_mask_rcnn_r50_fpn_ms_rfs_2x_lvis.py (C + 2 channels,
# normalized box classifier, RFS 1e-3, multi-scale 2x) plus the blended box
# regressor.
_base_ = [
    '../seesaw/seesaw_mask_rcnn_r50_fpn_ms_rfs_2x_lvis.py',
    '../_base_/models/class_agnostic_branch.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(reg_predictor_cfg={{_base_.cab_reg_predictor}})))
