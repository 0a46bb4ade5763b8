"""mmlongtail's sigmoid losses in mmdet's dense heads (RetinaNet, ATSS, FCOS):
train steps and predictions with EqualizedFocalLoss, FocalLoss and EQL, and
EFL's statistics against a backward hook on the heads' real classification
outputs over all FPN levels."""
import copy

import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

import mmlongtail  # noqa: F401

register_all_modules()

C = 4
IMG = 64
STRIDES = [8, 16, 32]
STATS = dict(
    num_images=100,
    categories=[
        dict(id=i + 1, name=f'c{i}', frequency=f, image_count=ic,
             instance_count=3 * ic)
        for i, (f, ic) in enumerate([('r', 1), ('c', 5), ('f', 60),
                                     ('f', 90)])
    ])
LOSSES = {
    'EqualizedFocalLoss':
    dict(type='mmlongtail.EqualizedFocalLoss', use_sigmoid=True,
         num_classes=C, dense_head=True),
    'FocalLoss':
    dict(type='mmlongtail.FocalLoss', use_sigmoid=True, num_classes=C,
         dense_head=True),
    'EQLLoss':
    dict(type='mmlongtail.EQLLoss', use_sigmoid=True, num_classes=C,
         category_stats=STATS, freq_thr=0.02, dense_head=True),
}
TEST_CFG = dict(nms_pre=100, min_bbox_size=0, score_thr=0.0,
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=20)


def retina(loss_cls):
    return dict(
        type='RetinaHead', num_classes=C, in_channels=8, feat_channels=8,
        stacked_convs=1,
        # three anchors per position: the loss sees (anchor, class) rows
        anchor_generator=dict(
            type='AnchorGenerator', octave_base_scale=4,
            scales_per_octave=1, ratios=[0.5, 1.0, 2.0], strides=STRIDES),
        loss_cls=loss_cls,
        train_cfg=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                          neg_iou_thr=0.4, min_pos_iou=0,
                          ignore_iof_thr=-1),
            sampler=dict(type='PseudoSampler'), allowed_border=-1,
            pos_weight=-1, debug=False),
        test_cfg=TEST_CFG)


def atss(loss_cls):
    return dict(
        type='ATSSHead', num_classes=C, in_channels=8, feat_channels=8,
        stacked_convs=1, norm_cfg=None,
        anchor_generator=dict(
            type='AnchorGenerator', octave_base_scale=8,
            scales_per_octave=1, ratios=[1.0], strides=STRIDES),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=loss_cls,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9),
                       allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=TEST_CFG)


def fcos(loss_cls):
    return dict(
        type='FCOSHead', num_classes=C, in_channels=8, feat_channels=8,
        stacked_convs=1, norm_cfg=None, strides=STRIDES,
        regress_ranges=((-1, 16), (16, 32), (32, 1e8)),
        loss_cls=loss_cls, test_cfg=TEST_CFG)


HEADS = {'RetinaHead': retina, 'ATSSHead': atss, 'FCOSHead': fcos}


def build_head(head, loss):
    cfg = HEADS[head](copy.deepcopy(LOSSES[loss]))
    torch.manual_seed(0)  # the head's weights, whatever ran before
    return MMDET_MODELS.build(ConfigDict(cfg))


