# Benchmark, query-based track: Equalization Loss v2 (Tan et al., CVPR 2021)
# in the small DINO, the paper's hyper-parameters (gamma 12, mu 0.8,
# alpha 4), as eqlv2.py.
_base_ = './dino_focal.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            _delete_=True,
            type='mmlongtail.EQLv2Loss',
            num_classes={{_base_.num_classes}},
            gamma=12,
            mu=0.8,
            alpha=4.0,
            loss_weight=1.0)))
