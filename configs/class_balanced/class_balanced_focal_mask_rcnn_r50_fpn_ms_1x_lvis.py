# Class-balanced weights (Cui et al., CVPR 2019) on the sigmoid focal loss of
# Mask R-CNN R50-FPN, LVIS v1, multi-scale 1x: every RoI of class c weighs
# (1 - beta) / (1 - beta^n_c) (n_c: LVIS v1 train instances, weights scaled
# to average 1 over the classes), background RoIs 1. ClassBalancedLoss wraps
# any classification loss (CE, focal, EQL, ...) this way.
_base_ = '../focal/focal_mask_rcnn_r50_fpn_ms_1x_lvis.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.ClassBalancedLoss',
                num_classes={{_base_.num_classes}},
                category_stats='lvis_v1',
                beta=0.999,
                count='instance',
                loss=dict(
                    type='mmlongtail.FocalLoss',
                    use_sigmoid=True,
                    num_classes={{_base_.num_classes}},
                    gamma=2.0,
                    alpha=0.25,
                    loss_weight=1.0)))))
