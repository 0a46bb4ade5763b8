# ATSS R50-FPN (GN head, 2 anchors) with sigmoid focal loss, LVIS v1, 24
# epochs, multi-scale 640-800, repeat-factor sampling t = 1e-3: the baseline
# of efl_atss_r50_fpn_ms_rfs_2x_lvis.py, trained with the same recipe (see
# that file for how it relates to the official EFL numbers).
_base_ = [
    './_base_/models/atss_r50_fpn_lvis.py',
    './_base_/datasets/lvis_v1_detection_ms_rfs.py',
    './_base_/schedules/schedule_2x.py', './_base_/default_runtime.py'
]

# The official EFL schedule: LR 0.02 for 16 images, linear warm-up over the
# first epoch, steps at 16 and 22, gradient norm clipped at 35.
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
    optimizer=dict(lr=0.02), clip_grad=dict(max_norm=35, norm_type=2))
