"""mmlongtail's query heads (LongTailDINOHead, LongTailDeformableDETRHead)
at LVIS size (1203 classes, 900 queries): predictions bit-identical to
mmdet's heads without scorers, the Fixed-AP mode against an uncapped
predict cut per class, test-time scorers by their formulas on the C-output
layout, Gumbel scores for GOL, refusals, and the LVIS metric on Fixed-AP
output."""
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.structures import InstanceData

import mmlongtail  # noqa: F401
from mmlongtail.datasets.category_stats import load_category_stats
from mmlongtail.evaluation import LVISMetric
from mmlongtail.models.dense_heads import (LongTailDINOHead,
                                           select_query_detections)
from mmlongtail.models.dense_heads.query_heads import desc_by_score
from mmlongtail_bench.synthetic import make_lvis_gt

register_all_modules()

C = 1203
Q = 900
E = 256  # mmdet's DINO decoder fixes 2 x 128 sine features per coordinate
FOCAL = dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
             loss_weight=1.0)
IMG = 224  # 1045 encoder tokens over 4 levels: enough for 900 queries


def dino(head='DINOHead', loss=FOCAL, test_cfg=None):
    """A small DINO from mmdet's classes (4 scales, one encoder and two
    decoder layers, a thin ResNet-18), ``C`` classes and ``Q`` queries."""
    attn = dict(embed_dims=E, num_levels=4, num_heads=2, num_points=2,
                dropout=0.0)
    ffn = dict(embed_dims=E, feedforward_channels=32, ffn_drop=0.0)
    return dict(
        type='DINO', num_queries=Q, with_box_refine=True, as_two_stage=True,
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[0, 0, 0],
                               std=[255, 255, 255], pad_size_divisor=1),
        backbone=dict(type='ResNet', depth=18, base_channels=4,
                      out_indices=(1, 2, 3), norm_eval=False,
                      norm_cfg=dict(type='BN')),
        neck=dict(type='ChannelMapper', in_channels=[8, 16, 32],
                  kernel_size=1, out_channels=E, act_cfg=None,
                  norm_cfg=dict(type='GN', num_groups=8), num_outs=4),
        encoder=dict(num_layers=1,
                     layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn)),
        decoder=dict(num_layers=2, return_intermediate=True,
                     layer_cfg=dict(self_attn_cfg=dict(embed_dims=E,
                                                       num_heads=2,
                                                       dropout=0.0),
                                    cross_attn_cfg=attn, ffn_cfg=ffn),
                     post_norm_cfg=None),
        positional_encoding=dict(num_feats=E // 2, normalize=True,
                                 offset=0.0, temperature=20),
        bbox_head=dict(type=head, num_classes=C, sync_cls_avg_factor=True,
                       embed_dims=E, loss_cls=loss,
                       loss_bbox=dict(type='L1Loss', loss_weight=5.0),
                       loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
        dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0,
                    group_cfg=dict(dynamic=True, num_groups=None,
                                   num_dn_queries=20)),
        train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='FocalLossCost', weight=2.0),
            dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
            dict(type='IoUCost', iou_mode='giou', weight=2.0)])),
        test_cfg=dict(max_per_img=300) if test_cfg is None else test_cfg)


def samples(with_gt=False):
    """Two images of different sizes and scale factors."""
    out = []
    for i, (h, w, s) in enumerate([(IMG, IMG, 0.5), (IMG - 16, IMG, 0.8)]):
        ds = DetDataSample(metainfo=dict(
            img_id=i + 1, img_shape=(h, w), pad_shape=(IMG, IMG),
            batch_input_shape=(IMG, IMG), scale_factor=(s, s),
            ori_shape=(round(h / s), round(w / s))))
        if with_gt:
            ds.gt_instances = InstanceData(
                bboxes=torch.tensor([[5., 5., 90., 60.],
                                     [40., 30., 200., 150.]]),
                labels=torch.tensor([3, 1100]))
        out.append(ds)
    return out


