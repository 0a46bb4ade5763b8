# Benchmark, query-based track: the federated loss (Zhou et al., 2021) in the
# small DINO: BCE over the ground-truth classes of the batch (matched and
# denoising targets) plus negatives drawn with probability
# ~ image_count^0.5, 20 of the 40 classes as in federated.py.
_base_ = './dino_focal.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            _delete_=True,
            type='mmlongtail.FederatedLoss',
            num_classes={{_base_.num_classes}},
            category_stats={{_base_.train_stats}},
            num_classes_sampled=20,
            freq_weight_power=0.5,
            loss_weight=1.0)))
