"""APA on the box classifier (Alexandridis et al., ECCV 2024): the activation
against values and gradients printed from the official ``Unified`` module,
its sigmoid / Gumbel limits, the loss and its parameters' gradients against
the BCE written out, the Gumbel limit against GOL, a real
Shared2FCBBoxHead train step and predict scored with the learned APA, a
checkpoint round trip, bf16 autocast, and the consistency hook."""
import copy
import math

import pytest
import torch
import torch.nn as nn
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead

import mmlongtail  # noqa: F401
from mmlongtail.models.losses import APALoss, GumbelLoss
from mmlongtail.models.losses.apa_loss import apa_activation

C = 5
STATS = dict(
    num_images=200,
    categories=[
        dict(id=i + 1, name=f'c{i}', frequency=f, image_count=ic,
             instance_count=ic)
        for i, (f, ic) in enumerate([('r', 2), ('c', 40), ('f', 150),
                                     ('f', 190), ('r', 5)])
    ])

Z = [-6., -1.5, 0., 1., 8.]
G = [0.5, -1., 2., 1., -0.25]
#: (lambda, kappa, APA(Z), d(sum G * APA)/dZ, .../dlambda, .../dkappa),
#: printed in float64 from the official module ``Unified``
#: (kostas1515/AGLU, mmdetection_v3.2/mmdet/models/backbones/se_resnet.py)
#: with its parameters set to (lambda, kappa). The last case has lambda
#: under the official 1e-4 floor: clamped, no lambda gradient.
OFFICIAL = [
    (0.3, 0.7,
     [3.91017086274e-05, 0.126978474915, 0.417050672314, 0.629453990643,
      0.996311007012],
     [4.34469529945e-05, -0.136759147414, 0.449131493261, 0.190434263795,
      -0.000644024452157],
     0.13542517246, 0.557371582258),
    (0.05, -0.4,
     [0.913462614412, 0.58192322499, 0.376889482873, 0.237210617057,
      1.11442922334e-07],
     [-0.016498655544, 0.124334678946, -0.287153891713, -0.131725123221,
      1.22785606176e-07],
     0.510193832945, 0.548085565229),
    (5e-05, 1.2,
     [0.0, 0.00236301179234, 0.367897834377, 0.739937410989,
      0.999932273557],
     [0.0, -0.0171440943848, 0.882866515854, 0.26742978361,
      -2.03172447017e-05],
     0.0, 0.244152822692),
]


@pytest.mark.parametrize('case', OFFICIAL, ids=lambda c: f'{c[0]}-{c[1]}')
def test_activation_equals_official_values_and_gradients(case):
    lam, kap, p_ref, dz_ref, dl_ref, dk_ref = case
    z = torch.tensor([Z], requires_grad=True)
    lp = torch.tensor([lam], requires_grad=True)
    kp = torch.tensor([kap], requires_grad=True)
    p = apa_activation(z, lp, kp)
    assert p.dtype == torch.float32
    (p * torch.tensor([G])).sum().backward()
    tol = dict(rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(p[0].double(), torch.tensor(p_ref).double(),
                               **tol)
    torch.testing.assert_close(z.grad[0].double(),
                               torch.tensor(dz_ref).double(), **tol)
    assert lp.grad.item() == pytest.approx(dl_ref, rel=1e-5, abs=1e-7)
    assert kp.grad.item() == pytest.approx(dk_ref, rel=1e-5, abs=1e-7)


def test_sigmoid_and_gumbel_limits():
    z = torch.linspace(-3, 6, 19)
    one = torch.ones(1)
    torch.testing.assert_close(apa_activation(z, one, one), z.sigmoid())
    # (1 + l e^-z)^(-1/l) -> exp(-e^-z) as l -> 0 (here the 1e-4 floor)
    gumbel = torch.exp(-torch.exp(-z))
    torch.testing.assert_close(
        apa_activation(z, torch.tensor([1e-4]), one), gumbel, rtol=2e-3,
        atol=1e-6)


def test_loss_and_parameter_gradients_against_the_bce_written_out():
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(6, C, generator=g) * 3).double()
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    loss = APALoss(C, drop_loss=False, init_lambda=0.4, init_kappa=0.9)
    zz = z.float().requires_grad_()
    out = loss(zz, labels)
    out.backward()

    # float64 by hand: clamp to [-4, 10], APA, BCE, sum over classes,
    # mean over RoIs
    lam = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    kap = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    zd = z.clone().requires_grad_()
    p = (lam * torch.exp(-kap * zd.clamp(-4, 10)) + 1)**(-1 / lam)
    t = torch.nn.functional.one_hot(labels, C + 1)[:, :C].double()
    ref = -(t * p.log() + (1 - t) * (1 - p).log()).sum() / 6
    ref.backward()
    assert out.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(zz.grad.double(), zd.grad, rtol=1e-4,
                               atol=1e-6)
    assert loss.lambda_param.grad.item() == pytest.approx(
        lam.grad.item(), rel=1e-4)
    assert loss.kappa_param.grad.item() == pytest.approx(
        kap.grad.item(), rel=1e-4)
    # no gradient through the clamp
    outside = (z < -4) | (z > 10)
    assert outside.any() and (zz.grad[outside] == 0).all()


