# LVIS v1 instance segmentation, laid out as in the mmdet docs:
#   data/lvis_v1/annotations/lvis_v1_{train,val}.json
#   data/lvis_v1/{train2017,val2017}/*.jpg  (COCO 2017 images)
# LVIS v1 gives image paths through `coco_url`, which mmdet's LVISV1Dataset
# turns into 'train2017/xxx.jpg', hence the empty img prefix.
# mmlongtail's LVISV1Dataset is mmdet's that also refuses, at load time, a file
# whose categories are not LVIS v1's (an LVIS v0.5 file, say) or that is
# malformed. For another LVIS-format file use 'mmlongtail.LVISFormatDataset'.
# Images load through mmlongtail.LoadImageChecked (mmcv's LoadImageFromFile
# plus checks): a missing, empty, truncated, non-image or wrongly sized file
# stops the run with BadImageError naming the path, the image id and what was
# found (bad_image='error'). bad_image='skip' in a train pipeline instead skips
# such images (another image is drawn in its place), each logged with its path
# and counted: --cfg-options train_dataloader.dataset.pipeline.0.bad_image=skip
# Test pipelines keep mmcv's LoadImageFromFile, which mmdet's DetInferencer
# needs by name; it names the path of a missing or undecodable image but not
# of an empty one (docs/reliability.md, "Corrupt images").
dataset_type = 'mmlongtail.LVISV1Dataset'
data_root = 'data/lvis_v1/'
backend_args = None

train_pipeline = [
    dict(
        type='mmlongtail.LoadImageChecked',
        bad_image='error',
        backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    # mmcv's loader: mmdet's DetInferencer (demo/image_demo.py) looks for it
    # by name (mmlongtail.LoadImageChecked here would break it)
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img=''),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
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
        ann_file='annotations/lvis_v1_val.json',
        data_prefix=dict(img=''),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='mmlongtail.LVISMetric',
    ann_file=data_root + 'annotations/lvis_v1_val.json',
    metric=['bbox', 'segm'],
    backend_args=backend_args)
test_evaluator = val_evaluator
