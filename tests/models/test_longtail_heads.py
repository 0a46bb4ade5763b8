"""Our classification losses inside real mmdet heads: Shared2FCBBoxHead sizes
fc_cls from the loss, trains (forward/backward), and predicts (N, C + 1)
probabilities; CascadeRoIHead trains and predicts with each loss."""
import copy

import pytest
import torch
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.testing import demo_mm_inputs, demo_mm_proposals
from mmdet.utils import register_all_modules
from mmengine.config import ConfigDict

import mmlongtail  # noqa: F401

register_all_modules()

C = 4
STATS = dict(
    num_images=100,
    categories=[
        dict(
            id=i + 1,
            name=f'c{i}',
            frequency='r',
            image_count=ic,
            instance_count=nc) for i, (ic, nc) in enumerate([(1, 3), (
                5, 40), (60, 400), (90, 5000)])
    ])

LOSSES = {
    'EQLLoss':
    (dict(
        type='mmlongtail.EQLLoss',
        num_classes=C,
        category_stats=STATS,
        freq_thr=0.02), C),
    'EQLv2Loss': (dict(type='mmlongtail.EQLv2Loss', num_classes=C), C + 1),
    'FocalLoss': (dict(type='mmlongtail.FocalLoss', num_classes=C), C),
    'GroupSoftmaxLoss': (dict(
        type='mmlongtail.GroupSoftmaxLoss',
        num_classes=C,
        category_stats=STATS), C + 1 + 5),
    # 3 < C + 1: classes are drawn in the cascade test's batches
    'FederatedLoss': (dict(
        type='mmlongtail.FederatedLoss',
        num_classes=C,
        category_stats=STATS,
        num_classes_sampled=3), C),
    'ECMLoss': (dict(
        type='mmlongtail.ECMLoss', num_classes=C, category_stats=STATS),
                C + 1),
    'GumbelLoss': (dict(
        type='mmlongtail.GumbelLoss',
        num_classes=C,
        category_stats=STATS,
        lambda_=0.1), C),
    'GumbelLoss-no-drop': (dict(
        type='mmlongtail.GumbelLoss', num_classes=C, drop_loss=False), C),
    'BalancedSoftmaxLoss': (dict(
        type='mmlongtail.BalancedSoftmaxLoss',
        num_classes=C,
        category_stats=STATS), C + 1),
    'BalancedSoftmaxLoss-sigmoid': (dict(
        type='mmlongtail.BalancedSoftmaxLoss',
        num_classes=C,
        category_stats=STATS,
        use_sigmoid=True), C),
    'ClassBalancedLoss-CE': (dict(
        type='mmlongtail.ClassBalancedLoss',
        num_classes=C,
        category_stats=STATS,
        loss=dict(type='CrossEntropyLoss', use_sigmoid=False)), C + 1),
    'ClassBalancedLoss-focal': (dict(
        type='mmlongtail.ClassBalancedLoss',
        num_classes=C,
        category_stats=STATS,
        beta=0.99,
        loss=dict(type='mmlongtail.FocalLoss', num_classes=C)), C),
}


def bbox_head(loss_cls):
    return Shared2FCBBoxHead(
        in_channels=4,
        fc_out_channels=16,
        roi_feat_size=3,
        num_classes=C,
        loss_cls=copy.deepcopy(loss_cls))


def roi_batch(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, 4, 3, 3, generator=g)
    xy = torch.rand(n, 2, generator=g) * 40
    wh = torch.rand(n, 2, generator=g) * 20 + 4
    rois = torch.cat([torch.zeros(n, 1), xy, xy + wh], 1)
    labels = torch.randint(0, C + 1, (n, ), generator=g)
    labels[:C + 1] = torch.arange(C + 1)
    return feats, rois, labels


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_shared2fc_bbox_head(name):
    cfg, channels = LOSSES[name]
    head = bbox_head(cfg)
    head.init_weights()
    assert head.fc_cls.out_features == channels
    feats, rois, labels = roi_batch()
    cls_score, bbox_pred = head(feats)
    assert cls_score.shape == (len(labels), channels)
    n = len(labels)
    losses = head.loss(
        cls_score,
        bbox_pred,
        rois,
        labels,
        torch.ones(n),
        torch.zeros(n, 4),
        torch.ones(n, 4))
    assert 'acc' in losses and torch.isfinite(losses['loss_cls'])
    (losses['loss_cls'] + losses['loss_bbox']).backward()
    assert head.fc_cls.weight.grad.abs().sum() > 0

    # test time: raw (N, C + 1) scores are probabilities
    meta = dict(img_shape=(64, 64), scale_factor=(1.0, 1.0))
    with torch.no_grad():
        cls_score, bbox_pred = head(feats)
        res = head.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ),
                                   [meta],
                                   rcnn_test_cfg=None)[0]
    scores = res.scores
    assert scores.shape == (n, C + 1)
    assert ((scores >= 0) & (scores <= 1)).all()
    torch.testing.assert_close(scores, head.loss_cls.get_activation(cls_score))
    # with NMS: detections keep probabilities and valid labels
    test_cfg = ConfigDict(
        score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=10)
    with torch.no_grad():
        det = head.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ),
                                   [meta], rcnn_test_cfg=test_cfg)[0]
    assert len(det) > 0 and (det.scores <= 1).all()
    assert ((det.labels >= 0) & (det.labels < C)).all()


