"""NorCal and logit adjustment: hand-derived 3-class probabilities in every
mode (softmax C + 1, Seesaw C + 2, sigmoid), the official predict_probs
formula written out, refusals, and through real RoI heads' predict (single
and Cascade) and a checkpoint loaded from disk."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.testing import demo_mm_inputs, demo_mm_proposals
from mmdet.utils import register_all_modules
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope

import mmlongtail  # noqa: F401
from mmlongtail.models.losses.protocol import loss_layout
from mmlongtail.models.scorers.calibration import (LogitAdjustment, NorCal,
                                                   calibrate_softmax,
                                                   norcal_weights)

register_all_modules()

C = 3
#: image counts 1, 4, 16: gamma = 0.5 gives a = (1, 1/2, 1/4)
STATS = dict(num_images=20, categories=[
    dict(id=j + 1, name=f'c{j}', frequency='r', image_count=n,
         instance_count=n) for j, n in enumerate((1, 4, 16))])
LN2 = math.log(2)


def _layout(loss):
    with DefaultScope.overwrite_default_scope('mmdet'):
        return loss_layout(dict(loss), C)


CE = _layout(dict(type='CrossEntropyLoss'))
SEESAW = _layout(dict(type='mmlongtail.SeesawLoss', num_classes=C))
SIGMOID = _layout(dict(type='mmlongtail.FocalLoss', num_classes=C))
EQLV2 = _layout(dict(type='mmlongtail.EQLv2Loss', num_classes=C))

# softmax head: e^z = (2, 4, 8 | bg 2)
Z = torch.tensor([[LN2, 2 * LN2, 3 * LN2, LN2]], dtype=torch.float64)


def _t(*v):
    return torch.tensor([v], dtype=torch.float64)


def _norcal(mode='exps', renorm=True, **kw):
    kw = kw or dict(gamma=0.5)
    return NorCal(category_stats=STATS, mode=mode, renorm=renorm, **kw)


# --------------------------------------------------- hand-derived values --
@pytest.mark.parametrize('mode,renorm,want', [
    # a e^z = (2, 2, 2), bg 2
    ('exps', True, _t(.25, .25, .25, .25)),
    ('exps', False, _t(2, 2, 2, 2)),
    # softmax (2, 4, 8, 2) / 16, times a
    ('probs', True, _t(.25, .25, .25, .25)),
    ('probs', False, _t(1 / 8, 1 / 8, 1 / 8, 1 / 8)),
    # logits (ln 2, ln 4 / 2, ln 8 / 4, ln 2): e = (2, 2, 2^.75, 2)
    ('logits', True, _t(2, 2, 2**.75, 2) / (6 + 2**.75)),
    ('logits', False, _t(2, 2, 2**.75, 2) / (6 + 2**.75)),
])
def test_softmax_head_by_hand(mode, renorm, want):
    got = _norcal(mode, renorm)(Z, F.softmax(Z, -1), CE)
    torch.testing.assert_close(got, want)


def test_class_balanced_variant_by_hand():
    # beta = 1/2: a = (1/2) / (1 - 2^-N) = (1, 8/15, 32768/65535)
    a = norcal_weights([1, 4, 16], beta=0.5)
    torch.testing.assert_close(
        a, torch.tensor([1, 8 / 15, 32768 / 65535], dtype=torch.float64))
    got = _norcal('exps', beta=0.5)(Z, F.softmax(Z, -1), CE)
    e = _t(2, 32 / 15, 8 * 32768 / 65535, 2)
    torch.testing.assert_close(got, e / e.sum())


def test_logit_adjustment_by_hand():
    # pi = (1, 4, 16) / 21; tau = 1: a = 1 / pi = (21, 21/4, 21/16)
    la = LogitAdjustment(category_stats=STATS, tau=1.0)
    e = _t(42, 21, 10.5, 2)
    torch.testing.assert_close(la(Z, F.softmax(Z, -1), CE), e / e.sum())
    # it is z_c - tau log pi_c, background unadjusted
    pi = torch.tensor([1, 4, 16], dtype=torch.float64) / 21
    adj = torch.cat([Z[:, :C] - pi.log(), Z[:, C:]], 1)
    torch.testing.assert_close(la(Z, F.softmax(Z, -1), CE),
                               F.softmax(adj, -1))


# Seesaw: class logits as Z, objectness logits (ln 3, 0): P(fg) = 3/4
ZS = torch.tensor([[LN2, 2 * LN2, 3 * LN2, math.log(3), 0.]],
                  dtype=torch.float64)


@pytest.mark.parametrize('mode,renorm,want', [
    ('exps', True, _t(.25, .25, .25, .25)),
    ('probs', True, _t(.25, .25, .25, .25)),
    # without renorm: the class part q a (probs) or e^z a (exps), times fg
    ('probs', False, _t(.75 / 7, .75 / 7, .75 / 7, .25)),
    ('exps', False, _t(1.5, 1.5, 1.5, .25)),
    ('logits', True, torch.cat([_t(2, 2, 2**.75) / (4 + 2**.75) * .75,
                                _t(.25)], 1)),
])
def test_seesaw_head_by_hand(mode, renorm, want):
    from mmlongtail.models.losses.seesaw_loss import seesaw_activation
    got = _norcal(mode, renorm)(ZS, seesaw_activation(ZS), SEESAW)
    torch.testing.assert_close(got, want)


def test_seesaw_logit_adjustment_keeps_objectness():
    from mmlongtail.models.losses.seesaw_loss import seesaw_activation
    la = LogitAdjustment(category_stats=STATS, tau=1.0)
    got = la(ZS, seesaw_activation(ZS), SEESAW)
    torch.testing.assert_close(
        got, torch.cat([_t(42, 21, 10.5) / 73.5 * .75, _t(.25)], 1))


# sigmoid head: s = sigmoid(0, ln 3, ln 7) = (1/2, 3/4, 7/8)
ZB = torch.tensor([[0., math.log(3), math.log(7)]], dtype=torch.float64)
SB = torch.cat([torch.sigmoid(ZB), 1 - torch.sigmoid(ZB).max(1, True)[0]], 1)


@pytest.mark.parametrize('mode,renorm,want', [
    # a s / (a s + 1 - s) = sigmoid(z + log a): (1/2, 3/5, 7/11)
    ('exps', True, _t(.5, .6, 7 / 11, 1 / 8)),
    ('probs', True, _t(.5, .6, 7 / 11, 1 / 8)),
    ('probs', False, _t(.5, 3 / 8, 7 / 32, 1 / 8)),
    ('logits', True,
     _t(.5, 3**.5 / (1 + 3**.5), 7**.25 / (1 + 7**.25), 1 / 8)),
])
def test_sigmoid_head_by_hand(mode, renorm, want):
    torch.testing.assert_close(_norcal(mode, renorm)(ZB, SB, SIGMOID), want)


def test_sigmoid_with_objectness_calibrates_class_scores():
    # EQLv2 (C + 1 sigmoid rows): the class columns are the class scores
    z = torch.cat([ZB, torch.zeros(1, 1, dtype=torch.float64)], 1)
    loss = mmlongtail.models.losses.EQLv2Loss(num_classes=C)
    scores = loss.get_activation(z).double()
    got = _norcal('probs')(z, scores, EQLV2)
    s, a = scores[:, :C], torch.tensor([1, .5, .25], dtype=torch.float64)
    torch.testing.assert_close(got[:, :C], a * s / (a * s + 1 - s))
    assert torch.equal(got[:, C:], scores[:, C:])
    with pytest.raises(ValueError, match="'logits' needs plain sigmoid"):
        _norcal('logits')(z, scores, EQLV2)


# -------------------------------------------------- the official formula --
def _official_predict_probs(logits, freqs, gamma, mode, renorm, cb=False):
    """tydpan/NorCal CalibrationFastRCNNOutputLayers.predict_probs, the
    formula written out (background last)."""
    f = torch.as_tensor(freqs, dtype=logits.dtype).view(1, -1)
    w = (1 - gamma) / (1 - gamma**f) if cb else 1 / f**gamma
    s = logits.clone()
    if mode == 'logits':
        s[:, :-1] = s[:, :-1] * w
        p = F.softmax(s, dim=-1)
    elif mode == 'probs':
        p = F.softmax(s, dim=-1)
        p[:, :-1] = p[:, :-1] * w
    else:
        p = torch.exp(s)
        p[:, :-1] = p[:, :-1] * w
    return p / p.sum(1, keepdim=True) if renorm else p


@pytest.mark.parametrize('mode', ['exps', 'probs', 'logits'])
@pytest.mark.parametrize('renorm', [True, False])
@pytest.mark.parametrize('cb', [False, True])
def test_equals_official_formula(mode, renorm, cb):
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(1, 3000, (50, ), generator=g)
    logits = torch.randn(64, 51, generator=g, dtype=torch.float64) * 3
    par = 0.999 if cb else 0.7
    ref = _official_predict_probs(logits, counts, par, mode, renorm, cb)
    a = norcal_weights(counts, beta=par) if cb else norcal_weights(
        counts, gamma=par)
    torch.testing.assert_close(
        calibrate_softmax(logits, a, mode, renorm), ref)


# ------------------------------------------------------------- refusals --
def test_refusals():
    with pytest.raises(ValueError, match='exactly one of gamma'):
        NorCal(category_stats=STATS)
    with pytest.raises(ValueError, match='gamma=0 leaves every score'):
        NorCal(category_stats=STATS, gamma=0)
    with pytest.raises(ValueError, match='beta must lie in'):
        NorCal(category_stats=STATS, beta=1.0)
    with pytest.raises(ValueError, match='mode'):
        NorCal(category_stats=STATS, gamma=1, mode='scores')
    with pytest.raises(ValueError, match='needs category_stats'):
        NorCal(gamma=1.0)
    with pytest.raises(ValueError, match='tau must be a non-zero'):
        LogitAdjustment(category_stats=STATS, tau=0)
    stats = copy.deepcopy(STATS)
    stats['categories'][1]['image_count'] = 0
    with pytest.raises(ValueError, match=r'classes \[1\] have no training'):
        NorCal(category_stats=stats, gamma=1.0)
    bags = _layout(dict(type='mmlongtail.GroupSoftmaxLoss', num_classes=C,
                        category_stats=STATS))
    z = torch.zeros(2, bags.num_outputs)
    with pytest.raises(ValueError, match='GroupSoftmaxLoss.*group softmax'):
        _norcal()(z, torch.full((2, C + 1), .25), bags)
    with DefaultScope.overwrite_default_scope('mmdet'):
        four = loss_layout(dict(type='CrossEntropyLoss'), 4)
    with pytest.raises(ValueError, match='num_classes=4'):
        _norcal()(torch.zeros(1, 5), torch.full((1, 5), .2), four)


# ------------------------------------------------- through real RoI heads --
EXTRACTOR = dict(
    type='SingleRoIExtractor',
    roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
    out_channels=8, featmap_strides=[4])


def _box_head(loss_cls, stds=(0.1, 0.1, 0.2, 0.2), agnostic=False):
    return dict(
        type='Shared2FCBBoxHead', in_channels=8, fc_out_channels=16,
        roi_feat_size=7, num_classes=C, reg_class_agnostic=agnostic,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                        target_stds=list(stds)),
        loss_cls=copy.deepcopy(loss_cls))


def _roi_head(kind, loss, test_cfg):
    if kind == 'standard':
        cfg = dict(type='mmlongtail.StandardRoIHead',
                   bbox_roi_extractor=EXTRACTOR, bbox_head=_box_head(loss))
    else:
        stds = ([.1, .1, .2, .2], [.05, .05, .1, .1],
                [.033, .033, .067, .067])
        cfg = dict(type='mmlongtail.CascadeRoIHead', num_stages=3,
                   stage_loss_weights=[1, 0.5, 0.25],
                   bbox_roi_extractor=EXTRACTOR,
                   bbox_head=[_box_head(loss, s, True) for s in stds])
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = MMDET_MODELS.build(dict(cfg, test_cfg=test_cfg))
    head.init_weights()
    for m in head.modules():
        if hasattr(m, 'fc_cls'):
            torch.nn.init.normal_(m.fc_cls.weight, std=0.3)
    return head.eval()


NORCAL_CFG = dict(type='mmlongtail.NorCal', category_stats=STATS, gamma=0.5)


def _inputs():
    torch.manual_seed(1)
    shapes = [(3, 64, 64)]
    samples = demo_mm_inputs(batch_size=1, image_shapes=shapes,
                             num_classes=C)['data_samples']
    feats = (torch.randn(1, 8, 16, 16), )
    proposals = demo_mm_proposals(shapes, 20)
    return feats, [s.metainfo for s in samples], proposals


def _rcnn(*scorers):
    # NMS at IoU 1 keeps every (box, class) pair: the output scores are all
    # the class scores of all proposals
    return ConfigDict(score_calibration=list(scorers), score_thr=0.0,
                      nms=dict(type='nms', iou_threshold=1.0),
                      max_per_img=10000)


def _activation(loss, logits):
    with DefaultScope.overwrite_default_scope('mmdet'):
        built = MMDET_MODELS.build(dict(loss))
    if getattr(built, 'custom_activation', False):
        return built.get_activation(logits)
    return F.softmax(logits, -1)


@pytest.mark.parametrize('kind', ['standard', 'cascade'])
@pytest.mark.parametrize('loss', [
    dict(type='CrossEntropyLoss'),
    dict(type='mmlongtail.SeesawLoss', num_classes=C),
], ids=['ce', 'seesaw'])
@pytest.mark.parametrize('scorer_cfg', [
    NORCAL_CFG,
    dict(NORCAL_CFG, mode='logits'),
    dict(type='mmlongtail.LogitAdjustment', category_stats=STATS, tau=1.0),
], ids=['norcal_exps', 'norcal_logits', 'logit_adjustment'])
def test_through_real_heads(kind, loss, scorer_cfg):
    """The detections' scores are the hand formula applied to the logits
    the head computed (Cascade: mmdet's mean of the stages' logits)."""
    head = _roi_head(kind, loss, None)
    calls = []
    cls = type(head.bbox_head[-1] if kind == 'cascade' else head.bbox_head)
    orig = cls.forward

    def spy(self, x):
        out = orig(self, x)
        calls.append(out[0])
        return out

    cls.forward = spy
    try:
        with torch.no_grad():
            plain = head.predict_bbox(*_inputs(), _rcnn())[0]
            calls.clear()
            got = head.predict_bbox(*_inputs(), _rcnn(scorer_cfg))[0]
    finally:
        cls.forward = orig
    logits = calls[0] if kind == 'standard' else torch.stack(calls).mean(0)
    assert len(calls) == (1 if kind == 'standard' else 3)
    with DefaultScope.overwrite_default_scope('mmdet'):
        scorer = MMDET_MODELS.build(copy.deepcopy(scorer_cfg))
    want = scorer(logits, _activation(loss, logits), _layout(loss))
    torch.testing.assert_close(
        got.scores.sort().values, want[:, :C].flatten().sort().values)
    assert not torch.equal(got.scores.sort().values,
                           plain.scores.sort().values)


def test_checkpoint_from_disk_rescored_by_config(tmp_path):
    """A trained state saved to disk, loaded into a freshly built head, is
    rescored by the config alone, as the head that saved it."""
    loss = dict(type='CrossEntropyLoss')
    trained = _roi_head('cascade', loss, None)
    path = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=trained.state_dict()), path)
    torch.manual_seed(123)
    fresh = _roi_head('cascade', loss, None)
    fresh.load_state_dict(torch.load(path, weights_only=True)['state_dict'])
    cfg = _rcnn(dict(NORCAL_CFG, mode='probs'))
    with torch.no_grad():
        want = trained.predict_bbox(*_inputs(), cfg)[0]
        got = fresh.predict_bbox(*_inputs(), cfg)[0]
        plain = fresh.predict_bbox(*_inputs(), _rcnn())[0]
    assert torch.equal(got.scores, want.scores)
    assert torch.equal(got.bboxes, want.bboxes)
    # NorCal with gamma > 0 moves mass to the rarer classes (label 0: N=1)
    rare = got.labels == 0
    assert got.scores[rare].sum() > plain.scores[plain.labels == 0].sum()


@pytest.mark.parametrize('name', [
    'norcal/norcal_mask_rcnn_r50_fpn_ms_1x_lvis.py',
    'norcal/norcal_seesaw_mask_rcnn_lvis.py',
    'logit_adjustment/logit_adjustment_mask_rcnn_r50_fpn_ms_1x_lvis.py',
    'logit_adjustment/logit_adjustment_seesaw_mask_rcnn_lvis.py'
])
def test_lvis_configs_build_their_scorers(name):
    """The test-time deltas name a scoring RoI head and scorers that build
    with the packaged LVIS v1 statistics and fit the head's 1203 classes."""
    import os.path as osp

    from mmengine.config import Config

    from mmlongtail.models.roi_heads.bbox_predict import build_scorers
    root = osp.dirname(osp.dirname(osp.dirname(osp.dirname(
        osp.abspath(__file__)))))
    cfg = Config.fromfile(osp.join(root, 'configs', name))
    assert cfg.model.roi_head.type == 'mmlongtail.StandardRoIHead'
    with DefaultScope.overwrite_default_scope('mmdet'):
        scorers = build_scorers(cfg.model.test_cfg.rcnn.score_calibration)
        layout = loss_layout(cfg.model.roi_head.bbox_head.loss_cls, 1203)
    assert len(scorers) == 1
    z = torch.randn(4, layout.num_outputs)
    out = scorers[0](z, torch.full((4, 1204), 1 / 1204), layout)
    assert out.shape == (4, 1204) and bool(torch.isfinite(out).all())


