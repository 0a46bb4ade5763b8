# mmdet 3.3's Deformable DETR schedule (deformable-detr_r50_16xb2-50e_coco.py):
# 50 epochs, AdamW lr 2e-4 for 32 images (16 GPUs x 2), weight decay 1e-4,
# backbone, sampling offsets and reference points at 0.1x the LR, gradient
# norm clipped at 0.1, no warm-up, LR x0.1 after epoch 40. Validation at the
# end.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=50, val_interval=50)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=50,
        by_epoch=True,
        milestones=[40],
        gamma=0.1)
]

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={
            'backbone': dict(lr_mult=0.1),
            'sampling_offsets': dict(lr_mult=0.1),
            'reference_points': dict(lr_mult=0.1)
        }))

# The LR above is for 16 GPUs x 2 images; --auto-scale-lr rescales it.
auto_scale_lr = dict(enable=False, base_batch_size=32)
