# Benchmark: repeat-factor sampling (Gupta et al., LVIS, CVPR 2019) on the CE
# baseline. t = 0.05 is the synthetic set's common/frequent boundary (30 of
# 600 images), as LVIS's t = 1e-3 is its own (100 of ~100k images).
_base_ = './baseline_ce.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='mmlongtail.RepeatFactorSampler',
        repeat_thr=0.05))
