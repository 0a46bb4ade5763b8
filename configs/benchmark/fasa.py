# Benchmark: FASA (Zang et al., ICCV 2021): virtual RoI features from
# per-class running feature statistics (from the second epoch on), sampling
# rates adapted after every epoch from each class's classification loss on
# the held-out split (never val: val is what the benchmark scores).
_base_ = './baseline_ce.py'

model = dict(
    roi_head=dict(
        type='mmlongtail.FeatureAugRoIHead',
        feature_augment=dict(
            type='mmlongtail.FASA',
            category_stats={{_base_.train_stats}},
            start_epoch=1)))

custom_hooks = [
    dict(type='mmlongtail.LongTailConsistencyHook'),
    dict(
        type='mmlongtail.FASASamplingHook',
        dataloader=dict(
            batch_size=8,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(
                type='mmlongtail.LVISFormatDataset',
                data_root={{_base_.data_root}},
                ann_file={{_base_.heldout_ann_name}},  # under data_root
                data_prefix=dict(img=''),
                test_mode=True,
                pipeline={{_base_.test_pipeline}}))),
]
