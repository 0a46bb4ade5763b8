# CAB (class-agnostic branch, Zhu et al., ECCV 2024) on the RFS baseline:
# configs/rfs/mask_rcnn_r50_fpn_ms_rfs_1x_lvis.py plus the blended box
# regressor. Softmax CE classifier, RFS 1e-3, multi-scale 1x.
_base_ = [
    '../rfs/mask_rcnn_r50_fpn_ms_rfs_1x_lvis.py',
    '../_base_/models/class_agnostic_branch.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(reg_predictor_cfg={{_base_.cab_reg_predictor}})))
