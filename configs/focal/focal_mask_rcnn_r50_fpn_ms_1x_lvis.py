# Sigmoid focal loss (Lin et al., ICCV 2017) as the RoI classification loss of
# Mask R-CNN R50-FPN, LVIS v1, 1x (multi-scale, no RFS, as the EQLv2 table).
# C sigmoid channels, background = all-zero target.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.FocalLoss',
                use_sigmoid=True,
                num_classes={{_base_.num_classes}},
                gamma=2.0,
                alpha=0.25,
                loss_weight=1.0))))
