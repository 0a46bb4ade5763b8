# ATSS R50-FPN (GN head, 2 anchors) with sigmoid focal loss, LVIS v1, 24
# epochs, multi-scale 640-800, repeat-factor sampling t = 1e-3: the baseline
# of configs/efl/efl_atss_r50_fpn_ms_rfs_2x_lvis.py, trained with the same
# recipe (the official EFL schedule; see that file for how it relates to the
# official EFL numbers).
_base_ = [
    '../_base_/models/atss_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_detection_ms_rfs.py',
    '../_base_/schedules/schedule_efl_2x.py', '../_base_/default_runtime.py'
]
