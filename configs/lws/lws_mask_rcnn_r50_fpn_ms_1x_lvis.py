# Learnable weight scaling, LWS (Kang et al., ICLR 2020), decoupled as the
# BAGS decoupled config: stage 1 is the plain Mask R-CNN R50-FPN trained 1x
# (configs/lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py); stage 2 loads it, freezes
# every weight and trains one scale per class on fc_cls's class rows for
# another 1x schedule with class-balanced sampling
# (mmlongtail.ClassAwareSampler, q = 0; repeat-factor sampling is the
# alternative the eqlv2 repository used for its decoupled baselines).
#
#   stage 1: tools/train.py configs/lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py
#   stage 2: tools/train.py configs/lws/lws_mask_rcnn_r50_fpn_ms_1x_lvis.py \
#                --cfg-options custom_hooks.0.checkpoint=<stage-1 .pth>
_base_ = '../class_aware_sampling/mask_rcnn_r50_fpn_ms_cas_1x_lvis.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(cls_predictor_cfg=dict(type='mmlongtail.LWSLinear'))))

custom_hooks = [
    dict(
        type='mmlongtail.LearnableWeightScalingHook',
        checkpoint='work_dirs/mask_rcnn_r50_fpn_ms_1x_lvis/epoch_12.pth'),
    dict(type='mmlongtail.LongTailConsistencyHook'),
]

# the hook freezes parameters after the model is wrapped in DDP
find_unused_parameters = True
