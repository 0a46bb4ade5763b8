# The ECM authors' 1x schedule (janghyuncho/ECM-Loss, r50_ecm_1x.py): mmdet's
# 1x with a 10000-iteration linear warm-up from 1e-4 and the gradient norm
# clipped at 5 (detectron2's default, as their config notes).
_base_ = './schedule_1x.py'

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
        end=12,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
optim_wrapper = dict(clip_grad=dict(max_norm=5, norm_type=2))
