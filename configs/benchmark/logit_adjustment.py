# Benchmark: post-hoc logit adjustment (Menon et al., ICLR 2021, tau = 1) on
# the trained CE baseline's checkpoint (an evaluation only).
_base_ = './baseline_ce.py'

model = dict(
    roi_head=dict(type='mmlongtail.StandardRoIHead'),
    test_cfg=dict(rcnn=dict(score_calibration=[
        dict(type='mmlongtail.LogitAdjustment',
             category_stats={{_base_.train_stats}}, tau=1.0)
    ])))
