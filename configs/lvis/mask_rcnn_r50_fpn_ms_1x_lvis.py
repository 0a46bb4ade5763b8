# The plain baseline: Mask R-CNN R50-FPN, softmax cross-entropy, uniform
# sampling, multi-scale 1x on LVIS v1 (16.1 mask AP / 0.0 AP_r in the EQLv2
# repository's table). Also the stage-1 model of the decoupled BAGS config.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
