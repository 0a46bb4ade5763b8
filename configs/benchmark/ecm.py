# Benchmark: ECM loss (Cho & Krähenbühl, ECCV 2022) with a normalized linear
# classifier and Norm Mask, as in its official recipe (RFS left out, as in
# the other loss rows of this benchmark).
_base_ = './baseline_ce.py'

num_classes = 40

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(type='mmlongtail.NormedLinear',
                                   temperature=20),
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.ECMLoss',
                num_classes=num_classes,
                category_stats={{_base_.train_stats}},
                fg_bg_ratio=6.3313,
                loss_weight=1.0)),
        mask_head=dict(
            predictor_cfg=dict(type='mmlongtail.NormedConv2d',
                               temperature=20))))
