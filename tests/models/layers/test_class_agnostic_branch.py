"""CAB, the class-agnostic branch for box regressors (Zhu et al., ECCV 2024,
arXiv:2401.15885; no official code, so values are checked against the
paper's formula written out here): the blend, its gradients, real heads
(Shared2FC with softmax, Seesaw and sigmoid losses; Cascade), checkpoints
in both directions, the consistency hook and a few training iterations of
a light Mask R-CNN."""
import copy
import os.path as osp

import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.testing import demo_mm_inputs, demo_mm_proposals
from mmdet.utils import register_all_modules
from mmengine.config import Config, ConfigDict
from mmengine.optim import OptimWrapper
from mmengine.runner.checkpoint import load_state_dict

import mmlongtail  # noqa: F401
from mmlongtail.engine.hooks.longtail_consistency_hook import \
    check_longtail_consistency
from mmlongtail.models.layers import CABLinear, fold_class_agnostic_branch

register_all_modules()

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
C = 5
CH = 8
CAB = dict(type='mmlongtail.CABLinear', alpha=0.3)
LOSSES = {
    'softmax': dict(type='CrossEntropyLoss', loss_weight=1.0),
    'seesaw': dict(type='mmlongtail.SeesawLoss', num_classes=C),
    'eqlv2': dict(type='mmlongtail.EQLv2Loss', num_classes=C),
}


