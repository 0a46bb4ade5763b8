# SMOTE-style interpolation of RoI features on Mask R-CNN R50-FPN, LVIS v1,
# multi-scale 2x, uniform image sampling (FASA's setting, for comparison).
# Each positive RoI of a rare or common class adds one feature on the
# segment to another RoI of its class; interpolated features have no box,
# so they feed the classifier only.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms.py',
    '../_base_/schedules/schedule_2x.py', '../_base_/default_runtime.py'
]

model = dict(
    roi_head=dict(
        type='mmlongtail.FeatureAugRoIHead',
        feature_augment=dict(
            type='mmlongtail.SMOTE',
            category_stats='lvis_v1',
            tail_groups=('r', 'c'),
            num_virtual=1,
            loss_weight=1.0)))
