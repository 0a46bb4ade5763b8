# FDS (Yang et al., ICML 2021) on the box regression of Mask R-CNN R50-FPN,
# LVIS v1, multi-scale 1x: the plain baseline (configs/lvis/) whose RoI box
# head re-colours the features feeding fc_reg from their IoU bin's running
# statistics to the kernel-smoothed ones (training only; from epoch 1).
_base_ = '../lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py'

# The official code's FDS setting (Gaussian window of 5 bins, sigma 2,
# momentum 0.9, statistics from epoch 0, calibration from epoch 1) on 50
# bins of 0.01 over the positives' IoU range [0.5, 1.0).
fds = dict(
    value_range=(0.5, 1.0),
    num_bins=50,
    kernel='gaussian',
    kernel_size=5,
    sigma=2.0,
    momentum=0.9,
    start_update=0,
    start_smooth=1)
model = dict(
    roi_head=dict(
        bbox_head=dict(type='mmlongtail.LDSFDSShared2FCBBoxHead', fds=fds)))

# FDS folds its statistics at each epoch's end (before the checkpoint).
custom_hooks = [
    dict(type='mmlongtail.LongTailConsistencyHook'),
    dict(type='mmlongtail.FeatureDistributionSmoothingHook'),
]
