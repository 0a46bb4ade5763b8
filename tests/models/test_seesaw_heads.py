"""Seesaw Loss and the Norm Mask predictors inside real mmdet heads:
Shared2FCBBoxHead (against mmdet's own Seesaw head with the same weights),
StandardRoIHead and CascadeRoIHead (one Seesaw loss per stage) train and
predict."""
import copy

import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.testing import demo_mm_inputs, demo_mm_proposals
from mmdet.utils import register_all_modules
from mmengine.config import ConfigDict

import mmlongtail  # noqa: F401
from mmlongtail.models.layers import NormedConv2d, NormedLinear
from mmlongtail.models.losses import SeesawLoss

register_all_modules()

C = 5
CH = 16
SEESAW = dict(type='mmlongtail.SeesawLoss', num_classes=C, loss_weight=1.0)
NORMED_CLS = dict(type='mmlongtail.NormedLinear', temperature=20)
NORMED_MASK = dict(type='mmlongtail.NormedConv2d', temperature=20)


def bbox_head_cfg(loss_cls=SEESAW, cls_predictor_cfg=NORMED_CLS, **kw):
    cfg = dict(
        type='Shared2FCBBoxHead',
        in_channels=CH,
        fc_out_channels=32,
        roi_feat_size=7,
        num_classes=C,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0., 0., 0., 0.],
            target_stds=[0.1, 0.1, 0.2, 0.2]),
        reg_class_agnostic=True,
        cls_predictor_cfg=cls_predictor_cfg,
        loss_cls=loss_cls,
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))
    cfg.update(kw)
    return copy.deepcopy(cfg)


def roi_batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, CH, 7, 7, generator=g)
    xy = torch.rand(n, 2, generator=g) * 40
    wh = torch.rand(n, 2, generator=g) * 20 + 4
    rois = torch.cat([torch.zeros(n, 1), xy, xy + wh], 1)
    labels = torch.randint(0, C + 1, (n, ), generator=g)
    labels[:C + 1] = torch.arange(C + 1)
    return feats, rois, labels


def test_shared2fc_bbox_head_matches_mmdet_seesaw_head():
    head = MMDET_MODELS.build(bbox_head_cfg())
    head.init_weights()
    assert type(head.loss_cls) is SeesawLoss
    assert type(head.fc_cls) is NormedLinear
    assert head.fc_cls.out_features == C + 2 and head.fc_cls.temperature == 20
    ref = MMDET_MODELS.build(
        bbox_head_cfg(
            loss_cls=dict(type='SeesawLoss', num_classes=C),
            cls_predictor_cfg=dict(type='NormedLinear', tempearture=20)))
    ref.load_state_dict(head.state_dict())

    feats, rois, labels = roi_batch()
    n = len(labels)
    targets = (labels, torch.ones(n), torch.randn(n, 4) * 0.1,
               torch.ones(n, 4))
    for _ in range(3):  # counts accumulate in both
        outs = []
        for h in (head, ref):
            h.zero_grad()
            cls_score, bbox_pred = h(feats)
            losses = h.loss(cls_score, bbox_pred, rois, *targets)
            sum(v for k, v in losses.items() if 'loss' in k).backward()
            outs.append((losses, h.fc_cls.weight.grad.clone()))
        (losses, grad), (losses_ref, grad_ref) = outs
        assert set(losses) == {
            'loss_cls_objectness', 'loss_cls_classes', 'acc_objectness',
            'acc_classes', 'loss_bbox'
        }
        for k in losses:
            torch.testing.assert_close(losses[k], losses_ref[k])
        torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-6)
        assert grad.abs().sum() > 0
    assert torch.equal(head.loss_cls.cum_samples, ref.loss_cls.cum_samples)
    assert head.loss_cls.cum_samples.sum() == 3 * n

    # test time: scores are the Seesaw activation, (N, C + 1), and detections
    # after NMS carry valid labels and probabilities
    meta = dict(img_shape=(64, 64), scale_factor=(1.0, 1.0))
    with torch.no_grad():
        cls_score, bbox_pred = head(feats)
        raw = head.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ),
                                   [meta],
                                   rcnn_test_cfg=None)[0]
        torch.testing.assert_close(raw.scores,
                                   head.loss_cls.get_activation(cls_score))
        torch.testing.assert_close(raw.scores.sum(1), torch.ones(n))
        test_cfg = ConfigDict(
            score_thr=1e-4, nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=20)
        det = head.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ),
                                   [meta], rcnn_test_cfg=test_cfg)[0]
        det_ref = ref.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ),
                                      [meta], rcnn_test_cfg=test_cfg)[0]
    assert 0 < len(det) <= 20
    assert ((det.labels >= 0) & (det.labels < C)).all()
    torch.testing.assert_close(det.scores, det_ref.scores)
    assert torch.equal(det.labels, det_ref.labels)


