# DINO R50 4-scale with EQLv2 (Tan et al., CVPR 2021), LVIS v1, 12 epochs,
# uniform sampling: EQLv2's own setting (its paper trains without
# re-sampling; the gradient-guided reweighting takes its place). gamma = 12,
# mu = 0.8, alpha = 4 as in the paper. Its positive / negative gradient
# statistics accumulate over the outputs that docs/query_based.md names.
_base_ = './dino_4scale_r50_rfs_focal_12e_lvis.py'

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
train_dataloader = dict(
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True))
