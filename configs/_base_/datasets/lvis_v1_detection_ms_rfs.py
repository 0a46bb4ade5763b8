# LVIS v1 boxes only, multi-scale training and repeat-factor sampling
# (t = 1e-3), the setting of the Equalized Focal Loss paper's LVIS results.
_base_ = './lvis_v1_detection_ms.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='mmlongtail.RepeatFactorSampler', repeat_thr=1e-3))
