# Deformable DETR R50 with iterative box refinement and two stages, the
# federated loss (50 classes drawn with weight image_count^0.5), LVIS v1,
# mmdet's 50-epoch schedule (32 images a batch), RFS t = 1e-3.
#
# Why the two-stage refine variant: it is the one DINO builds on (DINO is
# two-stage with box refinement) and the one SimLTD trains on LVIS. Its
# encoder-proposal classifier is trained class-agnostically (mmdet relabels
# every object as class 0 and reads channel 0 as objectness) through the
# same loss: with the federated loss that call's positives are class 0 only
# and its draw covers the rest, which trains that separate branch as the
# binary objectness it is. A loss that accumulates per-class statistics
# (EQLv2, EFL) would count every proposal positive as class 0, so this
# folder gives Deformable DETR the federated loss only (docs/query_based.md).
_base_ = [
    '../_base_/models/deformable_detr_refine_twostage_r50_lvis.py',
    '../_base_/datasets/lvis_v1_detection_detr_aug_rfs.py',
    '../_base_/schedules/schedule_deformable_detr_50e.py',
    '../_base_/default_runtime.py'
]

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            _delete_=True,
            type='mmlongtail.FederatedLoss',
            num_classes={{_base_.num_classes}},
            category_stats='lvis_v1',
            num_classes_sampled=50,
            freq_weight_power=0.5,
            # mmdet's Deformable DETR classification weight
            loss_weight=2.0)))
