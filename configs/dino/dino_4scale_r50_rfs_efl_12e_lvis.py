# DINO R50 4-scale with Equalized Focal Loss (Li et al., CVPR 2022), LVIS v1,
# 12 epochs, RFS t = 1e-3 (EFL's LVIS setting): gamma_b = 2, s = 8,
# alpha = 0.25 as in the paper. Its gradient statistics accumulate in
# float32 over the outputs that docs/query_based.md names (EFL's authors:
# the collection works in fp32 only).
_base_ = './dino_4scale_r50_rfs_focal_12e_lvis.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            _delete_=True,
            type='mmlongtail.EqualizedFocalLoss',
            use_sigmoid=True,
            num_classes={{_base_.num_classes}},
            gamma=2.0,
            scale_factor=8.0,
            alpha=0.25,
            loss_weight=1.0)))
