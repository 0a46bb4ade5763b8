# Benchmark: Balanced Group Softmax (Li et al., CVPR 2020), decoupled: the
# trained CE baseline's classifier is re-initialized and retrained with group
# softmax for the same schedule while everything else stays frozen.
# tools/benchmark_longtail.py sets LONGTAIL_BENCH_INIT_CHECKPOINT to the
# baseline run of the same seed.
#
# Groups by training instances: LVIS's (10, 100, 1000) split 1203 classes
# into roughly rare / common / frequent / very frequent; on the synthetic set
# (1-12, 12-38, 42-220 instances per r/c/f class) the same roles fall at
# (10, 40, 100): groups of 10, 16, 8 and 6 classes.
_base_ = './baseline_ce.py'

num_classes = 40

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.GroupSoftmaxLoss',
                num_classes=num_classes,
                category_stats={{_base_.train_stats}},
                bin_split=(10, 40, 100),
                beta=8,
                loss_weight=1.0))))

custom_hooks = [
    dict(
        type='mmlongtail.ClassifierRetrainingHook',
        checkpoint='{{$LONGTAIL_BENCH_INIT_CHECKPOINT:work_dirs/benchmark_longtail/baseline_ce_seed0/epoch_5.pth}}',  # noqa: E501
        trainable=('*bbox_head*.fc_cls', ),
        reinit_trainable=True),
    dict(type='mmlongtail.LongTailConsistencyHook'),
]

find_unused_parameters = True
