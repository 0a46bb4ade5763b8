# dino_4scale_r50_rfs_federated_12e_lvis.py for 24 epochs, LR step after
# epoch 20 (mmdet's dino-4scale_r50_8xb2-24e_coco.py schedule).
_base_ = './dino_4scale_r50_rfs_federated_12e_lvis.py'

train_cfg = dict(max_epochs=24, val_interval=24)
param_scheduler = [
    dict(
        type='MultiStepLR',
        begin=0,
        end=24,
        by_epoch=True,
        milestones=[20],
        gamma=0.1)
]
