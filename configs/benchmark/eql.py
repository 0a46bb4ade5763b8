# Benchmark: Equalization Loss (Tan et al., CVPR 2020). EQL ignores the
# negative gradients of "tail" classes, those with image frequency below
# freq_thr. The paper's lambda = 1.76e-3 puts LVIS v0.5's tail at about 100
# training images, its common/frequent boundary; the same place here is
# 30 of 600 images, so freq_thr = 0.051 makes rare and common classes tail.
_base_ = './baseline_ce.py'

num_classes = 40

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.EQLLoss',
                num_classes=num_classes,
                category_stats={{_base_.train_stats}},
                freq_thr=0.051,
                loss_weight=1.0))))
