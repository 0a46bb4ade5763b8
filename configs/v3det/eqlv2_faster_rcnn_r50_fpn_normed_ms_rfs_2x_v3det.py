# EQLv2 (Tan et al., CVPR 2021) on the V3Det recipe (normalized classifier,
# RFS 1e-3, 2x): C + 1 sigmoid channels (the last is objectness), each
# class's positive and negative gradients re-balanced by its accumulated
# gradient ratio (C-sized buffers). EQLv2's own LVIS setting uses no RFS;
# here only the loss differs from the baseline recipe.
_base_ = './faster_rcnn_r50_fpn_normed_sigmoid_ms_rfs_2x_v3det.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.EQLv2Loss',
                num_classes={{_base_.num_classes}},
                gamma=12,
                mu=0.8,
                alpha=4.0,
                loss_weight=1.0))))
