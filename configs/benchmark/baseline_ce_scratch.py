# Benchmark: the CE baseline trained from scratch (random weights), as in the
# first two editions: baseline_ce.py without the pretrained start, so the
# table shows what pretraining changes. Everything else is baseline_ce.py's.
_base_ = './baseline_ce.py'

# baseline_ce.py's helper keys reset as well: the resolved config, and the
# run's identity, do not depend on the start offered
pretrained = 'none'
pretrained_init = None
model = dict(backbone=dict(init_cfg=None))
