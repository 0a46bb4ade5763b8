# Deformable DETR (Zhu et al., ICLR 2021), ResNet-50, iterative box
# refinement and two-stage, sized for LVIS v1: mmdet 3.3's
# deformable_detr/deformable-detr-refine-twostage_r50_16xb2-50e_coco.py
# model with 1203 classes, mmlongtail's query head and classification match
# cost, and LVIS's protocol of up to 300 detections per image.
#
# Against mmdet's file, only these change (the rest are its values):
# - bbox_head.type: mmlongtail.LongTailDeformableDETRHead (test-time scores
#   from loss_cls.class_probabilities; score_calibration / topk_per_class
#   test keys); training is mmdet's.
# - num_classes 1203; loss_cls mmlongtail.FocalLoss with mmdet's values
#   (loss weight 2); method configs replace it.
# - the matcher's class cost: mmlongtail.LossActivationCost (float32, the
#   loss's own probabilities) in place of FocalLossCost.
# - test_cfg.max_per_img 300 instead of 100.
#
# Two-stage: mmdet's DeformableDETRHead trains the encoder's proposal
# classifier (a branch of its own, cls_branches[6]) with every object
# relabelled as class 0, an objectness score read from channel 0, and
# passes it through the same loss_cls as the decoder layers.
num_classes = 1203

model = dict(
    type='DeformableDETR',
    num_queries=300,
    num_feature_levels=4,
    with_box_refine=True,
    as_two_stage=True,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        # torchvision's ImageNet-1k ResNet-50 by URL, as the other LVIS
        # configs. Offline:
        # --cfg-options model.backbone.init_cfg.checkpoint=/path/to/file.pth
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.pytorch.org/models/resnet50-0676ba61.pth')),
    neck=dict(
        type='ChannelMapper',
        in_channels=[512, 1024, 2048],
        kernel_size=1,
        out_channels=256,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=4),
    encoder=dict(
        num_layers=6,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=256, batch_first=True),
            ffn_cfg=dict(
                embed_dims=256, feedforward_channels=1024, ffn_drop=0.1))),
    decoder=dict(
        num_layers=6,
        return_intermediate=True,
        layer_cfg=dict(
            self_attn_cfg=dict(
                embed_dims=256, num_heads=8, dropout=0.1, batch_first=True),
            cross_attn_cfg=dict(embed_dims=256, batch_first=True),
            ffn_cfg=dict(
                embed_dims=256, feedforward_channels=1024, ffn_drop=0.1)),
        post_norm_cfg=None),
    positional_encoding=dict(num_feats=128, normalize=True, offset=-0.5),
    bbox_head=dict(
        type='mmlongtail.LongTailDeformableDETRHead',
        num_classes=num_classes,
        sync_cls_avg_factor=True,
        loss_cls=dict(
            type='mmlongtail.FocalLoss',
            use_sigmoid=True,
            num_classes=num_classes,
            gamma=2.0,
            alpha=0.25,
            loss_weight=2.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(
        assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='mmlongtail.LossActivationCost', weight=2.0),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0)
            ])),
    test_cfg=dict(max_per_img=300))
