# LVIS v1 with repeat-factor sampling (Gupta et al., 2019), t = 1e-3.
_base_ = './lvis_v1_instance.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='mmlongtail.RepeatFactorSampler', repeat_thr=1e-3))
