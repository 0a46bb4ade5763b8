# Equalized Focal Loss (Li et al., CVPR 2022) in ATSS R50-FPN, LVIS v1, 24
# epochs, multi-scale 640-800, RFS t = 1e-3, gamma_b = 2, s = 8,
# alpha = 0.25. Baseline: configs/focal/focal_atss_r50_fpn_ms_rfs_2x_lvis.py.
#
# The official numbers (ModelTC/EOD, R50 27.5 AP / 20.2 AP_r) come from its
# "improved baseline". mmdet's ATSSHead gives most of it (GN head, ATSS
# assignment with two anchors per position and top 18, GIoU, bias prior
# 0.001, LR 0.02, the official schedule and test settings) but has a
# centerness branch where the official head has an IoU-prediction branch
# (trained with sigmoid CE on the IoU of the positives, its sigmoid
# multiplied into the class scores at test time). mmdet's box-loss weight
# (2, normalized by the centerness sum) is kept. Absolute AP can therefore
# differ from the official one for reasons that have nothing to do with the
# loss; compare EFL with its focal baseline trained identically, and the
# EFL - focal gap with the paper's.
_base_ = '../focal/focal_atss_r50_fpn_ms_rfs_2x_lvis.py'

model = dict(
    bbox_head=dict(
        loss_cls=dict(
            _delete_=True,
            type='mmlongtail.EqualizedFocalLoss',
            use_sigmoid=True,
            dense_head=True,
            num_classes={{_base_.num_classes}},
            gamma=2.0,
            scale_factor=8.0,
            alpha=0.25,
            loss_weight=1.0)))
