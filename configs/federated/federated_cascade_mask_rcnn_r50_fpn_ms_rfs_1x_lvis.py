# Federated loss on Cascade Mask R-CNN R50-FPN, LVIS v1, RFS 1e-3,
# multi-scale 1x: every stage has its own FederatedLoss (own draw), as the
# cascade heads of CenterNet2 and detectron2's ViTDet LVIS configs.
# Published (CenterNet2 R50 1x, box): 26.5 -> 28.3 AP with the federated loss.
_base_ = [
    '../_base_/models/cascade_mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms_rfs.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
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
    loss_cls=dict(
        type='mmlongtail.FederatedLoss',
        num_classes=num_classes,
        category_stats='lvis_v1',
        num_classes_sampled=50,
        freq_weight_power=0.5,
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
