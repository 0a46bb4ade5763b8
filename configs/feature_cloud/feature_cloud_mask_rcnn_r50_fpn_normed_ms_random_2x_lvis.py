# Feature cloud (Liu et al., CVPR 2020) on Mask R-CNN R50-FPN, LVIS v1,
# multi-scale 2x, uniform image sampling (FASA's setting, for comparison;
# the paper has no detection schedule). The box classifier is cosine
# (NormedLinear, temperature 20), which the feature cloud needs: each RoI of
# a rare or common class also enters the classifier rotated by an angle
# drawn from N(0, sigma_h^2 - sigma_t^2), the frequent classes' angular
# variance minus the tail's.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms.py',
    '../_base_/schedules/schedule_2x.py', '../_base_/default_runtime.py'
]

model = dict(
    roi_head=dict(
        type='mmlongtail.FeatureAugRoIHead',
        feature_augment=dict(
            type='mmlongtail.FeatureCloud',
            category_stats='lvis_v1',
            tail_groups=('r', 'c'),
            num_virtual=1,
            momentum=0.1,
            loss_weight=1.0),
        bbox_head=dict(
            cls_predictor_cfg=dict(
                type='mmlongtail.NormedLinear', temperature=20))))
