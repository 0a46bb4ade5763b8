# Benchmark: feature cloud (Liu et al., CVPR 2020): RoIs of rare and common
# classes also enter the box classifier rotated by N(0, sigma_h^2 -
# sigma_t^2) radians. It needs a cosine classifier, so the box classifier
# is NormedLinear (temperature 20) here: the one change is "feature cloud
# with the classifier it requires".
_base_ = './baseline_ce.py'

model = dict(
    roi_head=dict(
        type='mmlongtail.FeatureAugRoIHead',
        feature_augment=dict(
            type='mmlongtail.FeatureCloud',
            category_stats={{_base_.train_stats}},
            tail_groups=('r', 'c')),
        bbox_head=dict(
            cls_predictor_cfg=dict(
                type='mmlongtail.NormedLinear', temperature=20))))
