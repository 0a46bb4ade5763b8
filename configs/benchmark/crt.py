# Benchmark: classifier re-training, cRT (Kang et al., ICLR 2020), decoupled:
# the trained CE baseline's box classifier is re-initialized and retrained
# with plain CE on class-balanced sampling (class_aware.py) for the same
# schedule, everything else frozen (as bags_decoupled.py, which changes the
# loss instead, and lws.py, which trains one scale per class instead).
# tools/benchmark_longtail.py sets LONGTAIL_BENCH_INIT_CHECKPOINT to the
# baseline run of the same seed.
_base_ = './class_aware.py'

custom_hooks = [
    dict(
        type='mmlongtail.ClassifierRetrainingHook',
        checkpoint='{{$LONGTAIL_BENCH_INIT_CHECKPOINT:work_dirs/benchmark_longtail/baseline_ce_seed0/epoch_5.pth}}',  # noqa: E501
        trainable=('*bbox_head*.fc_cls', ),
        reinit_trainable=True),
    dict(type='mmlongtail.LongTailConsistencyHook'),
]

find_unused_parameters = True
