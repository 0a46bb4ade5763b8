# Classifier re-training, cRT (Kang et al., ICLR 2020), decoupled on Mask
# R-CNN R50-FPN, LVIS v1: stage 1 is the plain softmax model trained 1x
# (configs/lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py); stage 2 loads it,
# re-initializes the box classifier fc_cls and retrains it with the same
# softmax cross-entropy on class-balanced sampling
# (mmlongtail.ClassAwareSampler, q = 0) for another 1x schedule, every other
# parameter and batch-norm statistic frozen (ClassifierRetrainingHook, as in
# the BAGS decoupled config, which changes the loss instead). Published
# decoupled number on LVIS v1 (EQLv2 repository's table, Mask R-CNN R50-FPN
# 1x): 22.1 mask AP / 11.9 AP_r.
#
#   stage 1: tools/train.py configs/lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py
#   stage 2: tools/train.py \
#                configs/crt/crt_mask_rcnn_r50_fpn_ms_cas_1x_lvis.py \
#                --cfg-options custom_hooks.0.checkpoint=<stage-1 .pth>
_base_ = '../class_aware_sampling/mask_rcnn_r50_fpn_ms_cas_1x_lvis.py'

custom_hooks = [
    dict(
        type='mmlongtail.ClassifierRetrainingHook',
        checkpoint='work_dirs/mask_rcnn_r50_fpn_ms_1x_lvis/epoch_12.pth',
        trainable=('*bbox_head*.fc_cls', ),
        reinit_trainable=True),
    dict(type='mmlongtail.LongTailConsistencyHook'),
]

# the hook freezes parameters after the model is wrapped in DDP
find_unused_parameters = True