@pytest.fixture(scope='module')
def dinos():
    """mmdet's DINO and the same weights with LongTailDINOHead, and two
    images."""
    torch.manual_seed(0)
    stock = MMDET_MODELS.build(dino())
    stock.init_weights()
    ours = MMDET_MODELS.build(dino('mmlongtail.LongTailDINOHead'))
    ours.load_state_dict(stock.state_dict())
    stock.eval()
    ours.eval()
    imgs = torch.rand(2, 3, IMG, IMG) * 255
    return stock, ours, imgs


K = 5  # topk_per_class of the detector-level Fixed-AP tests


@pytest.fixture(scope='module')
def dino_preds(dinos):
    """LongTailDINOHead's predictions of the two images: uncapped (every
    query x class), Fixed AP (``K`` per class) and Fixed AP capped at 500
    per image."""
    _, ours, imgs = dinos
    batch = samples()
    with torch.no_grad():  # the transformer once, the head per test_cfg
        inputs = ours.forward_transformer(ours.extract_feat(imgs), batch)
    head = ours.bbox_head
    saved = head.test_cfg
    out = {}
    for name, cfg in [('uncapped', dict(max_per_img=-1)),
                      ('fixed', dict(max_per_img=-1, topk_per_class=K)),
                      ('capped', dict(max_per_img=500, topk_per_class=K)),
                      ('default', dict(max_per_img=300)),
                      ('fixed300', dict(max_per_img=-1,
                                        topk_per_class=300))]:
        head.test_cfg = cfg
        with torch.no_grad():
            out[name] = head.predict(**inputs, rescale=True,
                                     batch_data_samples=batch)
    head.test_cfg = saved
    return out


def predict(model, imgs, **test_cfg):
    head = model.bbox_head
    saved = head.test_cfg
    head.test_cfg = dict(test_cfg) if test_cfg else saved
    try:
        with torch.no_grad():
            return [d.pred_instances for d in model.predict(imgs, samples())]
    finally:
        head.test_cfg = saved


def assert_same(a, b):
    for key in ('bboxes', 'scores', 'labels'):
        assert torch.equal(a[key], b[key]), key


def first_k_per_class(res, k):
    """Each class's first ``k`` detections, in the given order."""
    labels = res.labels
    order = torch.sort(labels, stable=True)[1]
    sorted_labels = labels[order]
    start = torch.searchsorted(sorted_labels, sorted_labels)
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(len(labels)) - start
    keep = rank < k
    return res[keep]


# ------------------------------------------------------ equal to mmdet ---
def test_dino_predict_is_mmdets(dinos):
    """No scorer, a sigmoid loss: LongTailDINOHead's predictions are
    bit-identical to mmdet's DINOHead on the same weights (two images,
    rescaled to their own scale factors)."""
    stock, ours, imgs = dinos
    for a, b in zip(predict(stock, imgs), predict(ours, imgs)):
        assert len(a) == 300
        assert_same(a, b)


def test_deformable_detr_predict_is_mmdets():
    """The same for LongTailDeformableDETRHead (one-stage, 2 decoder
    layers) with mmlongtail.FocalLoss, from the head's own forward."""
    torch.manual_seed(1)
    cfg = dict(num_classes=C, embed_dims=32, num_pred_layer=2,
               loss_cls=dict(FOCAL, loss_weight=2.0),
               test_cfg=dict(max_per_img=100))
    stock = MMDET_MODELS.build(dict(cfg, type='DeformableDETRHead'))
    stock.init_weights()
    ours = MMDET_MODELS.build(
        dict(cfg, type='mmlongtail.LongTailDeformableDETRHead',
             loss_cls=dict(type='mmlongtail.FocalLoss', loss_weight=2.0)))
    ours.load_state_dict(stock.state_dict())
    hidden = torch.randn(2, 2, Q, 32)
    refs = [torch.rand(2, Q, 2) for _ in range(3)]
    with torch.no_grad():
        a = stock.predict(hidden, refs, samples())
        b = ours.predict(hidden, refs, samples())
    for x, y in zip(a, b):
        assert len(x) == 100
        assert_same(x, y)


