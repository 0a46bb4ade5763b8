# EQLv2 + PCB (He et al., CVPR 2022) on Mask R-CNN R50-FPN, LVIS v1,
# multi-scale training, uniform sampling, 2x, mixed precision: the official
# mask_rcnn_r50_fpn_mstrain_eqlv2_pcb_2x_lvis_v1_fp16.py (EQLv2 gamma 12,
# mu 0.8, alpha 4; PCB alpha 0.2, momentum 0.99, from epoch 17).
# Published (megvii-research/PCB README): 26.2 mask AP, 27.3 box AP.
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
                alpha=0.2,
                momentum=0.99,
                start_epoch=17,
                loss=dict(
                    type='mmlongtail.EQLv2Loss',
                    num_classes={{_base_.num_classes}},
                    gamma=12,
                    mu=0.8,
                    alpha=4.0)))))

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
