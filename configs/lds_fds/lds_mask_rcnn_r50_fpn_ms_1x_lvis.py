# LDS (Yang et al., ICML 2021) on the box regression of Mask R-CNN R50-FPN,
# LVIS v1, multi-scale 1x: the plain baseline (configs/lvis/) whose RoI box
# head weights each element of loss_bbox by the inverse square root of the
# kernel-smoothed density of that regression delta (dx, dy, dw, dh), from a
# running histogram of the training targets. The classification loss is
# unchanged (softmax cross-entropy).
_base_ = '../lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py'

# The official code's LDS setting (Gaussian window of 5 bins, sigma 2,
# sqrt_inv) on 80 bins of 0.1 over [-4, 4) of the encoded deltas
# (target_stds 0.1, 0.1, 0.2, 0.2; values beyond go to the edge bins).
lds = dict(
    value_range=(-4.0, 4.0),
    num_bins=80,
    kernel='gaussian',
    kernel_size=5,
    sigma=2.0,
    reweight='sqrt_inv')
model = dict(
    roi_head=dict(
        bbox_head=dict(type='mmlongtail.LDSFDSShared2FCBBoxHead', lds=lds)))