def test_training_is_mmdets():
    """The heads change test time only: LongTailDINOHead's losses (decoder
    layers, encoder proposals, denoising part) equal mmdet's DINOHead's on
    the same weights and inputs."""
    torch.manual_seed(2)
    cfg = dict(num_classes=C, embed_dims=32, num_pred_layer=3,
               as_two_stage=True, loss_cls=FOCAL,
               train_cfg=dino()['train_cfg'])
    stock = MMDET_MODELS.build(dict(cfg, type='DINOHead'))
    stock.init_weights()
    ours = MMDET_MODELS.build(dict(cfg, type='mmlongtail.LongTailDINOHead'))
    ours.load_state_dict(stock.state_dict())
    num_dn, n = 8, 100  # 2 denoising groups of 2 positives and 2 negatives
    hidden = torch.randn(2, 2, num_dn + n, 32)
    refs = [torch.rand(2, num_dn + n, 4) for _ in range(3)]
    enc_cls, enc_coord = torch.randn(2, n, C), torch.rand(2, n, 4)
    dn_meta = dict(num_denoising_queries=num_dn, num_denoising_groups=2)
    data = samples(with_gt=True)
    out = [head.loss(hidden, refs, enc_cls, enc_coord, data, dn_meta)
           for head in (stock, ours)]
    assert out[0].keys() == out[1].keys()
    assert any(k.startswith('dn_') for k in out[0])
    for key in out[0]:
        assert torch.equal(out[0][key], out[1][key]), key


# ------------------------------------------------------------ Fixed AP ---
def test_dino_fixed_ap_equals_uncapped_then_per_class_topk(dino_preds):
    """topk_per_class=k, max_per_img=-1 equals the uncapped predict (every
    query x class, by score) followed by each class's first k: boxes,
    scores, labels and order. With a per-image cap the first m of it."""
    for u, f, m in zip(dino_preds['uncapped'], dino_preds['fixed'],
                       dino_preds['capped']):
        assert len(u) == Q * C
        assert len(f) == K * C  # no per-image cap
        assert torch.equal(torch.bincount(f.labels, minlength=C),
                           torch.full((C, ), K))
        assert_same(first_k_per_class(u, K), f)
        assert_same(f[:500], m)


def test_fixed_ap_with_k_300_holds_mmdets_300(dino_preds):
    """With k >= max_per_img the Fixed-AP output's best 300 are mmdet's
    300 (no class can have more than 300 of them), so the metric's standard
    protocol (300 per image) on it scores as mmdet's predictions: one
    validation pass gives AP and AP^fixed."""
    for d, f in zip(dino_preds['default'], dino_preds['fixed300']):
        top = f[:300]
        assert torch.equal(top.scores, d.scores)
        as_set = [set(zip(r.labels.tolist(), map(tuple, r.bboxes.tolist())))
                  for r in (top, d)]
        assert as_set[0] == as_set[1]