def batch(seed, num_imgs=2):
    """Features of three levels and data samples with skewed labels (class
    0 frequent, class C - 1 absent)."""
    g = torch.Generator().manual_seed(seed)
    feats = tuple(
        torch.randn(num_imgs, 8, IMG // s, IMG // s, generator=g)
        for s in STRIDES)
    samples = []
    for _ in range(num_imgs):
        n = 3
        xy = torch.rand(n, 2, generator=g) * 30
        wh = torch.rand(n, 2, generator=g) * 24 + 8
        gt = InstanceData(
            bboxes=torch.cat([xy, (xy + wh).clamp(max=IMG)], 1),
            labels=torch.multinomial(
                torch.tensor([6., 2, 1, 0]), n, True, generator=g))
        sample = DetDataSample(
            metainfo=dict(img_shape=(IMG, IMG), pad_shape=(IMG, IMG),
                          ori_shape=(IMG, IMG), scale_factor=(1.0, 1.0)))
        sample.gt_instances = gt
        samples.append(sample)
    return feats, samples


@pytest.mark.parametrize('loss', sorted(LOSSES))
@pytest.mark.parametrize('head', sorted(HEADS))
def test_dense_head_trains_and_predicts(head, loss):
    model = build_head(head, loss)
    assert model.cls_out_channels == C  # C sigmoid outputs, no background
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for it in range(3):
        feats, samples = batch(it)
        losses = model.loss(feats, samples)
        total = sum(v if torch.is_tensor(v) else sum(v)
                    for k, v in losses.items() if 'loss' in k)
        assert torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        cls_w = model.retina_cls.weight if head == 'RetinaHead' else \
            model.atss_cls.weight if head == 'ATSSHead' else \
            model.conv_cls.weight
        assert cls_w.grad is not None and cls_w.grad.abs().sum() > 0
        opt.step()
    if loss == 'EqualizedFocalLoss':
        stats = model.loss_cls
        assert stats.pos_grad[:3].min() > 0 and stats.pos_grad[3] == 0
        assert stats.pos_neg[3] == 0  # the absent class: strongest focusing
    model.eval()
    feats, samples = batch(10)
    with torch.no_grad():
        before = copy.deepcopy(model.loss_cls.state_dict())
        results = model.predict(feats, samples, rescale=False)
        cls_scores = model(feats)[0]
    for k, v in model.loss_cls.state_dict().items():
        assert torch.equal(v, before[k])  # prediction leaves them alone
    assert len(results) == 2
    for res in results:
        assert len(res) > 0
        assert res.labels.min() >= 0 and res.labels.max() < C
        assert (res.scores >= 0).all() and (res.scores <= 1).all()
    # scores are sigmoid probabilities of the logits: none above the
    # largest sigmoid of image 0 (times centerness for ATSS/FCOS, which
    # only lowers it), and for RetinaHead each is the sigmoid of one of its
    # logits (the top logit's box may be filtered out, so not necessarily
    # the largest)
    best = max(s[0].sigmoid().max() for s in cls_scores)
    assert float(results[0].scores.max()) <= float(best) + 1e-6
    if head == 'RetinaHead':
        probs = torch.cat([s[0].reshape(-1) for s in cls_scores]).sigmoid()
        gap = (results[0].scores[:, None] - probs[None]).abs().min(1).values
        assert float(gap.max()) < 1e-6


@pytest.mark.parametrize('head', sorted(HEADS))
def test_efl_statistics_equal_a_backward_hook_on_the_classifier_outputs(
        head):
    """The gradient a hook on every level's classification output sees,
    summed per class over the positives and negatives of the labels the
    head gave its loss, is what EFL accumulates."""
    model = build_head(head, 'EqualizedFocalLoss')
    efl = model.loss_cls
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    exp_pos = torch.zeros(C)
    exp_neg = torch.zeros(C)
    calls = []
    efl.register_forward_pre_hook(
        lambda mod, args: calls.append(args[1].detach().clone()))
    for it in range(3):
        feats, samples = batch(20 + it)
        outs = model(feats)
        grads = {}
        for lvl, score in enumerate(outs[0]):
            score.register_hook(
                lambda g, lvl=lvl, grads=grads: grads.__setitem__(lvl, g))
        calls.clear()
        losses = model.loss_by_feat(
            *outs, [s.gt_instances for s in samples],
            [s.metainfo for s in samples])
        total = sum(v if torch.is_tensor(v) else sum(v)
                    for k, v in losses.items() if 'loss' in k)
        opt.zero_grad()
        total.backward()
        # (B, A * C, H, W) per level -> the loss's (anchor, class) rows
        grad = torch.cat([
            grads[lvl].permute(0, 2, 3, 1).reshape(-1, C)
            for lvl in range(len(STRIDES))
        ]).abs()
        labels = torch.cat(calls)
        assert len(labels) == len(grad)
        target = torch.nn.functional.one_hot(labels, C + 1)[:, :C].float()
        exp_pos += (grad * target).sum(0)
        exp_neg += (grad * (1 - target)).sum(0)
        torch.testing.assert_close(efl.pos_grad, exp_pos, rtol=1e-5,
                                   atol=1e-9)
        torch.testing.assert_close(efl.neg_grad, exp_neg, rtol=1e-5,
                                   atol=1e-9)
        torch.testing.assert_close(
            efl.pos_neg, (exp_pos / (exp_neg + 1e-10)).clamp(0, 1),
            rtol=1e-5, atol=1e-9)
        opt.step()
    expected_calls = 1 if head == 'FCOSHead' else len(STRIDES)
    assert len(calls) == expected_calls
    assert exp_pos.sum() > 0


# ------------------------------------------- LongTailConsistencyHook rules --
REFUSED = {
    # loss config -> what the message must say
    'SeesawLoss': (dict(type='mmlongtail.SeesawLoss', num_classes=C),
                   r'SeesawLoss lays out C \+ 2 .*EqualizedFocalLoss'),
    'EQLv2Loss': (dict(type='mmlongtail.EQLv2Loss', num_classes=C),
                  r'EQLv2Loss lays out C \+ 1 .*EqualizedFocalLoss'),
    'GroupSoftmaxLoss': (dict(type='mmlongtail.GroupSoftmaxLoss',
                              num_classes=C, category_stats=STATS),
                         r'GroupSoftmaxLoss lays out C \+ .*'
                         'EqualizedFocalLoss'),
}


def _check(model):
    from mmlongtail.engine.hooks.longtail_consistency_hook import \
        check_longtail_consistency
    check_longtail_consistency(model)


@pytest.mark.parametrize('loss', sorted(LOSSES))
@pytest.mark.parametrize('head', sorted(HEADS))
def test_hook_accepts_the_combinations_that_work(head, loss):
    _check(build_head(head, loss))


@pytest.mark.parametrize('loss', sorted(REFUSED))
@pytest.mark.parametrize('head', sorted(HEADS))
def test_hook_refuses_layouts_a_dense_head_cannot_hold(head, loss):
    cfg, match = REFUSED[loss]
    model = MMDET_MODELS.build(ConfigDict(HEADS[head](copy.deepcopy(cfg))))
    with pytest.raises(ValueError, match=match):
        _check(model)


@pytest.mark.parametrize('head', sorted(HEADS))
def test_hook_refuses_a_sigmoid_loss_without_dense_head(head):
    """With the R-CNN layout a dense head predicts the background column as
    class C. dense_head=False in a dense head is refused at build; a loss
    put in that state anyway is refused by the hook before it predicts."""
    cfg = dict(LOSSES['FocalLoss'], dense_head=False)
    with pytest.raises(ValueError, match=r'FocalLoss was built with '
                       rf'dense_head=False.*{head}, a dense head.*background '
                       rf'column as class {C}: drop dense_head'):
        MMDET_MODELS.build(ConfigDict(HEADS[head](copy.deepcopy(cfg))))
    cfg.pop('dense_head')
    model = MMDET_MODELS.build(ConfigDict(HEADS[head](cfg)))
    assert model.loss_cls.dense_head  # chosen from the head
    model.loss_cls._use_dense_layout(False)  # the state the build refuses
    with pytest.raises(ValueError, match=r'set dense_head=True.*FocalLoss.*'
                       rf'background column as class {C}'):
        _check(model)
    # what it prevents: with the focal prior (p = 0.01 everywhere) the
    # background column, 1 - max p = 0.99, is predicted as class C
    model.init_weights()
    model.eval()
    feats, samples = batch(3)
    with torch.no_grad():
        results = model.predict(feats, samples, rescale=False)
    assert all((r.labels == C).any() for r in results)


def test_hook_refuses_untested_dense_heads_and_dense_losses_in_roi_heads():
    from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
    fovea = MMDET_MODELS.build(ConfigDict(
        type='FoveaHead', num_classes=C, in_channels=8, feat_channels=8,
        stacked_convs=1, strides=STRIDES, base_edge_list=[16, 32, 64],
        scale_ranges=((1, 32), (16, 64), (32, 128)),
        loss_cls=copy.deepcopy(LOSSES['EqualizedFocalLoss'])))
    with pytest.raises(ValueError, match=r'FoveaHead.*tested in the dense '
                       'heads RetinaHead, ATSSHead, FCOSHead'):
        _check(fovea)
    with pytest.raises(ValueError, match='EqualizedFocalLoss was built with '
                       'dense_head=True.*Shared2FCBBoxHead, not a dense '
                       'head.*drop dense_head'):
        Shared2FCBBoxHead(
            in_channels=4, fc_out_channels=8, roi_feat_size=3,
            num_classes=C,
            loss_cls=copy.deepcopy(LOSSES['EqualizedFocalLoss']))
    roi = Shared2FCBBoxHead(
        in_channels=4, fc_out_channels=8, roi_feat_size=3, num_classes=C,
        loss_cls=dict(LOSSES['EqualizedFocalLoss'], dense_head=None))
    roi.loss_cls._use_dense_layout(True)  # the state the build refuses
    with pytest.raises(ValueError, match='Shared2FCBBoxHead.*not a dense '
                       'head.*dense_head=True.*drop dense_head'):
        _check(roi)
    # EFL as an R-CNN classifier: the sigmoid protocol, C-channel fc_cls
    roi = Shared2FCBBoxHead(
        in_channels=4, fc_out_channels=8, roi_feat_size=3, num_classes=C,
        loss_cls=dict(LOSSES['EqualizedFocalLoss'], dense_head=False))
    assert roi.fc_cls.out_features == C
    _check(roi)
