# Seesaw Loss with Norm Mask on Cascade Mask R-CNN R50-FPN, LVIS v1, RFS 1e-3,
# multi-scale 2x. Every cascade stage has its own Seesaw loss (and its own
# class counts). No published R50 number in the mmdetection model zoo.
_base_ = [
    '../_base_/models/cascade_mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms_rfs.py',
    '../_base_/schedules/schedule_2x.py', '../_base_/default_runtime.py'
]

num_classes = 1203
# One stage's box head, defined once; the three stages differ only in their
# regression stds. (Config inheritance replaces lists, so the stage list is
# rebuilt here from this dict.)
stage_bbox_head = dict(
    type='Shared2FCBBoxHead',
    in_channels=256,
    fc_out_channels=1024,
    roi_feat_size=7,
    num_classes=num_classes,
    bbox_coder=dict(
        type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.]),
    reg_class_agnostic=True,
    cls_predictor_cfg=dict(type='mmlongtail.NormedLinear', temperature=20),
    loss_cls=dict(
        type='mmlongtail.SeesawLoss',
        num_classes=num_classes,
        p=0.8,
        q=2.0,
        eps=1e-2,
        loss_weight=1.0),
    loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))
stage_target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                     [0.033, 0.033, 0.067, 0.067]]

model = dict(
    roi_head=dict(
        bbox_head=[
            dict(stage_bbox_head, bbox_coder=dict(
                stage_bbox_head['bbox_coder'], target_stds=stds))
            for stds in stage_target_stds
        ],
        mask_head=dict(
            predictor_cfg=dict(
                type='mmlongtail.NormedConv2d', temperature=20))))
