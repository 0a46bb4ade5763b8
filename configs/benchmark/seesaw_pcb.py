# Benchmark: Seesaw + PCB (He et al., CVPR 2022): seesaw_normed_mask.py with
# the Seesaw loss wrapped in Pairwise Class Balance. As in the official
# Seesaw + PCB config (alpha 0.05, momentum 0.99), PCB acts from the epoch
# after the first learning-rate step (official: epoch 17 of 24, step at 16;
# here: epoch 5 of 5, step at 4); its confusion matrix is updated from the
# first iteration. The official IterativeRoIHead is not used (see
# configs/pcb/README.md).
_base_ = './seesaw_normed_mask.py'

num_classes = 40

model = dict(
    roi_head=dict(
        bbox_head=dict(
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.PCBLoss',
                num_classes=num_classes,
                alpha=0.05,
                momentum=0.99,
                start_epoch=5,
                loss=dict(
                    type='mmlongtail.SeesawLoss',
                    p=0.8,
                    q=2.0,
                    num_classes=num_classes,
                    loss_weight=1.0)))))
