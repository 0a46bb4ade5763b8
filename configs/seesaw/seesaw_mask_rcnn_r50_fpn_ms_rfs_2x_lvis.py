# Seesaw Loss on Mask R-CNN R50-FPN, LVIS v1, RFS 1e-3, multi-scale 2x,
# without Norm Mask (plain 1x1 convolution mask predictor; the box classifier
# stays normalized, as in the published setting).
# Published (mmdetection seesaw_loss model zoo): 27.6 box AP / 26.4 mask AP.
_base_ = '../seesaw_mask_rcnn_lvis.py'

model = dict(
    roi_head=dict(mask_head=dict(
        predictor_cfg=dict(_delete_=True, type='Conv'))))
