# ECM loss on Mask R-CNN R50-FPN, LVIS v1, 2x as in the official
# r50_ecm_2x.py: the 1x recipe with 24 epochs and LR steps at 20 and 22.
# Published: 27.9 box AP / 27.5 mask AP.
_base_ = './ecm_mask_rcnn_r50_fpn_normed_mask_ms_rfs_1x_lvis.py'

train_cfg = dict(max_epochs=24, val_interval=24)
# the scheduler of _base_/schedules/schedule_ecm_2x.py (lists are replaced
# whole, and a config cannot take two bases that both set it)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=False,
        begin=0,
        end=10000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=24,
        by_epoch=True,
        milestones=[20, 22],
        gamma=0.1)
]
