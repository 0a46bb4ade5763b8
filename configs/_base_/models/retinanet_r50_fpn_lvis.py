# RetinaNet R50-FPN (Lin et al., 2017) sized for LVIS v1: 1203 sigmoid
# classes scored by mmlongtail.FocalLoss in a dense head (dense_head=True:
# plain sigmoid scores at test time), classifier bias prior 0.001 instead of
# 0.01 (1203 classes; the Equalized Focal Loss configs' init_prior), and
# LVIS's evaluation protocol of up to 300 detections per image at a low
# score threshold (Gupta et al., 2019).
num_classes = 1203

model = dict(
    type='RetinaNet',
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
        # torchvision's ImageNet-1k ResNet-50 (the file torchvision://resnet50
        # names), by its URL so that torchvision need not be installed;
        # torch.hub caches it in ~/.cache/torch/hub/checkpoints/. Offline:
        # --cfg-options model.backbone.init_cfg.checkpoint=/path/to/file.pth
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.pytorch.org/models/resnet50-0676ba61.pth')),
    neck=dict(
        type='FPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        start_level=1,
        add_extra_convs='on_input',
        num_outs=5),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=num_classes,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64, 128]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(
            type='mmlongtail.FocalLoss',
            use_sigmoid=True,
            dense_head=True,
            num_classes=num_classes,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0),
        init_cfg=dict(
            type='Normal',
            layer='Conv2d',
            std=0.01,
            override=dict(
                type='Normal', name='retina_cls', std=0.01,
                bias_prob=0.001))),
    train_cfg=dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=0.5,
            neg_iou_thr=0.4,
            min_pos_iou=0,
            ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    # per level: the 6000 best (anchor, class) pairs, as the EFL configs
    test_cfg=dict(
        nms_pre=6000,
        min_bbox_size=0,
        score_thr=1e-4,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=300))