# every classification loss of the package: its family, or a refusal naming it
FAMILY_OF = {
    'CrossEntropyLoss': ('softmax', dict(type='CrossEntropyLoss')),
    'BalancedSoftmaxLoss': ('softmax', dict(category_stats=STATS)),
    'BalancedSoftmaxLoss (BALMS sigmoid)':
    ('sigmoid', dict(category_stats=STATS, use_sigmoid=True)),
    'SeesawLoss': ('seesaw', {}),
    'EQLLoss': ('sigmoid', dict(category_stats=STATS, freq_thr=0.05)),
    'EQLv2Loss': ('sigmoid', {}),
    'FocalLoss': ('sigmoid', {}),
    'EqualizedFocalLoss': ('sigmoid', {}),
    'FederatedLoss': ('sigmoid', dict(category_stats=STATS)),
    'ECMLoss': ('sigmoid', dict(category_stats=STATS)),
    'GumbelLoss': ('sigmoid', dict(category_stats=STATS, lambda_=0.05)),
    'APALoss': ('sigmoid', dict(category_stats=STATS, lambda_=0.05)),
    'ClassBalancedLoss': ('sigmoid', dict(
        category_stats=STATS,
        loss=dict(type='mmlongtail.FocalLoss', num_classes=C))),
    'GroupSoftmaxLoss': (None, dict(category_stats=STATS)),
    # LDAM and GAP train a C + 1 softmax classifier; PCB keeps its wrapped
    # loss's layout (here Seesaw's C + 2)
    'LDAMLoss': ('softmax', dict(category_stats=STATS)),
    'GAPLoss': ('softmax', {}),
    'PCBLoss': ('seesaw', dict(
        alpha=0.05, loss=dict(type='mmlongtail.SeesawLoss', num_classes=C))),
}