def test_eqlv2_is_scored_with_sigmoid_not_softmax():
    head = bbox_head(LOSSES['EQLv2Loss'][0])
    feats, rois, _ = roi_batch()
    with torch.no_grad():
        cls_score, bbox_pred = head(feats)
        res = head.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ),
                                   [dict(img_shape=(64, 64))],
                                   rcnn_test_cfg=None)[0]
    p = cls_score.sigmoid()
    torch.testing.assert_close(res.scores[:, :C], p[:, :C] * (1 - p[:, C:]))
    torch.testing.assert_close(res.scores[:, C], p[:, C])
    assert not torch.allclose(res.scores, cls_score.softmax(-1), atol=1e-3)
    # mmdet 3.3.0's own port lacks the protocol and is scored with softmax
    ref = bbox_head(dict(type='EQLV2Loss', num_classes=C))
    ref.load_state_dict(head.state_dict(), strict=False)
    with torch.no_grad():
        res_ref = ref.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ),
                                      [dict(img_shape=(64, 64))],
                                      rcnn_test_cfg=None)[0]
    torch.testing.assert_close(res_ref.scores, cls_score.softmax(-1))


def test_bags_probabilities_through_head():
    head = bbox_head(LOSSES['GroupSoftmaxLoss'][0])
    feats, rois, _ = roi_batch()
    with torch.no_grad():
        cls_score, bbox_pred = head(feats)
        res = head.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ),
                                   [dict(img_shape=(64, 64))],
                                   rcnn_test_cfg=None)[0]
    loss = head.loss_cls
    bg = loss.split_groups(cls_score)[-1].softmax(-1)
    torch.testing.assert_close(res.scores[:, C], bg[:, 1])
    # within every group: its classes' scores + its "others" = foreground
    groups = [g.softmax(-1) for g in loss.split_groups(cls_score)]
    group_of = loss.label_map[:, :C].argmax(0)
    for g in range(loss.num_groups - 1):
        cls = (group_of == g).nonzero()[:, 0]
        torch.testing.assert_close(
            res.scores[:, cls].sum(1) + groups[g][:, 0] * bg[:, 0], bg[:, 0])


