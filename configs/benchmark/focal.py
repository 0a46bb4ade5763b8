# Benchmark: sigmoid focal loss (Lin et al., ICCV 2017) as the R-CNN
# classification loss (gamma 2, alpha 0.25).
_base_ = './baseline_ce.py'

num_classes = 40

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.FocalLoss',
                use_sigmoid=True,
                num_classes=num_classes,
                gamma=2.0,
                alpha=0.25,
                loss_weight=1.0))))
