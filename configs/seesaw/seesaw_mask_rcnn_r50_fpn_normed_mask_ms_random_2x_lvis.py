# Seesaw Loss with Norm Mask on Mask R-CNN R50-FPN, LVIS v1, multi-scale 2x,
# with uniform (random) image sampling instead of repeat-factor sampling.
# Published (mmdetection seesaw_loss model zoo): 25.6 box AP / 25.4 mask AP.
_base_ = '../seesaw_mask_rcnn_lvis.py'

train_dataloader = dict(
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True))
