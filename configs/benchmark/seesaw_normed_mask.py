# Benchmark: Seesaw Loss (Wang et al., CVPR 2021) with a normalized linear
# classifier and a normalized mask predictor (Norm Mask), uniform sampling as
# in the Seesaw paper's "random sampler" setting.
_base_ = './baseline_ce.py'

num_classes = 40

model = dict(
    roi_head=dict(
        bbox_head=dict(
            cls_predictor_cfg=dict(type='mmlongtail.NormedLinear',
                                   temperature=20),
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.SeesawLoss',
                p=0.8,
                q=2.0,
                num_classes=num_classes,
                loss_weight=1.0)),
        mask_head=dict(
            predictor_cfg=dict(type='mmlongtail.NormedConv2d',
                               temperature=20))))
