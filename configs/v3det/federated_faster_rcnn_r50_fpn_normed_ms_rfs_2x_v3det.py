# Federated loss (Zhou et al., "Probabilistic two-stage detection", 2021) on
# the V3Det recipe (normalized sigmoid classifier, RFS 1e-3, 2x): the sigmoid
# BCE over the batch's ground-truth classes plus negatives drawn up to 50
# classes with probability ~ image_count^0.5 of V3Det train (detectron2's
# use_fed_loss defaults). At 13,204 classes each RoI's loss covers at most
# (classes in the batch + 50) of them instead of all.
_base_ = './faster_rcnn_r50_fpn_normed_sigmoid_ms_rfs_2x_v3det.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.FederatedLoss',
                num_classes={{_base_.num_classes}},
                category_stats={{_base_.category_stats}},
                num_classes_sampled=50,
                freq_weight_power=0.5,
                loss_weight=1.0))))
