# LVIS v1 boxes only (one-stage detectors), multi-scale training (shorter side
# 640-800, uniform sampling) as in the Equalized Focal Loss recipe. The
# instance-segmentation base without masks: no mask decoding, box AP only.
_base_ = './lvis_v1_instance.py'

train_pipeline = [
    dict(
        type='mmlongtail.LoadImageChecked',
        bad_image='error',
        backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='RandomChoiceResize',
        scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736),
                (1333, 768), (1333, 800)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    # mmcv's loader: mmdet's DetInferencer looks for it by name
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(metric=['bbox'])
test_evaluator = val_evaluator
