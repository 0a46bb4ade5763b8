# Benchmark: Equalization Loss v2 (Tan et al., CVPR 2021) with the paper's
# hyper-parameters (gamma 12, mu 0.8, alpha 4).
_base_ = './baseline_ce.py'

num_classes = 40

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.EQLv2Loss',
                num_classes=num_classes,
                gamma=12,
                mu=0.8,
                alpha=4.0,
                loss_weight=1.0))))
