# Seesaw + PCB (He et al., CVPR 2022) with Norm Mask on Mask R-CNN R50-FPN,
# LVIS v1, RFS 1e-3, multi-scale training, 2x, mixed precision: the official
# mask_rcnn_r50_fpn_sample1e-3_seesaw_pcb_normed_mask_mstrain_2x_lvis_v1_fp16
# (Seesaw p 0.8, q 2; PCB alpha 0.05, momentum 0.99, from epoch 17).
# Published (megvii-research/PCB README): 27.2 mask AP (AP_r 19.0),
# 28.1 box AP.
_base_ = '../seesaw_mask_rcnn_lvis.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.PCBLoss',
                num_classes={{_base_.num_classes}},
                alpha=0.05,
                momentum=0.99,
                start_epoch=17,
                loss={{_base_.seesaw_loss}}))))

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