def _randomize(module, seed=0):
    """Random, well-scaled values in every parameter (an untrained head's
    regressors are ~1e-3 and hide differences)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


def _layer(alpha=0.3, classes=3, dim=5, seed=0):
    return _randomize(CABLinear(dim, classes * 4, alpha=alpha), seed)


def _formula(layer, x):
    """The paper's blend, one class at a time:
    x @ (a W_0 + (1 - a) W_i)^T + a b_0 + (1 - a) b_i."""
    a = layer.alpha
    out = []
    for i in range(layer.num_classes):
        w_i = layer.specific_weight[4 * i:4 * i + 4]
        b_i = layer.specific_bias[4 * i:4 * i + 4]
        w = a * layer.agnostic_weight + (1 - a) * w_i
        b = a * layer.agnostic_bias + (1 - a) * b_i
        out.append(x @ w.T + b)
    return torch.cat(out, -1)


def test_blend_equals_the_formula():
    layer = _layer(alpha=0.3)
    x = torch.randn(7, 5)
    torch.testing.assert_close(layer(x), _formula(layer, x))
    # the blended weights, block by block
    w = layer.weight.detach()
    for i in range(3):
        torch.testing.assert_close(
            w[4 * i:4 * i + 4],
            0.3 * layer.agnostic_weight.detach() +
            0.7 * layer.specific_weight.detach()[4 * i:4 * i + 4])
    # extra leading dimensions, as nn.Linear
    assert layer(torch.randn(2, 3, 5)).shape == (2, 3, 12)


def test_gradients_carry_the_formulas_factors():
    a = 0.3
    layer = _layer(alpha=a)
    x = torch.randn(6, 5)
    g = torch.randn(6, 12)  # dL/d(output)
    (layer(x) * g).sum().backward()
    per_class = [g[:, 4 * i:4 * i + 4].T @ x for i in range(3)]  # (4, 5)
    torch.testing.assert_close(layer.specific_weight.grad,
                               (1 - a) * torch.cat(per_class))
    torch.testing.assert_close(layer.agnostic_weight.grad,
                               a * sum(per_class))
    torch.testing.assert_close(layer.specific_bias.grad, (1 - a) * g.sum(0))
    torch.testing.assert_close(layer.agnostic_bias.grad,
                               a * g.sum(0).view(3, 4).sum(0))


@pytest.mark.parametrize('kwargs, match', [
    (dict(alpha=0.0), 'strictly between 0 and 1'),
    (dict(alpha=1.0), 'reg_class_agnostic=True'),
    (dict(out_features=4), 'already class-agnostic'),
    (dict(out_features=10), 'not a multiple of box_dim=4'),
    (dict(box_dim=4.0), 'box_dim must be an int >= 1 .*got 4.0'),
    (dict(box_dim=0), 'box_dim must be an int >= 1 .*got 0'),
])
def test_refuses_what_it_cannot_blend(kwargs, match):
    args = dict(in_features=5, out_features=12, alpha=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        CABLinear(**args)


def bbox_head_cfg(loss='softmax', reg_predictor_cfg=CAB, **kw):
    cfg = dict(
        type='Shared2FCBBoxHead',
        in_channels=CH,
        fc_out_channels=16,
        roi_feat_size=7,
        num_classes=C,
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0., 0., 0., 0.],
            target_stds=[0.1, 0.1, 0.2, 0.2]),
        reg_class_agnostic=False,
        reg_predictor_cfg=reg_predictor_cfg,
        loss_cls=LOSSES[loss],
        loss_bbox=dict(type='L1Loss', loss_weight=1.0))
    cfg.update(kw)
    return copy.deepcopy(cfg)


def test_class_agnostic_head_is_refused_at_build():
    with pytest.raises(ValueError, match='reg_class_agnostic=True'):
        MMDET_MODELS.build(bbox_head_cfg(reg_class_agnostic=True))


def _rois(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, CH, 7, 7, generator=g)
    xy = torch.rand(n, 2, generator=g) * 40
    wh = torch.rand(n, 2, generator=g) * 20 + 4
    rois = torch.cat([torch.zeros(n, 1), xy, xy + wh], 1)
    labels = torch.arange(n) % (C + 1)  # every class and background
    return feats, rois, labels


META = dict(img_shape=(96, 96), scale_factor=(1.0, 1.0))
TEST_CFG = ConfigDict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=50)


@pytest.mark.parametrize('loss', sorted(LOSSES))
def test_shared2fc_head_trains_predicts_and_folds(loss):
    """Every loss: both branches get gradients; a plain head loaded with
    the CAB checkpoint (the folded blend) predicts the same boxes."""
    torch.manual_seed(0)
    head = MMDET_MODELS.build(bbox_head_cfg(loss))
    head.init_weights()
    assert type(head.fc_reg) is CABLinear
    assert head.fc_reg.out_features == 4 * C and head.fc_reg.alpha == 0.3
    _randomize(head.fc_reg)
    feats, rois, labels = _rois()
    n = len(labels)
    cls_score, bbox_pred = head(feats)
    assert bbox_pred.shape == (n, 4 * C)
    losses = head.loss(cls_score, bbox_pred, rois, labels, torch.ones(n),
                       torch.randn(n, 4) * 0.1, torch.ones(n, 4))
    losses['loss_bbox'].backward()
    assert head.fc_reg.agnostic_weight.grad.abs().sum() > 0
    assert head.fc_reg.specific_weight.grad.abs().sum() > 0

    plain = MMDET_MODELS.build(
        bbox_head_cfg(loss, reg_predictor_cfg=dict(type='Linear')))
    plain.load_state_dict(fold_class_agnostic_branch(head.state_dict()))
    with torch.no_grad():
        outs = [h(feats) for h in (head, plain)]
        torch.testing.assert_close(outs[0][1], outs[1][1])
        dets = [
            h.predict_by_feat((rois, ), (o[0], ), (o[1], ), [META],
                              rcnn_test_cfg=TEST_CFG)[0]
            for h, o in zip((head, plain), outs)
        ]
    assert len(dets[0]) > 0
    torch.testing.assert_close(dets[0].bboxes, dets[1].bboxes)
    assert torch.equal(dets[0].labels, dets[1].labels)


def test_checkpoints_between_plain_and_cab_heads():
    feats, _, _ = _rois()
    plain = _randomize(MMDET_MODELS.build(
        bbox_head_cfg(reg_predictor_cfg=dict(type='Linear'))))
    cab = MMDET_MODELS.build(bbox_head_cfg())

    # plain -> CAB: agnostic branch = class mean, blend = plain regressor
    cab.load_state_dict(plain.state_dict())
    w = plain.fc_reg.weight.detach().view(C, 4, 16)
    torch.testing.assert_close(cab.fc_reg.agnostic_weight.detach(),
                               w.mean(0))
    torch.testing.assert_close(
        cab.fc_reg.agnostic_bias.detach(),
        plain.fc_reg.bias.detach().view(C, 4).mean(0))
    with torch.no_grad():
        torch.testing.assert_close(cab(feats)[1], plain(feats)[1])

    # CAB -> CAB (resume): both branches exactly
    again = MMDET_MODELS.build(bbox_head_cfg())
    again.load_state_dict(cab.state_dict())
    for k, v in cab.fc_reg.named_parameters():
        assert torch.equal(getattr(again.fc_reg, k), v), k

    # CAB -> plain, as mmengine loads (the branch keys are unexpected and
    # ignored): the folded regressor, back to the original up to rounding
    back = MMDET_MODELS.build(
        bbox_head_cfg(reg_predictor_cfg=dict(type='Linear')))
    load_state_dict(back, cab.state_dict(), strict=False)
    torch.testing.assert_close(back.fc_reg.weight, plain.fc_reg.weight)
    torch.testing.assert_close(back.fc_reg.bias, plain.fc_reg.bias)
    with pytest.raises(RuntimeError, match='agnostic_weight'):
        back.load_state_dict(cab.state_dict())  # strict: fold first

    # a class-agnostic checkpoint: W_0 = W_i = W, predictions unchanged
    agnostic = _randomize(MMDET_MODELS.build(
        bbox_head_cfg(reg_predictor_cfg=dict(type='Linear'),
                      reg_class_agnostic=True)))
    cab.load_state_dict(agnostic.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(cab(feats)[1],
                                   agnostic(feats)[1].repeat(1, C))


def test_wrong_shapes_are_named():
    cab = MMDET_MODELS.build(bbox_head_cfg())
    other = MMDET_MODELS.build(
        bbox_head_cfg(reg_predictor_cfg=dict(type='Linear'), num_classes=3))
    with pytest.raises(RuntimeError, match=r'size mismatch.*\(12, 16\)'):
        cab.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match='cannot fold'):
        fold_class_agnostic_branch({'fc_reg.agnostic_weight': torch.ones(1)})


def _rcnn_train_cfg(iou):
    return dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou,
                      neg_iou_thr=iou, min_pos_iou=iou,
                      match_low_quality=False, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=32, pos_fraction=0.25,
                     neg_pos_ub=-1, add_gt_as_proposals=True),
        pos_weight=-1,
        debug=False)


def cascade_cfg(reg_predictor_cfg=CAB):
    stage = bbox_head_cfg('seesaw', reg_predictor_cfg=reg_predictor_cfg)
    stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1]]
    return ConfigDict(
        type='CascadeRoIHead',
        num_stages=2,
        stage_loss_weights=[1, 0.5],
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=CH,
            featmap_strides=[4, 8, 16, 32]),
        bbox_head=[
            dict(stage, bbox_coder=dict(stage['bbox_coder'], target_stds=s))
            for s in stds
        ],
        train_cfg=[_rcnn_train_cfg(iou) for iou in (0.5, 0.6)],
        test_cfg=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=40))


def test_cascade_roi_head_trains_and_converts_both_ways():
    torch.manual_seed(0)
    cab = MMDET_MODELS.build(cascade_cfg())
    cab.init_weights()
    for h in cab.bbox_head:
        assert type(h.fc_reg) is CABLinear
        _randomize(h.fc_reg, seed=len(h.fc_reg.specific_weight))
    check_longtail_consistency(cab)  # accepted
    s = 64
    feats = tuple(
        torch.rand(1, CH, s // 2**(i + 2), s // 2**(i + 2))
        for i in range(4))
    samples = demo_mm_inputs(batch_size=1, image_shapes=[(3, s, s)],
                             num_items=[3], num_classes=C)['data_samples']
    proposals = demo_mm_proposals([(3, s, s)], 40)
    losses = cab.loss(feats, copy.deepcopy(proposals), samples)
    assert {'s0.loss_bbox', 's1.loss_bbox'} <= set(losses)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    for h in cab.bbox_head:
        assert h.fc_reg.agnostic_weight.grad.abs().sum() > 0
        assert h.fc_reg.specific_weight.grad.abs().sum() > 0

    def predict(head):
        head.eval()
        with torch.no_grad():
            return head.predict(feats, copy.deepcopy(proposals), samples,
                                rescale=False)[0]

    expected = predict(cab)
    assert len(expected) > 0
    # CAB -> plain: every stage's folded regressor, identical detections
    plain = MMDET_MODELS.build(cascade_cfg(dict(type='Linear')))
    plain.load_state_dict(fold_class_agnostic_branch(cab.state_dict()))
    got = predict(plain)
    torch.testing.assert_close(got.bboxes, expected.bboxes)
    torch.testing.assert_close(got.scores, expected.scores)
    # plain -> CAB: the same again
    back = MMDET_MODELS.build(cascade_cfg())
    back.load_state_dict(plain.state_dict())
    got = predict(back)
    torch.testing.assert_close(got.bboxes, expected.bboxes, atol=1e-4,
                               rtol=1e-5)
    assert torch.equal(got.labels, expected.labels)


def test_consistency_hook_refuses_misuse():
    head = MMDET_MODELS.build(bbox_head_cfg())
    check_longtail_consistency(head)
    head.reg_class_agnostic = True
    with pytest.raises(ValueError, match='already class-agnostic'):
        check_longtail_consistency(head)
    head = MMDET_MODELS.build(bbox_head_cfg())
    head.fc_cls = CABLinear(16, 8)
    with pytest.raises(ValueError, match='not the fc_reg of a bbox head'):
        check_longtail_consistency(head)
    head = MMDET_MODELS.build(bbox_head_cfg())
    head.fc_reg = CABLinear(16, 4 * (C + 1))
    with pytest.raises(ValueError, match='blends 6 class regressors'):
        check_longtail_consistency(head)


@pytest.fixture
def one_thread():
    """A model this small gains nothing from a second intra-op thread, and
    on a loaded machine two threads contend (measured: 5 s with one, 20-40
    s with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_light_mask_rcnn_trains_a_few_iterations(one_thread):
    """The CPU demo's light Mask R-CNN with CAB: real training steps move
    both branches, losses stay finite, the model predicts."""
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/demo/mask_rcnn_r18_light_synthetic.py'))
    model_cfg = cfg.model
    rh = model_cfg.roi_head
    rh.bbox_head.num_classes = rh.mask_head.num_classes = C
    rh.bbox_head.reg_predictor_cfg = dict(CAB)
    # a handful of detections keeps the mask pass of val_step short
    model_cfg.test_cfg.rcnn.update(max_per_img=10, topk_per_class=10)
    torch.manual_seed(0)
    model = MMDET_MODELS.build(model_cfg)
    model.init_weights()
    check_longtail_consistency(model, classes=[str(i) for i in range(C)])
    reg = model.roi_head.bbox_head.fc_reg
    assert type(reg) is CABLinear
    before = [p.detach().clone() for p in reg.parameters()]
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.02,
                                         momentum=0.9))
    data = demo_mm_inputs(batch_size=2, image_shapes=[(3, 64, 64)] * 2,
                          num_items=[4, 4], num_classes=C, with_mask=True)
    model.train()
    for _ in range(3):
        log = model.train_step(data, optim)
        assert torch.isfinite(log['loss']) and log['loss_bbox'] > 0
    for p, p0 in zip(reg.parameters(), before):
        assert not torch.equal(p.detach(), p0)
    model.eval()
    with torch.no_grad():
        out = model.val_step(data)
    assert len(out) == 2 and hasattr(out[0], 'pred_instances')
