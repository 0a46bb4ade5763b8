# LDAM loss with deferred re-weighting (Cao et al., NeurIPS 2019) trained end
# to end on Mask R-CNN R50-FPN, LVIS v1, multi-scale 1x with uniform
# sampling. The box classifier is cosine (NormedLinear, no bias) scaled by
# s = 30, the loss takes s * Delta_y off the true class's logit, Delta_y =
# 0.5 * n_y^(-1/4) / max_k n_k^(-1/4) from the LVIS v1 train instance counts
# (background: no margin); plain softmax at test time.
# DRW: the official code re-weights the last 40 of its 200 epochs (from epoch
# 160, 0-based, its first LR step). 12 x 160 / 200 = 9.6, rounded to 10:
# epochs 0-9 plain LDAM, epochs 10 and 11 (the last two, after the 1x's first
# LR step at 8) with class-balanced weights (beta = 0.9999, sum C), background
# weight 1. No published detection number.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]

scale = 30.0

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(
                type='mmlongtail.NormedLinear', temperature=scale,
                bias=False),
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.LDAMLoss',
                num_classes={{_base_.num_classes}},
                category_stats='lvis_v1',
                max_margin=0.5,
                scale=scale,
                drw_epoch=10,
                drw_beta=0.9999,
                loss_weight=1.0))))

# the consistency check (default_runtime.py) and the epoch for DRW
custom_hooks = [
    dict(type='mmlongtail.LongTailConsistencyHook'),
    dict(type='mmlongtail.DRWHook'),
]
