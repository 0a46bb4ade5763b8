# The ECM authors' 2x schedule (r50_ecm_2x.py, c101_ecm_2x.py): their 1x
# with 24 epochs and LR steps at 20 and 22 (not mmdet's 16 / 22).
_base_ = './schedule_ecm_1x.py'

train_cfg = dict(max_epochs=24, val_interval=24)
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
