# Benchmark: classifier re-training, cRT (Kang et al., ICLR 2020), decoupled:
# the trained CE baseline's box classifier is re-initialized and retrained
# with plain CE on a re-balanced sampler for the same schedule, everything
# else frozen (as bags_decoupled.py, which changes the loss instead).
# tools/benchmark_longtail.py sets LONGTAIL_BENCH_INIT_CHECKPOINT to the
# baseline run of the same seed.
#
# The re-balanced sampler is repeat-factor sampling with rfs.py's t = 0.05,
# the one on main today; Kang et al. use class-balanced sampling
# (mmlongtail.ClassAwareSampler, q = 0, once it is on main).
_base_ = './baseline_ce.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='mmlongtail.RepeatFactorSampler',
        repeat_thr=0.05))

custom_hooks = [
    dict(
        type='mmlongtail.ClassifierRetrainingHook',
        checkpoint='{{$LONGTAIL_BENCH_INIT_CHECKPOINT:work_dirs/benchmark_longtail/baseline_ce_seed0/epoch_5.pth}}',  # noqa: E501
        trainable=('*bbox_head*.fc_cls', ),
        reinit_trainable=True),
    dict(type='mmlongtail.LongTailConsistencyHook'),
]

find_unused_parameters = True
