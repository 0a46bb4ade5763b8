# mmdet 3.3's DINO schedule (dino-4scale_r50_8xb2-12e_coco.py): 12 epochs,
# AdamW lr 1e-4 for 16 images (8 GPUs x 2), weight decay 1e-4, backbone at
# 0.1x the LR, gradient norm clipped at 0.1, no warm-up, LR x0.1 after
# epoch 11. Validation once, at the end (set train_cfg.val_interval to see
# the curve).
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=12)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=12,
        by_epoch=True,
        milestones=[11],
        gamma=0.1)
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))

# The LR above is for 8 GPUs x 2 images; --auto-scale-lr rescales it.
auto_scale_lr = dict(enable=False, base_batch_size=16)