def cascade_roi_head(loss_cls):
    stage = dict(
        type='Shared2FCBBoxHead',
        in_channels=8,
        fc_out_channels=16,
        roi_feat_size=7,
        num_classes=C,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0., 0., 0., 0.],
            target_stds=[0.1, 0.1, 0.2, 0.2]),
        reg_class_agnostic=True,
        loss_cls=loss_cls,
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))
    stds = ([.1, .1, .2, .2], [.05, .05, .1, .1], [.033, .033, .067, .067])
    heads = []
    for s in stds:
        h = copy.deepcopy(stage)
        h['bbox_coder']['target_stds'] = s
        heads.append(h)
    rcnn = [
        ConfigDict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=t,
                neg_iou_thr=t,
                min_pos_iou=t,
                ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler',
                num=32,
                pos_fraction=0.25,
                neg_pos_ub=-1,
                add_gt_as_proposals=True),
            pos_weight=-1,
            debug=False) for t in (0.5, 0.6, 0.7)
    ]
    cfg = dict(
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=8,
            featmap_strides=[4]),
        bbox_head=heads,
        train_cfg=rcnn,
        test_cfg=ConfigDict(
            score_thr=0.0,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=20))
    return MMDET_MODELS.build(cfg)


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_cascade_roi_head(name):
    cfg, channels = LOSSES[name]
    torch.manual_seed(0)
    head = cascade_roi_head(cfg)
    head.init_weights()
    assert all(h.fc_cls.out_features == channels for h in head.bbox_head)
    packed = demo_mm_inputs(
        batch_size=1, image_shapes=[(3, 64, 64)], num_classes=C)
    samples = [packed['data_samples'][0]]
    feats = (torch.randn(1, 8, 16, 16), )
    proposals = demo_mm_proposals([(3, 64, 64)], 50)
    losses = head.loss(feats, proposals, samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert all(h.fc_cls.weight.grad is not None for h in head.bbox_head)
    head.eval()
    with torch.no_grad():
        res = head.predict(feats, demo_mm_proposals([(3, 64, 64)], 50),
                           samples)[0]
    assert len(res) > 0
    assert ((res.scores >= 0) & (res.scores <= 1)).all()
    assert ((res.labels >= 0) & (res.labels < C)).all()


def _predict_scores(head, feats, rois):
    with torch.no_grad():
        cls_score, bbox_pred = head(feats)
        res = head.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ),
                                   [dict(img_shape=(64, 64))],
                                   rcnn_test_cfg=None)[0]
    return cls_score, res.scores


def test_ecm_scores_through_head():
    head = bbox_head(LOSSES['ECMLoss'][0])
    feats, rois, _ = roi_batch()
    z, scores = _predict_scores(head, feats, rois)
    p = z.sigmoid()
    torch.testing.assert_close(scores[:, :C], p[:, :C] * (1 - p[:, C:]))
    torch.testing.assert_close(scores[:, C], p[:, C])


def test_gumbel_scores_and_official_init_through_head():
    cfg = dict(LOSSES['GumbelLoss'][0])
    head = Shared2FCBBoxHead(
        in_channels=4,
        fc_out_channels=16,
        roi_feat_size=3,
        num_classes=C,
        loss_cls=cfg,
        init_cfg=dict(
            type='Constant', val=0.001, bias=-2,
            override=dict(name='fc_cls')))
    head.init_weights()
    assert (head.fc_cls.bias == -2).all()
    assert (head.fc_cls.weight == 0.001).all()
    feats, rois, _ = roi_batch()
    z, scores = _predict_scores(head, feats, rois)
    torch.testing.assert_close(scores[:, :C], torch.exp(-torch.exp(-z)))


@pytest.mark.parametrize('name', ['BalancedSoftmaxLoss',
                                  'BalancedSoftmaxLoss-sigmoid'])
def test_balanced_softmax_scores_are_plain(name):
    head = bbox_head(LOSSES[name][0])
    feats, rois, _ = roi_batch()
    z, scores = _predict_scores(head, feats, rois)
    if name.endswith('sigmoid'):
        torch.testing.assert_close(scores[:, :C], z.sigmoid())
    else:
        torch.testing.assert_close(scores, z.softmax(-1))


def test_class_balanced_weights_reach_the_wrapped_loss():
    head = bbox_head(LOSSES['ClassBalancedLoss-CE'][0])
    feats, rois, labels = roi_batch()
    cls_score, _ = head(feats)
    wrapper = head.loss_cls
    w = wrapper.roi_weights(labels)
    got = wrapper(cls_score, labels, reduction_override='none')
    ref = torch.nn.functional.cross_entropy(
        cls_score, labels, reduction='none') * w
    torch.testing.assert_close(got, ref)
    assert w[labels == C].eq(1.0).all()
    # rarer classes weigh more
    cw = wrapper.class_weight
    assert (cw[:-1] > cw[1:]).all() and cw.sum().item() == pytest.approx(C)


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_a_few_training_iterations_lower_the_loss(name):
    """The head learns a fixed batch: 30 SGD steps, classification loss
    down by a third (random draws and all)."""
    cfg, _ = LOSSES[name]
    torch.manual_seed(0)
    head = bbox_head(cfg)
    head.init_weights()
    feats, rois, labels = roi_batch(n=32)
    n = len(labels)
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    first = last = None
    for _ in range(30):
        cls_score, bbox_pred = head(feats)
        losses = head.loss(cls_score, bbox_pred, rois, labels, torch.ones(n),
                           torch.zeros(n, 4), torch.ones(n, 4))
        loss = losses['loss_cls']
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert last < 2 / 3 * first, (first, last)
