# Dynamic Curriculum Learning (Wang et al., ICCV 2019; no official code) on
# the plain Mask R-CNN R50-FPN baseline, multi-scale 1x, LVIS v1:
# - sampling scheduler: class j drawn with probability ∝ n_j^{g(l)},
#   g(l) = cos(l/L * pi/2) (the paper's convex form) going from 1
#   (instance-balanced) to 0 (class-balanced) at L = max_epochs
#   (mmlongtail.ClassAwareSampler, progressive mode='exponent');
# - loss scheduler: loss_triplet = f(l) * triplet loss with easy anchors on
#   the box head's shared-FC feature, f(l) = cos(l/L * pi)/2 + 1/2 + eps
#   for l < p*L, else eps (mmlongtail.DCLRoIHead), l the epoch.
# DCL's selective classification loss (DSL) is not used: softmax CE stays.
_base_ = '../class_aware_sampling/mask_rcnn_r50_fpn_ms_cas_1x_lvis.py'

train_dataloader = dict(
    sampler=dict(
        q=0.0,
        progressive=dict(
            end={{_base_.train_cfg.max_epochs}},
            start_q=1.0,
            mode='exponent',
            shape='convex')))

model = dict(
    roi_head=dict(
        type='mmlongtail.DCLRoIHead',
        triplet_loss=dict(
            type='mmlongtail.EasyAnchorTriplet',
            margin=0.2,
            topk=5,
            minority_ratio=0.5),
        loss_schedule=dict(p=0.3, eps=0.1)))
