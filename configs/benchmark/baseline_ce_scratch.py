# Benchmark: the CE baseline trained from scratch (random weights), as in the
# first two editions: baseline_ce.py without the pretrained start, so the
# table shows what pretraining changes. Everything else is baseline_ce.py's.
_base_ = './baseline_ce.py'

model = dict(backbone=dict(init_cfg=None))
