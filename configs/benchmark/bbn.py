# Benchmark: BBN-style cumulative learning (Zhou et al., CVPR 2020) on the CE
# baseline, adapted to the RoI box head (configs/bbn/README.md): each batch
# holds the baseline's 8 uniformly drawn images (conventional branch) plus 8
# from the reversed sampler (class ∝ 1 / n_j, re-balancing branch); two
# shared-FC branches and one classifier over both; the classification losses
# mixed by alpha = 1 - (epoch / max_epochs)^2; boxes from the conventional
# branch; test logits from both branches, 0.5 / 0.5. Twice the images per
# iteration of the baseline, same iterations and learning rate.
_base_ = './baseline_ce.py'

model = dict(
    roi_head=dict(
        type='mmlongtail.BBNRoIHead',
        bbox_head=dict(type='mmlongtail.BBNBBoxHead')))

train_dataloader = dict(
    batch_size=16,  # 8 conventional + 8 re-balancing images
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
