# LVIS v1, multi-scale training and repeat-factor sampling (t = 1e-3), the
# setting of the Seesaw Loss paper's Mask R-CNN results.
_base_ = './lvis_v1_instance_ms.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='mmlongtail.RepeatFactorSampler', repeat_thr=1e-3))
