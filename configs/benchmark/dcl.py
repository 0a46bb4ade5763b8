# Benchmark: DCL's loss scheduler and triplet loss with easy anchors (Wang et
# al., ICCV 2019; mmlongtail.DCLRoIHead) on the progressively-balanced
# sampler row (./progressive.py, whose sampler stands for DCL's sampling
# scheduler): loss_triplet = f(l) * L_TEA on the box head's shared-FC
# feature of the sampled foreground RoIs, f(l) = cos(l/L pi)/2 + 1/2 + eps
# while l < p L, else eps; l the epoch, L the runner's max_epochs (moves
# with tools/benchmark_longtail.py --epochs).
_base_ = './progressive.py'

model = dict(
    roi_head=dict(
        type='mmlongtail.DCLRoIHead',
        triplet_loss=dict(type='mmlongtail.EasyAnchorTriplet'),
        loss_schedule=dict(p=0.3, eps=0.1)))
