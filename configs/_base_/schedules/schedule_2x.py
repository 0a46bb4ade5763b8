# 24 epochs, LR steps at 16 and 22.
_base_ = './schedule_1x.py'

train_cfg = dict(max_epochs=24, val_interval=24)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=24,
        by_epoch=True,
        milestones=[16, 22],
        gamma=0.1)
]