def test_batch_without_positives_through_head():
    head = MMDET_MODELS.build(bbox_head_cfg())
    feats, rois, _ = roi_batch()
    n = len(rois)
    labels = torch.full((n, ), C)
    cls_score, bbox_pred = head(feats)
    losses = head.loss(cls_score, bbox_pred, rois, labels, torch.ones(n),
                       torch.zeros(n, 4), torch.zeros(n, 4))
    assert losses['loss_cls_classes'] == 0
    assert torch.isfinite(losses['loss_cls_objectness'])
    cls_score.retain_grad()
    (losses['loss_cls_classes'] + losses['loss_cls_objectness']).backward()
    assert (cls_score.grad[:, :C] == 0).all()
    assert cls_score.grad[:, C:].abs().sum() > 0


def _rcnn_train_cfg(iou):
    return dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=iou,
            neg_iou_thr=iou,
            min_pos_iou=iou,
            match_low_quality=False,
            ignore_iof_thr=-1),
        sampler=dict(
            type='RandomSampler',
            num=64,
            pos_fraction=0.25,
            neg_pos_ub=-1,
            add_gt_as_proposals=True),
        mask_size=28,
        pos_weight=-1,
        debug=False)


def _extractor(size):
    return dict(
        type='SingleRoIExtractor',
        roi_layer=dict(type='RoIAlign', output_size=size, sampling_ratio=0),
        out_channels=CH,
        featmap_strides=[4, 8, 16, 32])


MASK_HEAD = dict(
    type='FCNMaskHead',
    num_convs=1,
    in_channels=CH,
    conv_out_channels=CH,
    num_classes=C,
    predictor_cfg=NORMED_MASK,
    loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))
TEST_CFG = dict(
    score_thr=1e-4,
    nms=dict(type='nms', iou_threshold=0.5),
    max_per_img=30,
    mask_thr_binary=0.5)


def standard_roi_head_cfg():
    return dict(
        type='StandardRoIHead',
        bbox_roi_extractor=_extractor(7),
        bbox_head=bbox_head_cfg(),
        mask_roi_extractor=_extractor(14),
        mask_head=MASK_HEAD,
        train_cfg=_rcnn_train_cfg(0.5),
        test_cfg=TEST_CFG)


def cascade_roi_head_cfg():
    stage = bbox_head_cfg()  # defined once, varied per stage
    stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
            [0.033, 0.033, 0.067, 0.067]]
    return dict(
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=_extractor(7),
        bbox_head=[
            dict(stage, bbox_coder=dict(stage['bbox_coder'], target_stds=s))
            for s in stds
        ],
        mask_roi_extractor=_extractor(14),
        mask_head=MASK_HEAD,
        train_cfg=[_rcnn_train_cfg(iou) for iou in (0.5, 0.6, 0.7)],
        test_cfg=TEST_CFG)


@pytest.mark.parametrize('cfg_fn', [standard_roi_head_cfg,
                                    cascade_roi_head_cfg])
def test_roi_head_trains_and_predicts(cfg_fn):
    torch.manual_seed(0)
    roi_head = MMDET_MODELS.build(ConfigDict(cfg_fn()))
    roi_head.init_weights()
    bbox_heads = (roi_head.bbox_head if isinstance(
        roi_head.bbox_head, torch.nn.ModuleList) else [roi_head.bbox_head])
    mask_heads = (roi_head.mask_head if isinstance(
        roi_head.mask_head, torch.nn.ModuleList) else [roi_head.mask_head])
    for h in bbox_heads:
        assert type(h.loss_cls) is SeesawLoss
        assert type(h.fc_cls) is NormedLinear
        assert h.fc_cls.out_features == C + 2
    for h in mask_heads:
        assert type(h.conv_logits) is NormedConv2d
    # one loss object per stage, each with its own counts
    assert len({id(h.loss_cls) for h in bbox_heads}) == len(bbox_heads)

    s = 64
    feats = tuple(
        torch.rand(1, CH, s // 2**(i + 2), s // 2**(i + 2))
        for i in range(4))
    image_shapes = [(3, s, s)]
    data_samples = demo_mm_inputs(
        batch_size=1,
        image_shapes=image_shapes,
        num_items=[3],
        num_classes=C,
        with_mask=True)['data_samples']
    proposals = demo_mm_proposals(image_shapes, 60)

    losses = roi_head.loss(feats, copy.deepcopy(proposals), data_samples)
    cls_keys = [k for k in losses if 'loss_cls_classes' in k]
    assert len(cls_keys) == len(bbox_heads)
    assert any('loss_mask' in k for k in losses)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    for h in bbox_heads:
        assert h.fc_cls.weight.grad.abs().sum() > 0
        # every sampled RoI was counted (512 per image at most)
        assert 0 < h.loss_cls.cum_samples.sum() <= 64
    assert mask_heads[0].conv_logits.weight.grad.abs().sum() > 0

    roi_head.eval()
    with torch.no_grad():
        results = roi_head.predict(
            feats, copy.deepcopy(proposals), data_samples, rescale=False)
    res = results[0]
    assert len(res) <= 30
    assert ((res.labels >= 0) & (res.labels < C)).all()
    assert ((res.scores > 0) & (res.scores <= 1)).all()
    assert res.masks.shape[0] == len(res)