def crafted(seed=0, levels=8):
    """(Q, C) logits with many exact ties (few distinct values) and boxes
    whose width in a 900-pixel-wide image is their query index."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randint(-levels, levels, (Q, C), generator=g) / 2.0
    boxes = torch.stack([torch.full((Q, ), 0.5), torch.full((Q, ), 0.5),
                         torch.arange(Q) / Q, torch.full((Q, ), 0.5)], 1)
    return logits, boxes


META = dict(img_shape=(64, Q), scale_factor=(1.0, 1.0))


def queries_of(bboxes):
    return (bboxes[:, 2] - bboxes[:, 0]).round().long()


def head_predict(head, logits, boxes, **test_cfg):
    head.test_cfg = test_cfg
    with torch.no_grad():
        return head.predict_by_feat(logits[None, None], boxes[None, None],
                                    [META], rescale=False)[0]


@pytest.fixture(scope='module')
def dino_head():
    return MMDET_MODELS.build(
        dict(type='mmlongtail.LongTailDINOHead', num_classes=C,
             embed_dims=32, num_pred_layer=1,
             loss_cls=dict(type='mmlongtail.FocalLoss')))


@pytest.mark.parametrize('k,score_thr', [(5, None), (40, 0.5), (Q, 0.3)])
def test_fixed_ap_with_ties_and_threshold(dino_head, k, score_thr):
    """Logits with only 16 distinct values (ties everywhere, also at each
    class's k-th place): Fixed AP still equals the uncapped predict cut per
    class, ties ordered by (query, class); a class's k-th place shared by
    equal scores goes to the lower queries; k = Q keeps every query."""
    logits, boxes = crafted()
    cfg = {} if score_thr is None else dict(score_thr=score_thr)
    u = head_predict(dino_head, logits, boxes, max_per_img=-1, **cfg)
    f = head_predict(dino_head, logits, boxes, max_per_img=-1,
                     topk_per_class=k, **cfg)
    assert_same(first_k_per_class(u, k), f)
    probs = logits.sigmoid()
    expected = (probs > score_thr).sum() if score_thr else Q * C
    assert len(u) == expected
    if score_thr:
        assert bool((f.scores > score_thr).all())
    # the uncapped order: descending score, ties by query then class
    q = queries_of(u.bboxes)
    assert torch.equal(u.scores, probs[q, u.labels])
    key = (q * C + u.labels).double() - u.scores.double() * 1e9
    assert bool((key[1:] > key[:-1]).all())


def test_fixed_ap_hand_case():
    """Q=4 queries, C=2 classes, k=2. Class 0 scores (.5, .7, .5, .5): .7
    (query 1), then the tie at .5 goes to query 0; class 1 (.1, .2, .3,
    .9): queries 3 and 2. Output by score, ties by query * C + class."""
    s = torch.tensor([[.5, .1], [.7, .2], [.5, .3], [.5, .9]])
    scores, query, labels = select_query_detections(s, -1, 2)
    assert scores.tolist() == pytest.approx([.9, .7, .5, .3])
    assert query.tolist() == [3, 1, 0, 2]
    assert labels.tolist() == [1, 0, 0, 1]
    # a threshold strictly above .5: class 0 keeps query 1 only
    scores, query, labels = select_query_detections(s, -1, 2, 0.5)
    assert query.tolist() == [3, 1]
    # per-image cap after the per-class cut; uncapped: all 8, ties by flat
    assert select_query_detections(s, 3, 2)[1].tolist() == [3, 1, 0]
    assert select_query_detections(s, -1, -1)[1].tolist() == [
        3, 1, 0, 2, 3, 2, 1, 0]
    # mmdet's mode (top m of the image), then the threshold
    scores, query, labels = select_query_detections(s, 3, -1, 0.6)
    assert scores.tolist() == pytest.approx([.9, .7])
    assert (query.tolist(), labels.tolist()) == ([3, 1], [1, 0])


def test_desc_by_score_orders_ties_by_flat_index():
    """The int64-key sort (non-negative scores, -0.0 equal to 0.0) and the
    stable-sort fallback (a negative score) give (-score, flat) order."""
    scores = torch.tensor([0.0, -0.0, 0.5, 0.0])
    flat = torch.tensor([5, 2, 9, 7])
    assert desc_by_score(scores, flat).tolist() == [2, 1, 0, 3]
    scores = torch.tensor([-1.0, 0.5, -1.0, -0.0, 0.0])
    flat = torch.tensor([4, 3, 1, 2, 0])
    assert desc_by_score(scores, flat).tolist() == [1, 4, 3, 2, 0]


# ------------------------------------------------------------- scorers ---
def sigmoid_form(probs, a):
    """The binary NorCal rule on independent per-class scores:
    a s / (a s + 1 - s)."""
    return a * probs / (a * probs + 1 - probs)


@pytest.mark.parametrize('scorer', ['NorCal', 'LogitAdjustment'])
def test_scorer_formula_on_query_layout(dino_head, scorer):
    """NorCal (gamma=0.6: a_c = N_c^-0.6) and logit adjustment (tau=1:
    a_c = 1 / pi_c, pi_c = N_c / sum N) rescore the C per-class sigmoid
    scores by the binary rule a s / (a s + 1 - s) (sigma(z + log a)), with
    LVIS v1's image counts N_c; the selection runs on the new scores."""
    stats = load_category_stats('lvis_v1')
    n = torch.tensor(np.asarray(stats.image_count, dtype=np.float64))
    if scorer == 'NorCal':
        cfg = dict(type='mmlongtail.NorCal', category_stats='lvis_v1',
                   gamma=0.6)
        a = n.pow(-0.6)
    else:
        cfg = dict(type='mmlongtail.LogitAdjustment',
                   category_stats='lvis_v1', tau=1.0)
        a = n.sum() / n
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(Q, C, generator=g) * 3
    _, boxes = crafted()
    expected = sigmoid_form(logits.double().sigmoid(), a)
    assert torch.allclose(expected, torch.sigmoid(logits.double() + a.log()))
    dino_head.test_cfg = dict(score_calibration=[cfg])
    got = dino_head.query_scores(logits)
    assert got.shape == (Q, C)
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-7)
    res = head_predict(dino_head, logits, boxes, max_per_img=300,
                       score_calibration=[cfg])
    q = queries_of(res.bboxes)
    assert torch.equal(res.scores, got[q, res.labels])
    assert torch.equal(res.scores, got.reshape(-1).topk(300).values)
    # it changes the selection: rare classes rise
    plain = head_predict(dino_head, logits, boxes, max_per_img=300)
    assert not torch.equal(plain.labels, res.labels)


