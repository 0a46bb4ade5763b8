# Benchmark: federated loss (Zhou et al., 2021): C sigmoid channels, BCE over
# the batch's ground-truth classes plus negatives drawn with probability
# ~ image_count^0.5. detectron2's 50 classes would exceed the 40 here (every
# class in every batch: plain sigmoid BCE); 20 keeps the draw at work.
_base_ = './baseline_ce.py'

num_classes = 40

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.FederatedLoss',
                num_classes=num_classes,
                category_stats={{_base_.train_stats}},
                num_classes_sampled=20,
                freq_weight_power=0.5,
                loss_weight=1.0))))
