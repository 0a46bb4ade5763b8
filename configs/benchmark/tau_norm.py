# Benchmark: tau-normalized classifier (Kang et al., ICLR 2020), post-hoc on
# the trained CE baseline's checkpoint (an evaluation only):
#   tools/test.py configs/benchmark/tau_norm.py \
#       work_dirs/benchmark_longtail/baseline_ce_seed0/epoch_5.pth
_base_ = './baseline_ce.py'

custom_hooks = [dict(type='mmlongtail.TauNormalizationHook', tau=1.0)]
