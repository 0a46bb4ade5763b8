"""mmlongtail.FocalLoss: hand-derived values, identity with mmdet 3.3.0's
FocalLoss(use_sigmoid=True) (loss and gradient: bit for bit with
``lean=False``, to float rounding with the lean kernel, whose float32 values
are the more accurate ones), RoI and dense-head use."""
import math

import pytest
import torch
from mmdet.models.losses import FocalLoss as MMDetFocalLoss

import mmlongtail  # noqa: F401
from mmlongtail.models.losses import FocalLoss


def test_hand_derived_values():
    # logits 0 -> p = 0.5; positive: alpha (1-p)^2 ln 2, negative:
    # (1-alpha) p^2 ln 2 (Lin et al. 2017, Eq. 5)
    x = torch.zeros(2, 2)
    y = torch.tensor([0, 2])  # class 0; background (all-zero target)
    loss = FocalLoss(reduction='none')(x, y)
    pos = 0.25 * 0.25 * math.log(2)
    neg = 0.75 * 0.25 * math.log(2)
    expected = torch.tensor([[pos, neg], [neg, neg]])
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(FocalLoss()(x, y), expected.mean())
    # a confident correct positive is down-weighted by (1-p)^gamma
    x = torch.tensor([[3.0]])
    p = 1 / (1 + math.exp(-3.0))
    got = FocalLoss(reduction='sum')(x, torch.tensor([0]))
    assert got.item() == pytest.approx(0.25 * (1 - p)**2 * -math.log(p),
                                       rel=1e-6)


def _case(n=40, c=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=g) * 3).requires_grad_(True)
    y = torch.randint(0, c + 1, (n, ), generator=g)
    w = torch.rand(n, generator=g)
    return x, y, w


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('weighted', [False, True])
@pytest.mark.parametrize('avg_factor', [None, 13.0])
@pytest.mark.parametrize('lean', [False, True])
def test_identical_to_mmdet(reduction, weighted, avg_factor, lean):
    if reduction == 'sum' and avg_factor is not None:
        pytest.skip('mmdet refuses avg_factor with sum')
    x, y, w = _case()
    w = w if weighted else None
    kw = dict(gamma=2.0, alpha=0.25, loss_weight=1.7)
    ours = FocalLoss(lean=lean, **kw)(
        x, y, w, avg_factor, reduction_override=reduction)
    ref = MMDetFocalLoss(use_sigmoid=True, **kw)(
        x, y, w, avg_factor, reduction_override=reduction)
    g_ours, = torch.autograd.grad(ours.sum(), x)
    g_ref, = torch.autograd.grad(ref.sum(), x)
    if lean:
        # mmdet's 1 - sigmoid(x) loses digits where the lean kernel's
        # sigmoid(-x) does not: float32 rounding apart
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-7)
    else:
        assert torch.equal(ours, ref)
        assert torch.equal(g_ours, g_ref)


def test_identical_to_mmdet_other_params_and_targets():
    x, y, w = _case(seed=1)
    kw = dict(gamma=1.5, alpha=0.4)
    # one-hot / soft targets, (N, C) and flattened (N * C,) weights
    onehot = torch.nn.functional.one_hot(y, 8)[:, :7].float()
    wc = torch.rand(40, 7)
    for target, weight in ((onehot, None), (onehot, wc), (y, wc.flatten())):
        ours = FocalLoss(**kw)(x, target, weight, avg_factor=5.0)
        ref = MMDetFocalLoss(**kw)(x, target, weight, avg_factor=5.0)
        if target is y:  # labels: the lean kernel, float rounding apart
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=0)
        else:  # (N, C) targets: the autograd formula, bit for bit
            assert torch.equal(ours, ref)


def test_background_label_is_all_zero_target():
    x, _, _ = _case()
    y_bg = torch.full((40, ), 7)
    zeros = torch.zeros(40, 7)
    torch.testing.assert_close(FocalLoss()(x, y_bg), FocalLoss()(x, zeros))


def test_bad_inputs():
    x, y, _ = _case()
    with pytest.raises(ValueError, match=r'\[0, 7\]'):
        FocalLoss()(x, torch.full((40, ), 8))
    with pytest.raises(ValueError, match='weight'):
        FocalLoss()(x, y, torch.ones(3))
    with pytest.raises(ValueError, match='use_sigmoid'):
        FocalLoss(use_sigmoid=False)


def test_classifier_protocol():
    loss = FocalLoss(num_classes=7)
    assert loss.get_cls_channels(7) == 7
    with pytest.raises(ValueError, match='num_classes=7.*num_classes=8'):
        loss.get_cls_channels(8)
    x = torch.tensor([[4.0, -1.0], [-3.0, -2.0]])
    scores = FocalLoss().get_activation(x)
    assert scores.shape == (2, 3)
    torch.testing.assert_close(scores[:, :2], x.sigmoid())
    # background column: 1 - best class probability
    torch.testing.assert_close(scores[:, 2], 1 - x.sigmoid().max(1).values)
    acc = FocalLoss().get_accuracy(x, torch.tensor([0, 2]))['acc']
    assert acc.item() == pytest.approx(100.0)


def test_dense_head_matches_mmdet():
    """RetinaHead with our focal loss == with mmdet's, same weights."""
    from mmdet.models.dense_heads import RetinaHead
    from mmengine.config import ConfigDict
    from mmengine.structures import InstanceData

    def head(loss_type):
        return RetinaHead(
            num_classes=3,
            in_channels=8,
            feat_channels=8,
            stacked_convs=1,
            anchor_generator=dict(
                type='AnchorGenerator',
                octave_base_scale=4,
                scales_per_octave=1,
                ratios=[1.0],
                strides=[8, 16]),
            loss_cls=dict(
                type=loss_type, use_sigmoid=True, gamma=2.0, alpha=0.25),
            train_cfg=ConfigDict(
                assigner=dict(
                    type='MaxIoUAssigner',
                    pos_iou_thr=0.5,
                    neg_iou_thr=0.4,
                    min_pos_iou=0,
                    ignore_iof_thr=-1),
                sampler=dict(type='PseudoSampler'),
                allowed_border=-1,
                pos_weight=-1,
                debug=False))

    torch.manual_seed(0)
    ours, ref = head('mmlongtail.FocalLoss'), head('FocalLoss')
    ref.load_state_dict(ours.state_dict())
    feats = [torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4)]
    gt = InstanceData(
        bboxes=torch.tensor([[4., 4., 30., 40.], [20., 10., 60., 50.]]),
        labels=torch.tensor([0, 2]))
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=1)]
    losses = [
        h.loss_by_feat(*h(feats), [gt], metas)['loss_cls'] for h in (ours,
                                                                     ref)
    ]
    for a, b in zip(*losses):
        assert torch.equal(a, b)
