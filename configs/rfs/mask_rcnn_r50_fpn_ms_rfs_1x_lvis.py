# Repeat-factor sampling alone (Gupta et al., 2019), t = 1e-3, on the plain
# Mask R-CNN R50-FPN baseline, multi-scale 1x.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms_rfs.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
