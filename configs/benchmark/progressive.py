# Benchmark: progressively-balanced sampling (Kang et al., ICLR 2020;
# mmlongtail.ClassAwareSampler): at epoch t of T the class distribution is
# (1 - t/T) instance-balanced (q = 1) + t/T class-balanced (q = 0), Kang's
# schedule with end = T = the 5 epochs (tools/benchmark_longtail.py --epochs
# moves `end` with the schedule).
_base_ = './baseline_ce.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True,
        type='mmlongtail.ClassAwareSampler',
        q=0.0,
        progressive=dict(end=5, start_q=1.0)))