def test_per_class_parameters_and_plain_form():
    loss = APALoss(C, drop_loss=False, per_class=True, logit_clamp=None,
                   init_lambda=1.0, init_kappa=1.0)
    assert loss.lambda_param.shape == (C, ) == loss.kappa_param.shape
    z = torch.randn(7, C) * 3
    labels = torch.randint(0, C + 1, (7, ))
    # lambda = kappa = 1 and no clamp: plain sigmoid BCE (up to float32 BCE
    # on probabilities, as GOL computes it)
    t = torch.nn.functional.one_hot(labels, C + 1)[:, :C].float()
    ref = torch.nn.functional.binary_cross_entropy_with_logits(
        z, t, reduction='sum') / 7
    assert loss(z, labels).item() == pytest.approx(ref.item(), rel=1e-4)
    with torch.no_grad():
        loss.kappa_param[2] = 2.0
    p = loss.get_activation(z)
    torch.testing.assert_close(p[:, 2], torch.sigmoid(2 * z[:, 2]))
    torch.testing.assert_close(p[:, 0], torch.sigmoid(z[:, 0]))


def test_gumbel_limit_with_droploss_is_gol():
    """APA at lambda = 1e-4, kappa = 1 with DropLoss trains as GOL (same
    draws, same clamp)."""
    z = torch.randn(16, C) * 2
    labels = torch.randint(0, C + 1, (16, ))
    apa = APALoss(C, category_stats=STATS, lambda_=0.05, init_lambda=1e-4)
    gol = GumbelLoss(C, category_stats=STATS, lambda_=0.05)
    torch.manual_seed(3)
    a = apa(z, labels)
    torch.manual_seed(3)
    b = gol(z, labels)
    assert a.item() == pytest.approx(b.item(), rel=2e-3)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match='category_stats'):
        APALoss(C)
    with pytest.raises(ValueError, match='init_lambda'):
        APALoss(C, drop_loss=False, init_lambda=0.0)
    with pytest.raises(ValueError, match='init_lambda must be finite'):
        APALoss(C, drop_loss=False, init_lambda=float('inf'))
    with pytest.raises(ValueError, match='logit_clamp'):
        APALoss(C, drop_loss=False, logit_clamp=(3, -3))


def _head(**loss_kw):
    return Shared2FCBBoxHead(
        in_channels=4, fc_out_channels=16, roi_feat_size=3, num_classes=C,
        loss_cls=dict(type='mmlongtail.APALoss', num_classes=C,
                      category_stats=STATS, lambda_=0.05, **loss_kw),
        init_cfg=dict(type='Constant', val=0.001, bias=-2,
                      override=dict(name='fc_cls')))


def _batch(n=24):
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(n, 4, 3, 3, generator=g)
    xy = torch.rand(n, 2, generator=g) * 40
    rois = torch.cat([torch.zeros(n, 1), xy, xy + 8], 1)
    labels = torch.randint(0, C + 1, (n, ), generator=g)
    labels[:C + 1] = torch.arange(C + 1)
    return feats, rois, labels


