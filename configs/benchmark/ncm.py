# Benchmark: nearest-class-mean classifier (Kang et al., ICLR 2020), post hoc
# on the trained CE baseline's checkpoint: class means of the box head's RoI
# features over the training images (one pass), cosine scores at
# temperature T, the trained background probability kept:
#   tools/test.py configs/benchmark/ncm.py \
#       work_dirs/benchmark_longtail/baseline_ce_seed0/epoch_5.pth
# cache=None: nothing is written into the baseline run's folder, and each
# evaluation's time includes the pass over the training images (the
# method's cost); T is chosen on the held-out split.
_base_ = './baseline_ce.py'

custom_hooks = [
    dict(type='mmlongtail.LongTailConsistencyHook'),
    dict(type='mmlongtail.NCMClassifierHook', temperature=0.1, cache=None)
]
