# Benchmark, one-stage track: Equalized Focal Loss (Li et al., CVPR 2022;
# gamma_b = 2, s = 8, alpha = 0.25) in place of focal loss.
_base_ = './retinanet_focal.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            _delete_=True,
            type='mmlongtail.EqualizedFocalLoss',
            use_sigmoid=True,
            dense_head=True,
            num_classes={{_base_.num_classes}},
            gamma=2.0,
            scale_factor=8.0,
            alpha=0.25,
            loss_weight=1.0)))
