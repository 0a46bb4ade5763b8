# RetinaNet R50-FPN with sigmoid focal loss (Lin et al., ICCV 2017), LVIS v1,
# 24 epochs, multi-scale 640-800, repeat-factor sampling t = 1e-3: the
# baseline of configs/efl/efl_retinanet_r50_fpn_ms_rfs_2x_lvis.py, trained
# with the same recipe (see that file for how it relates to the official EFL
# numbers).
_base_ = [
    '../_base_/models/retinanet_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_detection_ms_rfs.py',
    '../_base_/schedules/schedule_efl_2x.py', '../_base_/default_runtime.py'
]

# The official EFL schedule at mmdet's RetinaNet LR, 0.01 for 16 images (the
# official 0.02 is for its GN head, see the ATSS configs).
optim_wrapper = dict(optimizer=dict(lr=0.01))