@pytest.mark.parametrize('loss', ['mmlongtail.FocalLoss', 'FocalLoss'])
def test_every_scorer_scores_the_query_layout(loss):
    """NorCal (each mode), logit adjustment, FRACAL and ClassScoreWeights
    accept the C-output sigmoid layout, with mmlongtail's focal loss and
    with mmdet's (check_scorers runs each on a dummy); NorCal mode 'logits'
    is sigma(a z) on it."""
    dino_head = MMDET_MODELS.build(
        dict(type='mmlongtail.LongTailDINOHead', num_classes=C,
             embed_dims=32, num_pred_layer=1,
             loss_cls=dict(type=loss, use_sigmoid=True)))
    cfgs = [dict(type='mmlongtail.NorCal', category_stats='lvis_v1',
                 gamma=0.5, mode=m) for m in ('exps', 'probs', 'logits')]
    cfgs += [dict(type='mmlongtail.LogitAdjustment',
                  category_stats='lvis_v1', tau=1.0),
             dict(type='mmlongtail.FRACAL', category_stats='lvis_v1'),
             dict(type='mmlongtail.ClassScoreWeights', weights=[0.5] * C)]
    for cfg in cfgs:
        dino_head.test_cfg = dict(score_calibration=[cfg])
        dino_head.check_scorers()
    stats = load_category_stats('lvis_v1')
    a = torch.tensor(np.asarray(stats.image_count, dtype=np.float32)) ** -0.5
    logits = torch.randn(4, C)
    dino_head.test_cfg = dict(score_calibration=[cfgs[2]])
    assert torch.allclose(dino_head.query_scores(logits),
                          torch.sigmoid(a * logits), rtol=1e-5)


@pytest.fixture(scope='module')
def gumbel_head():
    return MMDET_MODELS.build(
        dict(type='mmlongtail.LongTailDINOHead', num_classes=C,
             embed_dims=32, num_pred_layer=1,
             loss_cls=dict(type='mmlongtail.GumbelLoss', num_classes=C,
                           drop_loss=False)))


