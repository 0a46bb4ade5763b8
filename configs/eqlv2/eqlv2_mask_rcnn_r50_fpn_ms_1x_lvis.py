# EQLv2 (Tan et al., CVPR 2021) on Mask R-CNN R50-FPN, LVIS v1, 1x.
# The published setting (tztztztztz/eqlv2 configs/end2end): multi-scale
# training (shorter side 640-800) without repeat-factor sampling, 8 GPUs x 2.
# The box classifier has C + 1 sigmoid channels (the last is objectness);
# EQLv2Loss sizes fc_cls and scores it with sigmoid * (1 - objectness).
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
                type='mmlongtail.EQLv2Loss',
                num_classes={{_base_.num_classes}},
                gamma=12,
                mu=0.8,
                alpha=4.0,
                loss_weight=1.0))))
