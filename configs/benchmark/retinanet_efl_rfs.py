# Benchmark, one-stage track: Equalized Focal Loss with repeat-factor
# sampling, the paper's LVIS setting. t = 0.05 as in rfs.py (the synthetic
# set's common/frequent boundary, as LVIS's t = 1e-3 is its own).
_base_ = './retinanet_efl.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='mmlongtail.RepeatFactorSampler',
        repeat_thr=0.05))
