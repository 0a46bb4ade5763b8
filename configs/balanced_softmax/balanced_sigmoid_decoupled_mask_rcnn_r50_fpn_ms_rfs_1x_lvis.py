# BALMS's sigmoid variant of balanced softmax (Ren et al., NeurIPS 2020;
# cunjunyu/BalancedMetaSoftmax-InstanceSeg, without the meta re-weighter),
# decoupled as in its LVIS recipe: stage 2 retrains only the box classifier
# with RFS on top of a trained Mask R-CNN. Foreground RoIs' logits are
# shifted by -log((1 - f) / f), f = LVIS v1 train image frequency; plain
# sigmoid scores at test time. BALMS's stage 1 is a sigmoid-BCE model; here
# it is the RFS softmax baseline (fc_cls is re-initialized either way). BALMS
# publishes LVIS v0.5 numbers only.
#
#   stage 1: tools/train.py configs/rfs/mask_rcnn_r50_fpn_ms_rfs_1x_lvis.py
#   stage 2: tools/train.py <this file, in configs/balanced_softmax/> \
#     --cfg-options custom_hooks.0.checkpoint=<stage-1 .pth>
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
                type='mmlongtail.BalancedSoftmaxLoss',
                use_sigmoid=True,
                num_classes={{_base_.num_classes}},
                category_stats='lvis_v1',
                loss_weight=1.0))))

custom_hooks = [
    dict(
        type='mmlongtail.ClassifierRetrainingHook',
        checkpoint='work_dirs/mask_rcnn_r50_fpn_ms_rfs_1x_lvis/epoch_12.pth',
        trainable=('*bbox_head*.fc_cls', ),
        reinit_trainable=True),
    dict(type='mmlongtail.LongTailConsistencyHook'),
]

# the hook freezes parameters after the model is wrapped in DDP
find_unused_parameters = True
