# CAB (class-agnostic branch, Zhu et al., ECCV 2024) with EQLv2:
# configs/eqlv2/eqlv2_mask_rcnn_r50_fpn_ms_1x_lvis.py (C + 1 sigmoid
# classifier, multi-scale 1x, no RFS) plus the blended box regressor.
_base_ = [
    '../eqlv2/eqlv2_mask_rcnn_r50_fpn_ms_1x_lvis.py',
    '../_base_/models/class_agnostic_branch.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(reg_predictor_cfg={{_base_.cab_reg_predictor}})))
