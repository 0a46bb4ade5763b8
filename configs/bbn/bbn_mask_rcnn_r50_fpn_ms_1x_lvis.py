# BBN-style cumulative learning (Zhou et al., CVPR 2020), adapted to the RoI
# box head, on the plain Mask R-CNN R50-FPN baseline, multi-scale 1x, LVIS
# v1 (README.md here). Each GPU's batch: the baseline's 2 uniformly drawn
# images (conventional branch) + 2 from the reversed sampler (class ∝ 1/n_j,
# re-balancing branch); the box classification losses are mixed by
# alpha = 1 - (epoch / 12)^2; boxes from the conventional branch; test
# logits from both branches, 0.5 / 0.5 (the official test rule).
_base_ = '../lvis/mask_rcnn_r50_fpn_ms_1x_lvis.py'

model = dict(
    roi_head=dict(
        type='mmlongtail.BBNRoIHead',
        bbox_head=dict(type='mmlongtail.BBNBBoxHead')))

train_dataloader = dict(
    batch_size=4,  # per GPU: 2 conventional + 2 re-balancing images
    # the sampler interleaves (uniform, reversed) pairs; aspect-ratio
    # grouping would reorder them, so batches are taken as they come
    batch_sampler=None,
    sampler=dict(_delete_=True, type='mmlongtail.BBNPairSampler'),
    dataset=dict(
        _delete_=True,
        type='mmlongtail.BBNStreamDataset',
        dataset={{_base_.train_dataloader.dataset}}))

custom_hooks = [
    dict(type='mmlongtail.BBNCumulativeLearningHook'),
    dict(type='mmlongtail.LongTailConsistencyHook'),
]
