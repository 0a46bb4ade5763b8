# Benchmark: balanced softmax / logit-adjusted CE (Ren et al., 2020; Menon et
# al., 2021), tau = 1, background prior from fg_bg_ratio 6.3313.
_base_ = './baseline_ce.py'

num_classes = 40

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.BalancedSoftmaxLoss',
                num_classes=num_classes,
                category_stats={{_base_.train_stats}},
                tau=1.0,
                loss_weight=1.0))))
