# BAGS, decoupled as in the paper (Li et al., CVPR 2020): stage 2 starts from a
# trained Mask R-CNN (stage 1: the plain softmax model trained 1x in the same
# setting) and trains only the box classifier, now a group-softmax classifier,
# for another 1x schedule. ClassifierRetrainingHook loads the stage-1
# checkpoint (without its fc_cls, whose shape differs), freezes every other
# parameter and keeps batch-norm statistics frozen. Reusable for cRT.
#
#   stage 1: tools/train.py configs/lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py
#   stage 2: tools/train.py \
#                configs/bags/bags_decoupled_mask_rcnn_r50_fpn_ms_1x_lvis.py \
#                --cfg-options custom_hooks.0.checkpoint=<stage-1 .pth>
_base_ = './bags_mask_rcnn_r50_fpn_ms_1x_lvis.py'

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