def test_shared2fc_train_steps_learn_apa_and_predict_scores_with_it():
    torch.manual_seed(0)
    head = _head(init_lambda=0.5, init_kappa=1.0)
    head.init_weights()
    names = [n for n, _ in head.named_parameters()]
    assert 'loss_cls.lambda_param' in names and 'loss_cls.kappa_param' in names
    feats, rois, labels = _batch()
    n = len(labels)
    opt = torch.optim.SGD(head.parameters(), lr=0.05)
    for _ in range(3):
        cls_score, bbox_pred = head(feats)
        losses = head.loss(cls_score, bbox_pred, rois, labels, torch.ones(n),
                           torch.zeros(n, 4), torch.ones(n, 4))
        assert torch.isfinite(losses['loss_cls'])
        opt.zero_grad()
        (losses['loss_cls'] + losses['loss_bbox']).backward()
        assert head.loss_cls.lambda_param.grad.abs().item() > 0
        assert head.loss_cls.kappa_param.grad.abs().item() > 0
        opt.step()
    lam, kap = head.loss_cls.lambda_param, head.loss_cls.kappa_param
    assert lam.item() != 0.5 and kap.item() != 1.0
    with torch.no_grad():
        cls_score, bbox_pred = head(feats)
        res = head.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ),
                                   [dict(img_shape=(64, 64))],
                                   rcnn_test_cfg=None)[0]
        p = (lam * torch.exp(-kap * cls_score) + 1)**(-1 / lam)
    assert res.scores.shape == (n, C + 1)
    torch.testing.assert_close(res.scores[:, :C], p)
    torch.testing.assert_close(res.scores[:, C], 1 - p.max(1).values)


def test_checkpoint_round_trip_of_the_parameters():
    head = _head(per_class=True)
    with torch.no_grad():
        head.loss_cls.lambda_param.copy_(torch.linspace(0.1, 0.9, C))
        head.loss_cls.kappa_param.copy_(torch.linspace(-1, 2, C))
    state = copy.deepcopy(head.state_dict())
    assert 'loss_cls.lambda_param' in state
    assert 'loss_cls.rare_mask' not in state  # derived, not saved
    fresh = _head(per_class=True)
    fresh.load_state_dict(state)
    for name in ('lambda_param', 'kappa_param'):
        assert torch.equal(getattr(fresh.loss_cls, name),
                           getattr(head.loss_cls, name))
    z = torch.randn(4, C)
    torch.testing.assert_close(fresh.loss_cls.get_activation(z),
                               head.loss_cls.get_activation(z))


def test_bf16_autocast_forward_is_finite():
    loss = APALoss(C, category_stats=STATS, lambda_=0.05)
    z = (torch.randn(8, C) * 20).requires_grad_()
    labels = torch.arange(8) % (C + 1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = loss(z.bfloat16(), labels)
        scores = loss.get_activation(z.bfloat16())
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert torch.isfinite(scores).all()
    out.backward()
    assert torch.isfinite(loss.lambda_param.grad).all()
    assert math.isfinite(z.grad.abs().sum().item())


def test_consistency_hook_accepts_rcnn_and_refuses_dense_heads():
    from mmdet.models.dense_heads import RetinaHead

    from mmlongtail.engine.hooks.longtail_consistency_hook import \
        check_longtail_consistency
    model = nn.Module()
    model.bbox_head = _head()
    check_longtail_consistency(model, classes=[f'c{i}' for i in range(C)])
    dense = nn.Module()
    dense.bbox_head = RetinaHead(
        num_classes=C, in_channels=8, feat_channels=8, stacked_convs=1,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                              scales_per_octave=1, ratios=[1.0],
                              strides=[8]),
        loss_cls=dict(type='mmlongtail.APALoss', num_classes=C,
                      drop_loss=False))
    with pytest.raises(ValueError, match='never ask the loss'):
        check_longtail_consistency(dense)
