# Benchmark, query-based track: repeat-factor sampling (Gupta et al., CVPR
# 2019) on the small DINO's focal baseline, t = 0.05 as in rfs.py (the
# synthetic set's common/frequent boundary).
_base_ = './dino_focal.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='mmlongtail.RepeatFactorSampler',
        repeat_thr=0.05))
