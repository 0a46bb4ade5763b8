# Equalized Focal Loss (Li et al., CVPR 2022) in RetinaNet R50-FPN, LVIS v1,
# 24 epochs, multi-scale 640-800, RFS t = 1e-3, gamma_b = 2, s = 8,
# alpha = 0.25. Baseline:
# configs/focal/focal_retinanet_r50_fpn_ms_rfs_2x_lvis.py.
#
# The official numbers (ModelTC/EOD, R50 27.5 AP / 20.2 AP_r) come from its
# "improved baseline", which mmdet's RetinaHead does not have: a GN head, an
# IoU-prediction branch whose sigmoid multiplies the class scores at test
# time, two square anchors per position (scales 6, 8) assigned by ATSS
# (top 18), a GIoU box loss and LR 0.02. This config is a plain RetinaNet
# (no GN, no IoU branch, 9 anchors, max-IoU assignment, L1 box loss, LR
# 0.01), so its absolute AP is not comparable with the official one; the
# comparison it supports is EFL against its focal baseline trained
# identically. *_atss_* configs are the closer match to the official head.
_base_ = '../focal/focal_retinanet_r50_fpn_ms_rfs_2x_lvis.py'

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
