# LVIS v1 boxes only with the DETR-family training augmentation that mmdet
# 3.3's DINO and Deformable DETR configs use on COCO (after Deformable DETR):
# random flip, then with probability 1/2 either a multi-scale resize
# (shorter side 480-800 in steps of 32, longer <= 1333) or a resize to a
# shorter side of 400/500/600, a random crop of 384-600 px and the same
# multi-scale resize. Test: shorter side 800 (lvis_v1_detection_ms.py).
# Images without annotations are filtered as in the other LVIS configs
# (mmdet's COCO DINO keeps them).
_base_ = './lvis_v1_detection_ms.py'

detr_scales = [(480, 1333), (512, 1333), (544, 1333), (576, 1333),
               (608, 1333), (640, 1333), (672, 1333), (704, 1333),
               (736, 1333), (768, 1333), (800, 1333)]
train_pipeline = [
    dict(
        type='mmlongtail.LoadImageChecked',
        bad_image='error',
        backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=detr_scales,
                  keep_ratio=True)],
            [
                dict(
                    type='RandomChoiceResize',
                    scales=[(400, 4200), (500, 4200), (600, 4200)],
                    keep_ratio=True),
                dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=detr_scales,
                     keep_ratio=True)
            ]
        ]),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
