# Seesaw Loss with Norm Mask on Cascade Mask R-CNN R101-FPN, LVIS v1,
# RFS 1e-3, multi-scale 2x.
# Published (mmdetection seesaw_loss model zoo): 32.8 box AP / 30.1 mask AP.
_base_ = './seesaw_cascade_mask_rcnn_r50_fpn_normed_mask_ms_rfs_2x_lvis.py'

model = dict(
    backbone=dict(
        depth=101,
        # torchvision's ImageNet-1k ResNet-101 (torchvision://resnet101)
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://download.pytorch.org/models/resnet101-63fe2227.pth')))
