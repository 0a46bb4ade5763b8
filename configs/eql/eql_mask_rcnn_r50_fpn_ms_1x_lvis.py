# Equalization Loss (Tan et al., CVPR 2020) on Mask R-CNN R50-FPN, LVIS v1,
# 1x, in the setting of the published EQLv2 table (multi-scale, no RFS).
# lambda = 1.1e-3 on LVIS v1 image frequencies (the official v1 setting).
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
                type='mmlongtail.EQLLoss',
                num_classes={{_base_.num_classes}},
                category_stats='lvis_v1',
                freq_thr=1.1e-3,
                loss_weight=1.0))))
