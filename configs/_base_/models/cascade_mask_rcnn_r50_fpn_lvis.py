# Cascade Mask R-CNN R50-FPN (Cai & Vasconcelos, 2018) for LVIS v1: the Mask
# R-CNN base with a three-stage cascade RoI head (IoU 0.5 / 0.6 / 0.7).
_base_ = './mask_rcnn_r50_fpn_lvis.py'

num_classes = 1203
# One stage's box head; the stages differ only in their regression stds.
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
        type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
    loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))
stage_target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                     [0.033, 0.033, 0.067, 0.067]]
stage_iou_thrs = [0.5, 0.6, 0.7]


def _stage_rcnn_cfg(iou):
    return dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=iou,
            neg_iou_thr=iou,
            min_pos_iou=iou,
            match_low_quality=False,
            ignore_iof_thr=-1),
        sampler=dict(
            type='RandomSampler',
            num=512,
            pos_fraction=0.25,
            neg_pos_ub=-1,
            add_gt_as_proposals=True),
        mask_size=28,
        pos_weight=-1,
        debug=False)


# The mask branch and the RoI extractors are the Mask R-CNN base's; the box
# head and the R-CNN training settings become one entry per stage.
model = dict(
    type='CascadeRCNN',
    roi_head=dict(
        type='mmlongtail.CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_head=[
            dict(stage_bbox_head, bbox_coder=dict(
                stage_bbox_head['bbox_coder'], target_stds=stds))
            for stds in stage_target_stds
        ]),
    train_cfg=dict(
        rcnn=[_stage_rcnn_cfg(iou) for iou in stage_iou_thrs]))
