# Benchmark: SMOTE-style interpolation between same-class RoI features
# (rare and common classes), fed to the box classifier only.
_base_ = './baseline_ce.py'

model = dict(
    roi_head=dict(
        type='mmlongtail.FeatureAugRoIHead',
        feature_augment=dict(
            type='mmlongtail.SMOTE',
            category_stats={{_base_.train_stats}},
            tail_groups=('r', 'c'))))
