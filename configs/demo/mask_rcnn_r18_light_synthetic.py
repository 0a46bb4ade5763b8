# The CPU baseline: a light Mask R-CNN (ResNet-18 at half width, trained from
# scratch, 64-channel FPN, slim RoI heads) with plain softmax cross-entropy
# and uniform sampling, on the synthetic long-tailed dataset (128 px images).
# The long-tail methods are one-line deltas on this file (see
# seesaw_mask_rcnn_r18_light_rfs_synthetic.py).
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/synthetic_lvis.py',
    '../_base_/default_runtime.py'
]

num_classes = 40  # data/synthetic_lvis as tools/make_synthetic_lvis.py makes it
feat = 64

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        depth=18,
        base_channels=32,
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=feat, num_outs=5),
    rpn_head=dict(
        in_channels=feat,
        feat_channels=feat,
        anchor_generator=dict(scales=[6], strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=feat),
        bbox_head=dict(
            in_channels=feat, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=feat),
        mask_head=dict(
            num_convs=2,
            in_channels=feat,
            conv_out_channels=feat,
            num_classes=num_classes)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=64)),
        rpn_proposal=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(sampler=dict(num=64))),
    # Fixed-AP inference (Dave et al., 2021): no per-image cap, each class
    # keeps its best 300 boxes per image. The metric's standard protocol
    # still keeps each image's best 300 across classes, which are exactly
    # the detections of capped inference, so one pass gives AP and AP^fixed.
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=-1, topk_per_class=300)))

val_evaluator = dict(protocol=['standard', 'fixed'])
test_evaluator = val_evaluator

max_epochs = 5
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[4],
        gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.04, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0, norm_type=2))

# Two cores: data loading in the main process leaves both to the model.
train_dataloader = dict(num_workers=0, persistent_workers=False)
val_dataloader = dict(num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader

default_hooks = dict(
    logger=dict(interval=25),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1),
    visualization=dict(draw=False))
log_processor = dict(window_size=25)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
