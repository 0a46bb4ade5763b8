# Balanced softmax / logit-adjusted cross-entropy (Ren et al., NeurIPS 2020;
# Menon et al., ICLR 2021) trained end to end on Mask R-CNN R50-FPN, LVIS v1,
# multi-scale 1x with uniform sampling (the adjustment is the rebalancing;
# Ren et al. find that adding re-sampling over-balances). The softmax over
# C + 1 outputs is trained on z + log(pi), pi from the LVIS v1 train image
# counts with background = 6.3313 x their total; plain softmax at test time.
# No published LVIS v1 Mask R-CNN number.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.BalancedSoftmaxLoss',
                num_classes={{_base_.num_classes}},
                category_stats='lvis_v1',
                tau=1.0,
                loss_weight=1.0))))
