# Seesaw Loss (Wang et al., CVPR 2021) on the V3Det recipe (RFS 1e-3, 2x):
# a softmax classifier of C + 2 normalized outputs (classes, then a two-way
# objectness), its mitigation factors from the C accumulated class counts.
# Temperature 20 (Seesaw's own) instead of the sigmoid recipe's 50.
_base_ = './faster_rcnn_r50_fpn_normed_sigmoid_ms_rfs_2x_v3det.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(temperature=20),
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.SeesawLoss',
                num_classes={{_base_.num_classes}},
                p=0.8,
                q=2.0,
                eps=1e-2,
                loss_weight=1.0))))
