# RetinaNet R50-FPN with sigmoid focal loss (Lin et al., ICCV 2017), LVIS v1,
# 24 epochs, multi-scale 640-800, repeat-factor sampling t = 1e-3: the
# baseline of efl_retinanet_r50_fpn_ms_rfs_2x_lvis.py, trained with the same
# recipe (see that file for how it relates to the official EFL numbers).
_base_ = [
    './_base_/models/retinanet_r50_fpn_lvis.py',
    './_base_/datasets/lvis_v1_detection_ms_rfs.py',
    './_base_/schedules/schedule_2x.py', './_base_/default_runtime.py'
]

# The official EFL schedule: linear warm-up over the first epoch, steps at
# 16 and 22, gradient norm clipped at 35. LR 0.01 for 16 images is mmdet's
# RetinaNet LR (the official 0.02 is for its GN head, see the ATSS configs).
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.001,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='MultiStepLR',
        begin=0,
        end=24,
        by_epoch=True,
        milestones=[16, 22],
        gamma=0.1)
]
optim_wrapper = dict(
    optimizer=dict(lr=0.01), clip_grad=dict(max_norm=35, norm_type=2))