def test_gumbel_loss_scores_with_gumbel(gumbel_head):
    """GOL's head scores with exp(-exp(-z)), not the sigmoid, and a scorer
    that needs plain sigmoid scores (NorCal mode 'logits') is refused with
    its reason; FRACAL's Gumbel rule is accepted."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(Q, C, generator=g) * 0.5
    _, boxes = crafted()
    res = head_predict(gumbel_head, logits, boxes, max_per_img=300)
    q = queries_of(res.bboxes)
    gumbel = torch.exp(-torch.exp(-logits))
    assert torch.allclose(res.scores, gumbel[q, res.labels], rtol=1e-6)
    # the loss's own arithmetic (1 / exp(exp(-z))) may differ in the last
    # bit, and so order near-equal scores differently
    assert torch.allclose(res.scores.sort()[0],
                          gumbel.view(-1).topk(300).values.sort()[0],
                          rtol=1e-6)
    assert not torch.allclose(res.scores, logits[q, res.labels].sigmoid())
    gumbel_head.test_cfg = dict(score_calibration=[dict(
        type='mmlongtail.NorCal', category_stats='lvis_v1', gamma=0.5,
        mode='logits')])
    with pytest.raises(ValueError, match="score_calibration.*'logits' "
                       'needs plain sigmoid scores'):
        gumbel_head.check_scorers()
    with pytest.raises(ValueError, match='plain sigmoid'):
        head_predict(gumbel_head, logits, boxes, **gumbel_head.test_cfg)
    gumbel_head.test_cfg = dict(score_calibration=[dict(
        type='mmlongtail.FRACAL', category_stats='lvis_v1')])
    gumbel_head.check_scorers()


# ------------------------------------------------------------ refusals ---
@pytest.mark.parametrize('test_cfg,match', [
    (dict(max_per_img=0), 'max_per_img must be >= 1, or -1'),
    (dict(max_per_img=-5), 'max_per_img must be >= 1, or -1.*-5'),
    (dict(max_per_img=2.5), 'max_per_img must be an int.*2.5'),
    (dict(max_per_img=True), 'max_per_img must be an int'),
    (dict(topk_per_class=0), 'topk_per_class must be >= 1.*got 0'),
    (dict(topk_per_class=-2), 'topk_per_class must be >= 1.*-2'),
    (dict(topk_per_class='300'), "topk_per_class must be an int.*'300'"),
    (dict(score_thr=-0.1), 'score_thr must be a finite number >= 0'),
    (dict(score_thr=float('nan')), 'score_thr must be a finite number'),
    (dict(score_thr='1e-4'), 'score_thr must be'),
])
def test_bad_test_cfg_is_refused_at_build(test_cfg, match):
    with pytest.raises(ValueError, match=match):
        MMDET_MODELS.build(dict(
            type='mmlongtail.LongTailDeformableDETRHead', num_classes=C,
            embed_dims=32, num_pred_layer=1, loss_cls=FOCAL,
            test_cfg=test_cfg))


def test_bad_values_refused_at_predict(dino_head):
    """A test config edited after the build is checked at each predict; a
    single scorer dict (not a list) is refused naming the fix."""
    logits, boxes = crafted()
    with pytest.raises(ValueError, match='topk_per_class must be >= 1'):
        head_predict(dino_head, logits, boxes, topk_per_class=0)
    with pytest.raises(ValueError, match=r'score_calibration must be a list'
                       r'.*score_calibration=\[dict'):
        head_predict(dino_head, logits, boxes, score_calibration=dict(
            type='mmlongtail.NorCal', category_stats='lvis_v1', gamma=0.5))


def test_softmax_loss_is_refused():
    with pytest.raises(ValueError, match='use_sigmoid=False.*sigmoid loss'):
        MMDET_MODELS.build(dict(
            type='mmlongtail.LongTailDINOHead', num_classes=C,
            embed_dims=32, num_pred_layer=1,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False)))


def test_loss_without_per_class_form_is_refused(monkeypatch):
    """The head asks its loss for per-class probabilities once at build:
    a loss that cannot give them (its own ValueError) or gives another
    width is refused, naming both."""
    from mmlongtail.models.losses import FocalLoss

    def refuse(self, cls_score):
        raise ValueError('FocalLoss lays out C + 1 rows (stub)')

    cfg = dict(type='mmlongtail.LongTailDINOHead', num_classes=C,
               embed_dims=32, num_pred_layer=1,
               loss_cls=dict(type='mmlongtail.FocalLoss'))
    monkeypatch.setattr(FocalLoss, 'class_probabilities', refuse)
    with pytest.raises(ValueError, match='LongTailDINOHead scores C per-'
                       'class probabilities from its loss_cls, which cannot '
                       r'give them: FocalLoss lays out C \+ 1 rows'):
        MMDET_MODELS.build(cfg)
    monkeypatch.setattr(FocalLoss, 'class_probabilities',
                        lambda self, x: torch.zeros(len(x), C + 1))
    with pytest.raises(ValueError, match=r'\(1204,\) scores per query for '
                       'the 1203 classes'):
        MMDET_MODELS.build(cfg)


def test_scorer_with_wrong_class_count_is_refused():
    head = LongTailDINOHead(num_classes=4, embed_dims=32, num_pred_layer=1,
                            loss_cls=FOCAL, test_cfg=dict(score_calibration=[
                                dict(type='mmlongtail.NorCal',
                                     category_stats='lvis_v1', gamma=0.5)]))
    with pytest.raises(ValueError, match='1203.*4|4.*1203'):
        head.check_scorers()


# ---------------------------------------------------------- evaluation ---
def test_lvis_metric_takes_fixed_ap_output(dino_preds, tmp_path):
    """The LVIS metric's fixed protocol on the Fixed-AP predictions (k=5
    per class: 6015 detections per image) equals it on the uncapped ones
    (1.08M per image) with max_dets_per_cat=5: each class's best 5 over the
    set are among its best 5 of each image. The ground truth boxes are
    predicted boxes, so the APs are not zero; the standard protocol caps at
    300 per image."""
    k = K
    fixed, uncapped = dino_preds['fixed'], dino_preds['uncapped']
    gt = make_lvis_gt(2, 'lvis_v1', mean_categories=6, seed=3,
                      empty_image_prob=0.0)
    metas = [s.metainfo for s in samples()]
    new_id = {}
    for im, meta in zip(gt['images'], metas):
        new_id[im['id']] = im['id'] = meta['img_id']
        im['height'], im['width'] = meta['ori_shape']
    cats = sorted(gt['categories'], key=lambda c: c['id'])
    label_of = {c['id']: i for i, c in enumerate(cats)}
    for j, ann in enumerate(gt['annotations']):
        ann['image_id'] = new_id[ann['image_id']]
        res = fixed[ann['image_id'] - 1]
        mine = res.bboxes[res.labels == label_of[ann['category_id']]]
        x1, y1, x2, y2 = mine[j % k].tolist()
        ann['bbox'] = [x1, y1, x2 - x1, y2 - y1]
        ann['area'] = (x2 - x1) * (y2 - y1)
        ann.pop('segmentation', None)
    path = str(tmp_path / 'gt.json')
    with open(path, 'w') as f:
        json.dump(gt, f)

    def evaluate(preds):
        metric = LVISMetric(ann_file=path, protocol=['standard', 'fixed'],
                            max_dets_per_cat=k,
                            metric_items=['AP', 'APr', 'APc', 'APf'])
        metric.dataset_meta = dict(classes=[c['name'] for c in cats])
        metric.process({}, [dict(img_id=m['img_id'],
                                 ori_shape=m['ori_shape'],
                                 pred_instances=p.to_dict())
                            for m, p in zip(metas, preds)])
        return metric.evaluate(2)

    a, b = evaluate(fixed), evaluate(uncapped)
    assert a['lvis/bbox_APfixed'] > 0
    for key in a:
        if 'fixed' in key:
            assert a[key] == b[key], key


def test_benchmark_tool_tiny_run(capsys):
    """tools/benchmark_query_predict.py runs on mmdet's DINO config at LVIS
    size (6 decoder layers, 900 queries, 1203 classes), and our head in
    mmdet's mode predicts what mmdet's does there."""
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    spec = importlib.util.spec_from_file_location(
        'benchmark_query_predict',
        osp.join(root, 'tools', 'benchmark_query_predict.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    import mmdet
    tool.main(['--config', osp.join(
        osp.dirname(mmdet.__file__), '.mim', 'configs', 'dino',
        'dino-4scale_r50_8xb2-12e_coco.py'), '--iters', '1', '--warmup', '0',
        '--devices', 'cpu', '--topk-per-class', '10'])
    lines = capsys.readouterr().out.splitlines()
    assert '900 queries x 1203 classes' in lines[1]
    row = lines[4].split()
    assert row[0] == 'cpu' and row[4].endswith('x')
    assert row[5:] == ['300', str(10 * C), 'True']
