# Benchmark: class-balanced sampling (Kang et al., ICLR 2020;
# mmlongtail.ClassAwareSampler with q = 0) on the CE baseline.
_base_ = './baseline_ce.py'

train_dataloader = dict(
    sampler=dict(_delete_=True, type='mmlongtail.ClassAwareSampler', q=0.0))
