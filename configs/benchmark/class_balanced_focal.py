# Benchmark: class-balanced weights (Cui et al., CVPR 2019, beta 0.999 on
# training instances) on the focal loss of focal.py.
_base_ = './baseline_ce.py'

num_classes = 40

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.ClassBalancedLoss',
                num_classes=num_classes,
                category_stats={{_base_.train_stats}},
                beta=0.999,
                count='instance',
                loss=dict(
                    type='mmlongtail.FocalLoss',
                    use_sigmoid=True,
                    num_classes=num_classes,
                    gamma=2.0,
                    alpha=0.25,
                    loss_weight=1.0)))))
