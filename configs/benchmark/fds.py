# Benchmark: FDS (Yang et al., ICML 2021) on the RoI box regression: the
# features feeding fc_reg re-coloured from their IoU bin's running
# statistics to the kernel-smoothed ones (Gaussian window 5, sigma 2,
# momentum 0.9, calibration from epoch 1, as the official code); training
# only. Its hook folds the statistics at each epoch's end.
_base_ = './baseline_ce.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='mmlongtail.LDSFDSShared2FCBBoxHead',
            fds=dict(
                value_range=(0.5, 1.0),
                num_bins=50,
                kernel='gaussian',
                kernel_size=5,
                sigma=2.0,
                momentum=0.9,
                start_update=0,
                start_smooth=1))))

custom_hooks = [
    dict(type='mmlongtail.LongTailConsistencyHook'),
    dict(type='mmlongtail.FeatureDistributionSmoothingHook'),
]
