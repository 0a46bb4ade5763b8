# Seesaw + PCB with an R101-FPN backbone, otherwise
# seesaw_pcb_mask_rcnn_r50_fpn_normed_mask_ms_rfs_2x_lvis.py: the official
# mask_rcnn_r101_fpn_sample1e-3_seesaw_pcb_normed_mask_mstrain_2x_lvis_v1_fp16.
# Published (megvii-research/PCB README): 28.7 mask AP, 30.0 box AP.
_base_ = './seesaw_pcb_mask_rcnn_r50_fpn_normed_mask_ms_rfs_2x_lvis.py'

model = dict(
    backbone=dict(
        depth=101,
        # torchvision's ImageNet-1k ResNet-101 (torchvision://resnet101)
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.pytorch.org/models/resnet101-63fe2227.pth')))
