# lvis_v1_detection_detr_aug.py with repeat-factor sampling, t = 1e-3 (Gupta
# et al., CVPR 2019): the sampler of detectron2's ViTDet LVIS configs and of
# Co-DETR's and SimLTD's LVIS data configs.
_base_ = './lvis_v1_detection_detr_aug.py'

train_dataloader = dict(
    sampler=dict(
        _delete_=True, type='mmlongtail.RepeatFactorSampler', repeat_thr=1e-3))
