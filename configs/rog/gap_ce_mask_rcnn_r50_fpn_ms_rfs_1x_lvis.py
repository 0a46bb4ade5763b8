# ROG (Zhang et al., ICCV 2023): softmax cross-entropy plus the generalized-AP
# (GAP) ranking loss on Mask R-CNN R50-FPN, LVIS v1, RFS 1e-3, multi-scale
# 640-800, 1x: the schedule of ROG's configs/rog/rog_r50_sample1e-3_1x.py
# (12 epochs, steps 8/11, 500-iteration linear warm-up from 1e-4, SGD 0.02
# for 16 images, gradient clipping at norm 5), with its GAP settings
# (gamma 1.0, lam 0.1, delta 0.5). ROG pairs GAP with a sigmoid CE with an
# objectness channel there; here the base is the softmax CE (C + 1,
# softmax scores), see README.md.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms_rfs.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.GAPLoss',
                num_classes={{_base_.num_classes}},
                gamma=1.0,
                lam=0.1,
                delta=0.5,
                loss_weight=1.0))))

# ROG's warm-up ratio and gradient clipping (detectron2's default)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=12,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
optim_wrapper = dict(clip_grad=dict(max_norm=5, norm_type=2))
