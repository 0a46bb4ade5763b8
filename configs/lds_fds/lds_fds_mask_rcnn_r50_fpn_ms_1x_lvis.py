# LDS + FDS (Yang et al., ICML 2021) on the box regression of Mask R-CNN
# R50-FPN, LVIS v1, multi-scale 1x: both of the other two configs' changes.
_base_ = './fds_mask_rcnn_r50_fpn_ms_1x_lvis.py'

lds = dict(
    value_range=(-4.0, 4.0),
    num_bins=80,
    kernel='gaussian',
    kernel_size=5,
    sigma=2.0,
    reweight='sqrt_inv')
model = dict(roi_head=dict(bbox_head=dict(lds=lds)))
