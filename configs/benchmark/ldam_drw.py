# Benchmark: LDAM loss with deferred re-weighting (Cao et al., NeurIPS 2019):
# a cosine box classifier scaled by s = 30 (NormedLinear, no bias, as the
# official code), margins 0.5 * n^(-1/4) / max n^(-1/4) on the train
# instance counts, class-balanced weights (beta 0.9999) from epoch 4
# (0-based) of 5, where the LR steps, as the official 160 of 200.
_base_ = './baseline_ce.py'

num_classes = 40
scale = 30.0

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(
                type='mmlongtail.NormedLinear', temperature=scale,
                bias=False),
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.LDAMLoss',
                num_classes=num_classes,
                category_stats={{_base_.train_stats}},
                scale=scale,
                drw_epoch=4,
                loss_weight=1.0))))

custom_hooks = [
    dict(type='mmlongtail.LongTailConsistencyHook'),
    dict(type='mmlongtail.DRWHook'),
]
