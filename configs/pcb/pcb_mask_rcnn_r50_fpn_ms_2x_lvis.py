# Softmax cross entropy + PCB (He et al., CVPR 2022) on Mask R-CNN R50-FPN,
# LVIS v1, multi-scale training, uniform sampling, 2x, mixed precision: the
# official mask_rcnn_r50_fpn_mstrain_pcb_2x_lvis_v1_fp16.py (alpha 0.4,
# momentum 0.99, PCB from epoch 17, after the first LR step at 16).
# Published (megvii-research/PCB README): 22.6 mask AP, 24.1 box AP.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms.py',
    '../_base_/schedules/schedule_2x.py', '../_base_/default_runtime.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.PCBLoss',
                num_classes={{_base_.num_classes}},
                alpha=0.4,
                momentum=0.99,
                start_epoch=17,
                loss=dict(type='CrossEntropyLoss', use_sigmoid=False)))))

# the official runs all trained in fp16 with a dynamic loss scale; PCB's
# statistics stay float32
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
