"""A small FeatureAugRoIHead on one 8-channel feature map, and category
statistics for it."""
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.utils import register_all_modules
from mmengine.config import ConfigDict

import mmlongtail  # noqa: F401

register_all_modules()

C = 4
COUNTS = (3, 40, 400, 5000)
STATS = dict(
    num_images=10000,
    categories=[
        dict(id=i + 1, name=f'c{i}', frequency='rcff'[i],
             image_count=min(n, 900), instance_count=n)
        for i, n in enumerate(COUNTS)
    ])


def roi_head(feature_augment=None, cls_predictor_cfg=None, fc_dim=16):
    """A ``FeatureAugRoIHead`` (or mmlongtail's ``StandardRoIHead`` when
    ``feature_augment`` is None)."""
    bbox_head = dict(
        type='Shared2FCBBoxHead',
        in_channels=8,
        fc_out_channels=fc_dim,
        roi_feat_size=7,
        num_classes=C,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0., 0., 0., 0.],
            target_stds=[0.1, 0.1, 0.2, 0.2]),
        reg_class_agnostic=False,
        loss_cls=dict(type='CrossEntropyLoss', loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0))
    if cls_predictor_cfg is not None:
        bbox_head['cls_predictor_cfg'] = cls_predictor_cfg
    cfg = dict(
        type='mmlongtail.StandardRoIHead',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=8,
            featmap_strides=[4]),
        bbox_head=bbox_head,
        train_cfg=ConfigDict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.5,
                neg_iou_thr=0.5,
                min_pos_iou=0.5,
                ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler',
                num=64,
                pos_fraction=0.5,
                neg_pos_ub=-1,
                add_gt_as_proposals=True),
            pos_weight=-1,
            debug=False),
        test_cfg=ConfigDict(
            score_thr=0.0,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=20))
    if feature_augment is not None:
        cfg['type'] = 'mmlongtail.FeatureAugRoIHead'
        cfg['feature_augment'] = feature_augment
    return MMDET_MODELS.build(cfg)
