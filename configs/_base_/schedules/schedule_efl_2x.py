# The Equalized Focal Loss schedule (official ModelTC/EOD configs): 24
# epochs, SGD LR 0.02 for 16 images, linear warm-up over the first epoch,
# steps at 16 and 22, gradient norm clipped at 35.
_base_ = './schedule_2x.py'

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
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
