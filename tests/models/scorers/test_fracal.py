"""FRACAL: scores pinned against the official code for its softmax and
sigmoid branches and several variants, the Seesaw form by its formula,
refusals, through real RoI heads (single, Cascade mean-logits and per-stage)
from the config, and the sweep parameter."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.testing import demo_mm_inputs, demo_mm_proposals
from mmdet.utils import register_all_modules
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope

import mmlongtail  # noqa: F401
from mmlongtail.models.losses.protocol import ScoringFamily, loss_layout
from mmlongtail.models.scorers.fracal import FRACAL

register_all_modules()

C = 4
#: The statistics of tests/datasets/test_fractal_dimension.py's tiny_lvis()
#: with the fractal dimensions the official calculate_fractality.py gave.
STATS = dict(
    num_images=10, num_images_listed=12,
    categories=[
        dict(id=j + 1, name=f'c{j}', frequency='r', image_count=n,
             instance_count=i, fractal_dimension=d)
        for j, (n, i, d) in enumerate(zip(
            (2, 5, 10, 10), (2, 5, 17, 40),
            (1.0, 1.0, 1.7724889554727086, 1.877473159810656)))
    ])


def _layout(loss):
    with DefaultScope.overwrite_default_scope('mmdet'):
        return loss_layout(dict(loss), C)


CE = _layout(dict(type='CrossEntropyLoss'))
SEESAW = _layout(dict(type='mmlongtail.SeesawLoss', num_classes=C))
SIGMOID = _layout(dict(type='mmlongtail.FocalLoss', num_classes=C))
GUMBEL = _layout(dict(type='mmlongtail.GumbelLoss', num_classes=C,
                      category_stats=STATS))
EQLV2 = _layout(dict(type='mmlongtail.EQLv2Loss', num_classes=C))

Z_SOFT = torch.tensor([[1.0, -0.5, 0.3, 2.0, 0.7],
                       [-1.0, 0.2, 1.5, -0.3, 1.1]], dtype=torch.float64)
Z_SIG = torch.tensor([[0.4, -1.2, 2.0, -0.1], [-2.0, 0.5, -0.7, 1.3]],
                     dtype=torch.float64)

# Printed from the official ConvFCFracalBBoxHead (kostas1515/FRACAL,
# fracal_bbox_head.py, commit 3543fe4): get_fracal_weights on the
# get_frequency.py CSV of tiny_lvis() and the scoring lines of
# _predict_by_feat_single (float32, device='cuda' dropped), on the logits
# above: softmax branch (CrossEntropyLoss) and sigmoid branch (a C-channel
# classifier whose get_activation is sigmoid, resp. exp(-exp(-z))).
OFFICIAL_SOFTMAX = {
    ('base10', 2.0): [
        [0.44782814383506775, 0.06711917370557785, 0.0351867638528347,
         0.1716720461845398, 0.2781938910484314],
        [0.08137120306491852, 0.18146835267543793, 0.1568487286567688,
         0.02310843952000141, 0.5572032928466797]],
    ('normit', 1.0): [
        [0.5243909955024719, 0.05488523095846176, 0.02122139185667038,
         0.10966910421848297, 0.28983327746391296],
        [0.1020650640130043, 0.15895439684391022, 0.10133001953363419,
         0.015813132748007774, 0.6218374371528625]],
    ('smooth_obj', 0.5): [
        [0.7477275729179382, 0.08342026174068451, 0.04648299515247345,
         0.1085396334528923, 0.01382956001907587],
        [0.22239241003990173, 0.3691844344139099, 0.33916670083999634,
         0.023915348574519157, 0.04534108191728592]],
    (None, 2.0): [
        [0.3456410765647888, 0.07712294906377792, 0.054632630199193954,
         0.2665461301803589, 0.2560572326183319],
        [0.05904848128557205, 0.19604788720607758, 0.22896961867809296,
         0.03373396769165993, 0.48219993710517883]],
}
OFFICIAL_SIGMOID = {
    ('base10', 2.0): [
        [0.4270947575569153, 0.058415353298187256, 0.6944844126701355,
         0.14381256699562073],
        [0.021957682445645332, 0.40387609601020813, 0.06647072732448578,
         0.5011938810348511]],
    ('normit', 1.0): [
        [0.4185301661491394, 0.0417432077229023, 0.4972197115421295,
         0.06368286907672882],
        [0.020749134942889214, 0.3400791883468628, 0.02658989280462265,
         0.3030824065208435]],
    ('gombit', 2.0): [
        [0.4592389762401581, 0.04250168427824974, 0.4424959719181061,
         0.04998479783535004],
        [0.027420582249760628, 0.34347161650657654, 0.021082613617181778,
         0.2537497878074646]],
}
OFFICIAL_GUMBEL = {
    ('base10', 2.0): [
        [0.3422931432723999, 0.0018683639355003834, 0.6679046154022217,
         0.03309987485408783],
        [7.3720630098250695e-06, 0.3173517882823944, 0.0024648921098560095,
         0.4315128028392792]],
    ('gombit', 2.0): [
        [0.3775803744792938, 0.00042374577606096864, 0.3243749737739563,
         6.715706695104018e-05],
        [2.1742047465522774e-05, 0.24200688302516937, 5.302935690565391e-08,
         0.09353484213352203]],
}


def _with_bg(s):
    return torch.cat([s, 1 - s.max(1, keepdim=True).values], 1)


@pytest.mark.parametrize('key', sorted(OFFICIAL_SOFTMAX, key=str))
def test_softmax_equals_official(key):
    variant, lam = key
    got = FRACAL(STATS, variant, lam)(Z_SOFT, F.softmax(Z_SOFT, -1), CE)
    want = torch.tensor(OFFICIAL_SOFTMAX[key], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize('key', sorted(OFFICIAL_SIGMOID, key=str))
def test_sigmoid_equals_official(key):
    s = _with_bg(torch.sigmoid(Z_SIG))
    got = FRACAL(STATS, *key)(Z_SIG, s, SIGMOID)
    want = torch.tensor(OFFICIAL_SIGMOID[key], dtype=torch.float64)
    torch.testing.assert_close(got[:, :C], want, rtol=0, atol=1e-6)
    torch.testing.assert_close(got[:, C:], s[:, C:])  # background kept


@pytest.mark.parametrize('key', sorted(OFFICIAL_GUMBEL, key=str))
def test_gumbel_equals_official(key):
    assert GUMBEL.family is ScoringFamily.GUMBEL
    s = _with_bg(torch.exp(-torch.exp(-Z_SIG)))
    got = FRACAL(STATS, *key)(Z_SIG, s, GUMBEL)
    want = torch.tensor(OFFICIAL_GUMBEL[key], dtype=torch.float64)
    torch.testing.assert_close(got[:, :C], want, rtol=0, atol=1e-6)


def test_softmax_formula_written_out():
    # base10: w_c = -log10(n_c / 12) + log10(1 / 4); background w = 0, D = 1
    w = [-math.log10(n / 12) - math.log10(4) for n in (2, 5, 10, 10)]
    d = [r['fractal_dimension'] for r in STATS['categories']]
    e = [math.exp(z + wc) / dc**2 for z, wc, dc in zip(Z_SOFT[0], w, d)]
    e.append(math.exp(Z_SOFT[0, C]))
    got = FRACAL(STATS)(Z_SOFT, F.softmax(Z_SOFT, -1), CE)
    torch.testing.assert_close(got[0], torch.tensor(e, dtype=torch.float64) /
                               sum(e))


def test_seesaw_class_softmax_times_objectness():
    z = torch.tensor([[1.0, -0.5, 0.3, 2.0, 0.4, -0.2]], dtype=torch.float64)
    obj = F.softmax(z[:, C:], -1)
    s = torch.cat([F.softmax(z[:, :C], -1) * obj[:, :1], obj[:, 1:]], 1)
    sc = FRACAL(STATS, 'base10', 2.0)
    got = sc(z, s, SEESAW)
    q = F.softmax(z[:, :C] + sc.frequency, -1) / torch.tensor(
        [r['fractal_dimension'] for r in STATS['categories']],
        dtype=torch.float64)**2
    torch.testing.assert_close(got[:, :C], obj[:, :1] * q / q.sum())
    torch.testing.assert_close(got[:, C:], s[:, C:])


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match='SIGMOID_OBJECTNESS.*NorCal'):
        FRACAL(STATS)(torch.zeros(1, EQLV2.num_outputs), torch.zeros(1, C + 1),
                      EQLV2)
    # APA's learned link: FRACAL's sigmoid rule is stated for fixed links
    apa = _layout(dict(type='mmlongtail.APALoss', num_classes=C,
                       category_stats=STATS))
    with pytest.raises(ValueError, match='scoring family APA.*NorCal'):
        FRACAL(STATS)(torch.zeros(1, apa.num_outputs), torch.zeros(1, C + 1),
                      apa)
    bags = _layout(dict(type='mmlongtail.GroupSoftmaxLoss', num_classes=C,
                        category_stats=STATS))
    with pytest.raises(ValueError, match='GroupSoftmaxLoss.*group softmax'):
        FRACAL(STATS)(torch.zeros(1, bags.num_outputs),
                      torch.full((1, C + 1), .2), bags)
    with DefaultScope.overwrite_default_scope('mmdet'):
        five = loss_layout(dict(type='CrossEntropyLoss'), 5)
    with pytest.raises(ValueError, match='num_classes=5'):
        FRACAL(STATS)(torch.zeros(1, 6), torch.full((1, 6), 1 / 6), five)
    with pytest.raises(ValueError, match='needs category_stats'):
        FRACAL()
    with pytest.raises(ValueError, match='fractal_l must be a finite'):
        FRACAL(STATS, fractal_l=-1)
    with pytest.raises(ValueError, match='leaves every score unchanged'):
        FRACAL(STATS, variant=None, fractal_l=0)
    with pytest.raises(ValueError, match='variant must be one of'):
        FRACAL(STATS, variant='base3')
    # a stats file without fractal dimensions: named, with the command
    plain = copy.deepcopy(STATS)
    for cat in plain['categories']:
        del cat['fractal_dimension']
    path = tmp_path / 'stats.json'
    path.write_text(__import__('json').dumps(plain))
    with pytest.raises(ValueError, match=r'stats\.json has none.*'
                       r'--fractal-dimension'):
        FRACAL(str(path))
    # an unseen class: not finite in base10, defined in smooth
    unseen = copy.deepcopy(STATS)
    unseen['categories'][0].update(image_count=0, instance_count=0)
    with pytest.raises(ValueError, match=r"'base10' is not finite for "
                       r"classes \[0\] \(\['c0'\]\)"):
        FRACAL(unseen)
    assert torch.isfinite(FRACAL(unseen, 'smooth').log_weights).all()


# ------------------------------------------------- through real RoI heads --
EXTRACTOR = dict(
    type='SingleRoIExtractor',
    roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
    out_channels=8, featmap_strides=[4])
FRACAL_CFG = dict(type='mmlongtail.FRACAL', category_stats=STATS,
                  variant='base10', fractal_l=2.0)


def _box_head(stds=(0.1, 0.1, 0.2, 0.2)):
    return dict(
        type='Shared2FCBBoxHead', in_channels=8, fc_out_channels=16,
        roi_feat_size=7, num_classes=C, reg_class_agnostic=True,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                        target_stds=list(stds)),
        loss_cls=dict(type='CrossEntropyLoss'))


def _roi_head(kind):
    if kind == 'standard':
        cfg = dict(type='mmlongtail.StandardRoIHead',
                   bbox_roi_extractor=EXTRACTOR, bbox_head=_box_head())
    else:
        cfg = dict(type='mmlongtail.CascadeRoIHead', num_stages=3,
                   stage_loss_weights=[1, 0.5, 0.25],
                   bbox_roi_extractor=EXTRACTOR,
                   bbox_head=[_box_head(s) for s in (
                       [.1, .1, .2, .2], [.05, .05, .1, .1],
                       [.033, .033, .067, .067])])
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = MMDET_MODELS.build(cfg)
    head.init_weights()
    for m in head.modules():
        if hasattr(m, 'fc_cls'):
            torch.nn.init.normal_(m.fc_cls.weight, std=0.3)
    return head.eval()


def _inputs():
    torch.manual_seed(1)
    shapes = [(3, 64, 64)]
    samples = demo_mm_inputs(batch_size=1, image_shapes=shapes,
                             num_classes=C)['data_samples']
    return ((torch.randn(1, 8, 16, 16), ), [s.metainfo for s in samples],
            demo_mm_proposals(shapes, 20))


@pytest.mark.parametrize('kind,form', [('standard', 'once'),
                                       ('cascade', 'once'),
                                       ('cascade', 'per_stage')])
def test_through_real_heads_from_config(kind, form):
    """Detections' scores are FRACAL of the logits the head computed
    (NMS at IoU 1 keeps every (box, class) pair)."""
    head = _roi_head(kind)
    rcnn = dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=1.0),
                max_per_img=10000)
    if form == 'once':
        rcnn['score_calibration'] = [FRACAL_CFG]
    else:
        rcnn.update(cascade_scoring='mean_scores',
                    stage_score_calibration=[[FRACAL_CFG]] * 3)
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
            got = head.predict_bbox(*_inputs(), ConfigDict(rcnn))[0]
    finally:
        cls.forward = orig
    scorer = FRACAL(STATS, 'base10', 2.0)
    if form == 'once':
        z = calls[0] if kind == 'standard' else torch.stack(calls).mean(0)
        want = scorer(z, F.softmax(z, -1), CE)
    else:
        want = torch.stack([scorer(z, F.softmax(z, -1), CE)
                            for z in calls]).mean(0)
    torch.testing.assert_close(got.scores.sort().values,
                               want[:, :C].flatten().sort().values)


def test_config_builds_with_packaged_lvis_stats():
    import os.path as osp

    from mmlongtail.models.roi_heads.bbox_predict import build_scorers
    root = osp.dirname(osp.dirname(osp.dirname(osp.dirname(
        osp.abspath(__file__)))))
    cfg = Config.fromfile(osp.join(
        root, 'configs', 'fracal', 'fracal_mask_rcnn_r50_fpn_ms_1x_lvis.py'))
    assert cfg.model.roi_head.type == 'mmlongtail.StandardRoIHead'
    with DefaultScope.overwrite_default_scope('mmdet'):
        scorers = build_scorers(cfg.model.test_cfg.rcnn.score_calibration)
        layout = loss_layout(cfg.model.roi_head.bbox_head.loss_cls, 1203)
    z = torch.randn(4, 1204)
    out = scorers[0](z, F.softmax(z, -1), layout)
    assert out.shape == (4, 1204) and bool(torch.isfinite(out).all())
    torch.testing.assert_close(out.sum(1), torch.ones(4))


def test_sweep_parameter_resolves():
    from mmlongtail.apis.calibration.params import check_values, resolve_param
    cfg = Config(dict(model=dict(test_cfg=dict(rcnn=dict(
        score_calibration=[FRACAL_CFG])))))
    for name in ('fractal_l', 'FRACAL.fractal_l'):
        target = resolve_param(cfg, name)
        assert (target.name, target.key, target.where) == (
            'FRACAL.fractal_l', 'fractal_l',
            'model.test_cfg.rcnn.score_calibration[0]')
    assert check_values(target, [0.5, 1, 2]) == [0.5, 1.0, 2.0]
    with pytest.raises(ValueError, match='fractal_l must be a finite'):
        check_values(target, [-1.0])


# get_frequency.py's columns for tiny_lvis() (official stat_files script,
# commit 3543fe4), classes 1..4 (its row 0 is the unused id 0)
OFFICIAL_FREQ_COLUMNS = {
    'smooth': [2.466337068793427, 1.7731898882334818, 1.1670540846631663,
               1.1670540846631663],
    'raw': [1.791759469228055, 0.8754687373538999, 0.1823215567939546,
            0.1823215567939546],
    'prob': [1.6094379124341003, 0.3364722366212129, -1.6094379124341003,
             -1.6094379124341003],
    'normit': [0.967421566101701, 0.2104283942479247, -0.967421566101701,
               -0.967421566101701],
    'gombit': [1.7019833552815005, 0.6180462002413621, -0.5831980807826594,
               -0.5831980807826594],
    'base2': [2.584962500721156, 1.2630344058337937, 0.2630344058337938,
              0.2630344058337938],
    'base10': [0.7781512503836436, 0.38021124171160603, 0.0791812460476248,
               0.0791812460476248],
    'smooth_obj': [4.075774981227528, 3.3826278006675823, 2.2840155119994723,
                   1.4608152031913293],
    'raw_obj': [3.4657359027997265, 2.5494451709255714, 1.3256697393034558,
                0.47000362924573563],
    'prob_obj': [3.4339872044851463, 2.468099531471619, 1.0169342576538425,
                 -0.5108256237659907],
    'normit_obj': [1.8627318674216515, 1.417797137996267, 0.6260990123464212,
                   -0.31863936396437514],
    'gombit_obj': [3.4499035524498507, 2.509048049040746, 1.1752704151427698,
                   0.0193568885804821],
    'base2_obj': [5.0, 3.678071905112638, 1.9125371587496607,
                  0.6780719051126377],
    'base10_obj': [1.505149978319906, 1.1072099696478683, 0.5757310526056132,
                   0.2041199826559248],
}


@pytest.mark.parametrize('variant', sorted(OFFICIAL_FREQ_COLUMNS))
def test_frequency_term_equals_official(variant):
    """w_c = the official CSV column + get_fracal_weights' ptarget (its
    expressions written out: f = 300, or 1000 for *_obj, per class)."""
    from mmlongtail.models.scorers.fracal import frequency_term
    f = 1000.0 if variant.endswith('_obj') else 300.0
    F_ = C * f
    link = variant.replace('_obj', '')
    ptarget = {
        'raw': -math.log(F_ / f),
        'smooth': -math.log((F_ + 1) / (f + 1)) + 1,
        'prob': -math.log((F_ - f) / f),
        'normit': float(torch.special.ndtri(torch.tensor(f / F_,
                                                         dtype=torch.float64))),
        'gombit': math.log(-math.log(1 - f / F_)),
        'base2': -math.log2(F_ / f),
        'base10': -math.log10(F_ / f),
    }[link]
    stats = FRACAL(STATS, variant).stats
    want = torch.tensor(OFFICIAL_FREQ_COLUMNS[variant],
                        dtype=torch.float64) + ptarget
    torch.testing.assert_close(frequency_term(stats, variant), want,
                               rtol=0, atol=1e-12)


def test_consistency_hook_runs_the_scorers_on_the_head_layout():
    """A scorer that cannot score its head's classifier is refused before
    the first image, naming the config key and the scorer's reason; one
    that can passes."""
    from mmlongtail.engine import check_longtail_consistency

    def roi_head(loss_cls, scorers):
        cfg = dict(
            type='mmlongtail.StandardRoIHead',
            bbox_roi_extractor=dict(
                type='SingleRoIExtractor',
                roi_layer=dict(type='RoIAlign', output_size=7,
                               sampling_ratio=0),
                out_channels=8, featmap_strides=[4]),
            bbox_head=dict(
                type='Shared2FCBBoxHead', in_channels=8, fc_out_channels=16,
                roi_feat_size=7, num_classes=C, loss_cls=loss_cls),
            test_cfg=ConfigDict(score_thr=0.0, max_per_img=10,
                                nms=dict(type='nms', iou_threshold=0.5),
                                score_calibration=scorers))
        with DefaultScope.overwrite_default_scope('mmdet'):
            register_all_modules(init_default_scope=False)
            return MMDET_MODELS.build(cfg)

    fracal = [dict(type='mmlongtail.FRACAL', category_stats=STATS)]
    check_longtail_consistency(
        roi_head(dict(type='CrossEntropyLoss', loss_weight=1.0), fracal))
    with pytest.raises(ValueError, match=r'test_cfg\.score_calibration: '
                       r'FRACAL cannot score.*EQLv2Loss.*NorCal'):
        check_longtail_consistency(roi_head(
            dict(type='mmlongtail.EQLv2Loss', num_classes=C), fracal))
