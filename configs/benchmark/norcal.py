# Benchmark: NorCal (Pan et al., NeurIPS 2021), post-hoc on the trained CE
# baseline's checkpoint (an evaluation only), with the synthetic training
# set's image counts:
#   tools/test.py configs/benchmark/norcal.py \
#       work_dirs/benchmark_longtail/baseline_ce_seed0/epoch_5.pth
_base_ = './baseline_ce.py'

model = dict(
    roi_head=dict(type='mmlongtail.StandardRoIHead'),
    test_cfg=dict(rcnn=dict(score_calibration=[
        dict(type='mmlongtail.NorCal',
             category_stats={{_base_.train_stats}}, gamma=0.6, mode='exps')
    ])))
