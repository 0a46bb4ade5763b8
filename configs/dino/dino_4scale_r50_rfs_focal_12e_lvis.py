# DINO R50 4-scale with sigmoid focal loss, LVIS v1, 12 epochs, DETR-style
# augmentation, repeat-factor sampling t = 1e-3: mmdet's COCO recipe
# (dino-4scale_r50_8xb2-12e_coco.py) moved to LVIS, the loss as mmdet's
# (SimLTD's DINO LVIS configs keep the same focal loss, match cost and RFS).
# The baseline every other config in this folder changes in one place.
_base_ = [
    '../_base_/models/dino_4scale_r50_lvis.py',
    '../_base_/datasets/lvis_v1_detection_detr_aug_rfs.py',
    '../_base_/schedules/schedule_dino_12e.py', '../_base_/default_runtime.py'
]
