# Benchmark: FRACAL (Alexandridis et al., CVPR 2025), post-hoc on the trained
# CE baseline's checkpoint (an evaluation only). Its statistics come from the
# synthetic training annotation file itself: the image frequencies and the
# fractal dimension of each class's box locations are computed from its boxes
# when the scorer is built (under a second for this file), so a fresh clone
# whose data tools/make_synthetic_lvis.py generated needs no extra file.
#   tools/test.py configs/benchmark/fracal.py \
#       work_dirs/benchmark_longtail/baseline_ce_seed0/epoch_5.pth
_base_ = './baseline_ce.py'

model = dict(
    roi_head=dict(type='mmlongtail.StandardRoIHead'),
    test_cfg=dict(rcnn=dict(score_calibration=[
        dict(type='mmlongtail.FRACAL',
             category_stats={{_base_.train_stats}}, variant='base10',
             fractal_l=2.0)
    ])))
