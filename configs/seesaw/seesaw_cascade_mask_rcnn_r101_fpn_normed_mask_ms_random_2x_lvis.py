# Seesaw Loss with Norm Mask on Cascade Mask R-CNN R101-FPN, LVIS v1,
# multi-scale 2x, uniform (random) image sampling instead of RFS.
# Published (mmdetection seesaw_loss model zoo): 33.0 box AP / 30.0 mask AP.
_base_ = './seesaw_cascade_mask_rcnn_r101_fpn_normed_mask_ms_rfs_2x_lvis.py'

train_dataloader = dict(
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True))
