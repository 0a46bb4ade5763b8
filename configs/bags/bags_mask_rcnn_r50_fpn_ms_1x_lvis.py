# Balanced Group Softmax (BAGS; Li et al., CVPR 2020) trained end to end on
# Mask R-CNN R50-FPN, LVIS v1, 1x (multi-scale, no RFS). Classes are grouped
# by LVIS v1 train instance counts at 10 / 100 / 1000; fc_cls gets
# C + 1 + 5 channels.
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
                type='mmlongtail.GroupSoftmaxLoss',
                num_classes={{_base_.num_classes}},
                category_stats='lvis_v1',
                bin_split=(10, 100, 1000),
                beta=8,
                loss_weight=1.0))))
