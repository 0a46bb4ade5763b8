# The flagship long-tail recipe on the CPU demo: Seesaw Loss (Wang et al.,
# 2021) with a normalized (cosine) classifier and mask predictor (Norm Mask)
# and repeat-factor sampling (Gupta et al., 2019). Everything else is the
# baseline in mask_rcnn_r18_light_synthetic.py.
_base_ = './mask_rcnn_r18_light_synthetic.py'

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

# LVIS's t = 1e-3 is its common/frequent boundary (100 of ~100k images). The
# synthetic set's boundary is common_max / num_images = 30 / 600 = 0.05, so a
# class seen in a single image is repeated sqrt(0.05 * 600) ~ 5.5 times.
train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='mmlongtail.RepeatFactorSampler',
        repeat_thr=0.05))
