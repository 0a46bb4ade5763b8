# Effective Class-Margin loss (ECM; Cho & Krähenbühl, ECCV 2022) on Mask
# R-CNN R50-FPN, LVIS v1, following the official recipe (janghyuncho/ECM-Loss,
# configs/effective_class_margin_loss/r50_ecm_1x.py): normalized linear
# classifier and Norm Mask (temperature 20), RFS 1e-3, multi-scale training,
# their 1x schedule (10k warm-up iterations, gradient clipping at 5).
# Published: 26.9 box AP / 26.4 mask AP.
#
# C + 1 sigmoid outputs (classes, then background); margins and weights from
# the LVIS v1 train image counts, background count = 6.3313 x their total.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/datasets/lvis_v1_instance_ms_rfs.py',
    '../_base_/schedules/schedule_ecm_1x.py', '../_base_/default_runtime.py'
]

num_classes = 1203
model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(
                type='mmlongtail.NormedLinear', temperature=20),
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.ECMLoss',
                num_classes=num_classes,
                category_stats='lvis_v1',
                fg_bg_ratio=6.3313,
                loss_weight=1.0)),
        mask_head=dict(
            predictor_cfg=dict(
                type='mmlongtail.NormedConv2d', temperature=20))))
