# Benchmark: LDS (Yang et al., ICML 2021) on the RoI box regression: each
# element of loss_bbox weighted by the inverse square root of the
# kernel-smoothed density of its regression delta (Gaussian window 5,
# sigma 2, as the official code), from a running histogram of the training
# targets. The classification loss is the baseline's cross-entropy.
_base_ = './baseline_ce.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            type='mmlongtail.LDSFDSShared2FCBBoxHead',
            lds=dict(
                value_range=(-4.0, 4.0),
                num_bins=80,
                kernel='gaussian',
                kernel_size=5,
                sigma=2.0,
                reweight='sqrt_inv'))))
