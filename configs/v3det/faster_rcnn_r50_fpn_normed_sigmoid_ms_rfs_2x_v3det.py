# Faster R-CNN R50-FPN on V3Det (13,204 classes; Wang et al., ICCV 2023), the
# recipe of mmdet 3.3's configs/v3det/faster_rcnn_r50_fpn_8x4_sample1e-3_
# mstrain_v3det_2x.py: a normalized (cosine, temperature 50) box classifier
# with C sigmoid outputs, class-agnostic box regression, repeat-factor
# sampling t = 1e-3, multi-scale training, AdamW, 137,520 iterations of 32
# images (8 GPUs x 4). Published (mmdet model zoo, COCO-style box AP at 300
# detections per image): 25.4.
#
# The loss is mmdet's CrossEntropyCustomLoss(use_sigmoid=True): per RoI the
# sum over the C classes of the binary cross-entropy, averaged over RoIs.
# Here it is mmlongtail.FocalLoss with gamma=0, alpha=0.5, loss_weight=2,
# which is that sum exactly (tests/test_v3det_configs.py checks it against
# mmdet's) and carries the classifier protocol (C-channel fc_cls, sigmoid
# scores) that mmlongtail's heads and hooks read. The method configs beside
# this one change only loss_cls.
_base_ = [
    '../_base_/models/mask_rcnn_r50_fpn_lvis.py',
    '../_base_/default_runtime.py'
]

num_classes = 13204
data_root = 'data/V3Det/'
# written once by: python tools/extract_category_stats.py \
#   data/V3Det/annotations/v3det_2023_v1_train.json \
#   data/V3Det/annotations/v3det_2023_v1_train_category_stats.json
category_stats = data_root + \
    'annotations/v3det_2023_v1_train_category_stats.json'

model = dict(
    type='FasterRCNN',
    data_preprocessor=dict(pad_mask=False),
    roi_head=dict(
        mask_roi_extractor=None,
        mask_head=None,
        bbox_head=dict(
            num_classes=num_classes,
            reg_class_agnostic=True,
            cls_predictor_cfg=dict(
                type='mmlongtail.NormedLinear', temperature=50, bias=True),
            loss_cls=dict(
                _delete_=True,
                type='mmlongtail.FocalLoss',
                num_classes=num_classes,
                gamma=0.0,
                alpha=0.5,
                loss_weight=2.0))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=4000, max_per_img=2000),
        rcnn=dict(
            assigner=dict(
                perm_repeat_gt_cfg=dict(iou_thr=0.7, perm_range=0.01)))),
    test_cfg=dict(
        rcnn=dict(
            score_thr=0.0001,
            nms=dict(type='nms', iou_threshold=0.6),
            max_per_img=300)))

# data: V3Det v1 as it unpacks (annotations/v3det_2023_v1_{train,val}.json,
# images/<synset>/*.jpg), boxes only
dataset_type = 'mmlongtail.V3DetDataset'
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
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
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=8,
    persistent_workers=True,
    # repeat-factor sampling over an endless stream (iteration-based loop);
    # mmdet's recipe wraps the dataset in ClassBalancedDataset instead
    sampler=dict(
        type='mmlongtail.RepeatFactorSampler', repeat_thr=1e-3,
        infinite=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/v3det_2023_v1_train.json',
        data_prefix=dict(img=''),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/v3det_2023_v1_val.json',
        data_prefix=dict(img=''),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
# V3Det's files carry no LVIS fields: every image is evaluated on the
# categories annotated in it (not V3Det's COCO protocol; README), r/c/f by
# LVIS's rule on the training image counts of category_stats
val_evaluator = dict(
    type='mmlongtail.LVISMetric',
    ann_file=data_root + 'annotations/v3det_2023_v1_val.json',
    metric=['bbox'],
    category_stats=category_stats,
    backend_args=backend_args)
test_evaluator = val_evaluator

# schedule: 2x of mmdet's recipe in iterations
max_iter = 68760 * 2
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iter, val_interval=max_iter)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1.0 / 2048,
        by_epoch=False,
        begin=0,
        end=5000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iter,
        by_epoch=False,
        milestones=[45840 * 2, 63030 * 2],
        gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.1),
    clip_grad=dict(max_norm=35, norm_type=2))
# the learning rate is for 32 images per iteration (8 GPUs x 4)
auto_scale_lr = dict(enable=False, base_batch_size=32)

default_hooks = dict(
    checkpoint=dict(by_epoch=False, interval=5730 * 2))
log_processor = dict(window_size=50, by_epoch=False)
