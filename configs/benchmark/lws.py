# Benchmark: learnable weight scaling (Kang et al., ICLR 2020), decoupled: the
# trained CE baseline is frozen and one scale per class is trained on its
# classifier's class rows with class-balanced sampling, for the same
# schedule. tools/benchmark_longtail.py sets LONGTAIL_BENCH_INIT_CHECKPOINT to
# the baseline run of the same seed.
_base_ = './class_aware.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(cls_predictor_cfg=dict(type='mmlongtail.LWSLinear'))))

custom_hooks = [
    dict(
        type='mmlongtail.LearnableWeightScalingHook',
        checkpoint='{{$LONGTAIL_BENCH_INIT_CHECKPOINT:work_dirs/benchmark_longtail/baseline_ce_seed0/epoch_5.pth}}'),  # noqa: E501
    dict(type='mmlongtail.LongTailConsistencyHook'),
]

find_unused_parameters = True
