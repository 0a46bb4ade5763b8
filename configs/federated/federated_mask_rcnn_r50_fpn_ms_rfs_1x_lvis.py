# Federated loss (Zhou et al., "Probabilistic two-stage detection", 2021) on
# Mask R-CNN R50-FPN, LVIS v1: a C-channel sigmoid box classifier whose BCE
# runs over the batch's ground-truth classes plus negatives drawn up to 50
# classes with probability ~ image_count^0.5 (detectron2's use_fed_loss with
# its config defaults), RFS 1e-3, multi-scale training, 1x.
# Published (CenterNet2 R50 1x, xingyizhou/CenterNet2 model zoo; no Mask
# R-CNN number): 26.5 -> 28.3 box AP with the federated loss.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms_rfs.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.FederatedLoss',
                num_classes={{_base_.num_classes}},
                category_stats='lvis_v1',
                num_classes_sampled=50,
                freq_weight_power=0.5,
                loss_weight=1.0))))
