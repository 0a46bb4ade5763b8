# FASA (Zang et al., ICCV 2021) on Mask R-CNN R50-FPN, LVIS v1, multi-scale
# 2x, uniform (random) image sampling: the official setting
# (yuhangzang/FASA configs/mask_rcnn_r50_fpn_mstrain_2x_lvis_v1_fasa.py).
# Virtual RoI features are drawn from per-class running statistics from the
# second epoch on; the sampling rates adapt to each class's validation loss
# after every epoch (FASASamplingHook, a loss-mode pass over val).
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms.py',
    '../_base_/schedules/schedule_2x.py', '../_base_/default_runtime.py'
]

model = dict(
    roi_head=dict(
        type='mmlongtail.FeatureAugRoIHead',
        feature_augment=dict(
            type='mmlongtail.FASA',
            category_stats='lvis_v1',
            decay_ratio=0.1,
            loss_weight=0.1,
            instance_prob_power=1.0,
            instance_prob_scale=1.0,
            dynamic_up=1.1,
            dynamic_down=0.9,
            start_epoch=1)))

custom_hooks = [
    dict(type='mmlongtail.LongTailConsistencyHook'),
    dict(type='mmlongtail.FASASamplingHook', interval=1),
]
