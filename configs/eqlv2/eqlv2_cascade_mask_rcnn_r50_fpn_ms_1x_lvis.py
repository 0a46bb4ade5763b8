# EQLv2 (Tan et al., CVPR 2021) on Cascade Mask R-CNN R50-FPN, LVIS v1, 1x
# (multi-scale, no RFS). Every stage has its own EQLv2Loss and statistics.
_base_ = [
    '../_base_/models/cascade_mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]

num_classes = 1203
# The base's stage head with the EQLv2 classifier; the stages differ only in
# their regression stds. (Config inheritance replaces lists, so the three
# stages are rebuilt here from one shared dict.)
stage_bbox_head = dict(
    type='Shared2FCBBoxHead',
    in_channels=256,
    fc_out_channels=1024,
    roi_feat_size=7,
    num_classes=num_classes,
    bbox_coder=dict(
        type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.]),
    reg_class_agnostic=True,
    loss_cls=dict(
        type='mmlongtail.EQLv2Loss',
        num_classes=num_classes,
        gamma=12,
        mu=0.8,
        alpha=4.0,
        loss_weight=1.0),
    loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))
stage_target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                     [0.033, 0.033, 0.067, 0.067]]
model = dict(
    roi_head=dict(bbox_head=[
        dict(stage_bbox_head, bbox_coder=dict(
            stage_bbox_head['bbox_coder'], target_stds=stds))
        for stds in stage_target_stds
    ]))
