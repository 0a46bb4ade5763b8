# The synthetic long-tailed dataset (mmlongtail_bench.synthetic), in the
# data/lvis_v1 layout. Make it with:
#   python tools/make_synthetic_lvis.py data/synthetic_lvis
# Only what differs from LVIS v1 is set here: the dataset class (classes come
# from the file), 128 px images used as they are, batch sizes.
_base_ = './lvis_v1_instance.py'

dataset_type = 'mmlongtail.LVISFormatDataset'
# Elsewhere: SYNTHETIC_LVIS_ROOT=/path/to/it (mmengine substitutes the
# environment variable; every path below follows data_root).
data_root = '{{$SYNTHETIC_LVIS_ROOT:data/synthetic_lvis/}}'.rstrip('/') + '/'
backend_args = None

train_pipeline = [
    dict(
        type='mmlongtail.LoadImageChecked',
        bad_image='error',
        backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    # mmcv's loader: mmdet's DetInferencer looks for it by name
    dict(type='LoadImageFromFile', backend_args=backend_args),
    # identity resize: records the scale_factor the heads rescale with
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]

train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    batch_sampler=None,  # square images: no aspect-ratio grouping
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(
        type=dataset_type, data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(ann_file=data_root + 'annotations/lvis_v1_val.json')
test_evaluator = val_evaluator
