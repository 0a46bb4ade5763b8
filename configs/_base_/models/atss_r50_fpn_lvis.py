# ATSS R50-FPN (Zhang et al., CVPR 2020) sized for LVIS v1, set up as close
# to the Equalized Focal Loss "improved baseline" as mmdet's ATSSHead allows:
# GN head, two square anchors per position (scales 6 and 8, as the official
# configs) with the ATSS top-k doubled to 18 to keep 9 positions per level,
# classifier bias prior 0.001, GIoU box loss, and LVIS's evaluation protocol
# (300 detections per image, low score threshold). It keeps mmdet's
# centerness branch where the official head has an IoU branch (see the EFL
# configs' header). mmlongtail.FocalLoss scores it (dense_head=True).
num_classes = 1203

model = dict(
    type='ATSS',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(
        type='FPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        start_level=1,
        add_extra_convs='on_output',
        num_outs=5),
    bbox_head=dict(
        type='ATSSHead',
        num_classes=num_classes,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
        anchor_generator=dict(
            type='AnchorGenerator',
            ratios=[1.0],
            scales=[6, 8],
            strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(
            type='mmlongtail.FocalLoss',
            use_sigmoid=True,
            dense_head=True,
            num_classes=num_classes,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_centerness=dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        init_cfg=dict(
            type='Normal',
            layer='Conv2d',
            std=0.01,
            override=dict(
                type='Normal', name='atss_cls', std=0.01, bias_prob=0.001))),
    train_cfg=dict(
        assigner=dict(type='ATSSAssigner', topk=18),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=6000,
        min_bbox_size=0,
        score_thr=1e-4,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=300))