def test_every_package_loss_is_covered():
    names = {k.split(' ')[0] for k in FAMILY_OF}
    registered = {n for n in mmlongtail.registry.MODELS.module_dict
                  if n.endswith('Loss')}
    assert registered <= names, f'add {registered - names} to FAMILY_OF'


@pytest.mark.parametrize('key', sorted(FAMILY_OF))
def test_family_of_every_loss(key):
    from mmlongtail.models.scorers.calibration import calibration_family
    family, kwargs = FAMILY_OF[key]
    cfg = kwargs if 'type' in kwargs else dict(
        type=f'mmlongtail.{key.split(" ")[0]}', num_classes=C, **kwargs)
    with DefaultScope.overwrite_default_scope('mmdet'):
        loss = MMDET_MODELS.build(copy.deepcopy(cfg))
        layout = loss_layout(loss, C)
    z = torch.randn(6, layout.num_outputs, dtype=torch.float64)
    scores = _activation(cfg, z).double()
    if family is None:
        with pytest.raises(ValueError, match=type(loss).__name__):
            _norcal()(z, scores, layout)
        return
    assert calibration_family(layout) == family
    for mode in ('exps', 'probs'):
        out = _norcal(mode)(z, scores, layout)
        assert out.shape == scores.shape and bool(torch.isfinite(out).all())
        # the rarest class (N = 1, a = 1) keeps its score in the sigmoid
        # family; the others go down
        if family == 'sigmoid':
            torch.testing.assert_close(out[:, 0], scores[:, 0])
            assert bool((out[:, 1:C] <= scores[:, 1:C] + 1e-12).all())


@pytest.mark.parametrize('name', ['FocalLoss', 'EQLv2Loss', 'SeesawLoss'])
def test_calibration_follows_the_typed_family_not_the_description(name):
    """Rewording a layout's free-text scoring changes nothing; a layout
    that declares no scoring family is refused even if its text matches."""
    import dataclasses

    from mmlongtail.models.scorers.calibration import calibration_family
    with DefaultScope.overwrite_default_scope('mmdet'):
        loss = MMDET_MODELS.build(
            dict(type=f'mmlongtail.{name}', num_classes=C))
    layout = loss_layout(loss, C)
    reworded = dataclasses.replace(layout, scoring='reworded for a reader')
    assert calibration_family(reworded) == calibration_family(layout)
    z = torch.randn(5, layout.num_outputs, dtype=torch.float64)
    scores = loss.get_activation(z)
    torch.testing.assert_close(
        _norcal('probs')(z, scores, reworded),
        _norcal('probs')(z, scores, layout))
    untyped = dataclasses.replace(layout, family=None)
    with pytest.raises(ValueError, match=rf'{name}.*scoring family None'):
        calibration_family(untyped)
