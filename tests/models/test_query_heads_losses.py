"""mmlongtail's losses in query-based heads (mmdet's DINOHead), issue 24.

A tiny DINO (mmdet's own DINO classes: a ResNet-18 of 8 base channels,
embed_dims 256 as DINO's decoder requires, one encoder and two decoder
layers, 12 queries, 64-pixel images) with LVIS's 1203 classes, for each
listed loss:

* a train step (every loss finite, backward reaches the classifiers) and a
  predict;
* every call the head makes (2 decoder layers, the encoder proposals, the
  2 denoising layers) equals the method's formula written out here, on the
  head's own targets (recorded from the calls, i.e. from ``get_targets`` /
  ``get_dn_targets``), in value and in gradient;
* the federated draw of each call holds every positive class of that call;
* EQLv2 / EFL statistics after a step equal a hand accumulation over all
  the classification outputs of the step;
* the match cost: ``LossActivationCost`` equals mmdet's ``FocalLossCost``
  (cost matrix and Hungarian assignment) for a sigmoid loss and follows
  GOL's Gumbel activation; refusals at build and in the consistency hook;
* mmdet's shipped ``dino-4scale_r50_8xb2-12e_coco.py`` with only
  ``custom_imports``, ``num_classes`` and ``loss_cls`` changed;
* a bf16 autocast train step whose match cost stays float32.
"""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

import mmlongtail  # noqa: F401
from mmlongtail.engine.hooks.longtail_consistency_hook import \
    check_longtail_consistency
from mmlongtail.models.losses import federated_loss as fed_module
from mmlongtail.models.task_modules import LossActivationCost

register_all_modules(init_default_scope=False)

C = 1203
NUM_IMAGES = 5000
D = 256  # DINO's decoder encodes query positions with 128 features per axis


def _stats():
    """Synthetic LVIS-size statistics: every third class rare (3-9
    images), common (40-46) or frequent (400-406)."""
    cats = []
    for i in range(C):
        f = 'rcf'[i % 3]
        ic = {'r': 3, 'c': 40, 'f': 400}[f] + i % 7
        cats.append(dict(id=i + 1, name=f'c{i}', frequency=f,
                         image_count=ic, instance_count=2 * ic))
    return dict(num_images=NUM_IMAGES, categories=cats)


STATS = _stats()
IMAGE_COUNT = torch.tensor([c['image_count'] for c in STATS['categories']],
                           dtype=torch.float64)
FREQ = IMAGE_COUNT / NUM_IMAGES
FOCAL = dict(type='mmlongtail.FocalLoss', use_sigmoid=True, gamma=2.0,
             alpha=0.25, loss_weight=1.0)
LOSSES = {
    'focal': FOCAL,
    'eql': dict(type='mmlongtail.EQLLoss', num_classes=C,
                category_stats=STATS),
    'eqlv2': dict(type='mmlongtail.EQLv2Loss', num_classes=C),
    'federated': dict(type='mmlongtail.FederatedLoss', num_classes=C,
                      category_stats=STATS),
    'gol': dict(type='mmlongtail.GumbelLoss', num_classes=C,
                category_stats=STATS),
    'balms': dict(type='mmlongtail.BalancedSoftmaxLoss', num_classes=C,
                  category_stats=STATS, use_sigmoid=True),
    'class_balanced': dict(type='mmlongtail.ClassBalancedLoss',
                           num_classes=C, category_stats=STATS,
                           loss=dict(FOCAL, num_classes=C)),
    'efl': dict(type='mmlongtail.EqualizedFocalLoss', num_classes=C),
}
SIGMOID_COST = dict(type='FocalLossCost', weight=2.0)
LOSS_COST = dict(type='mmlongtail.LossActivationCost', weight=2.0)


def tiny_dino(loss_cls, cost=None, num_queries=12):
    """A DINO config small enough for a CPU test (mmdet's DINO classes)."""
    if cost is None:
        cost = LOSS_COST if loss_cls['type'] == 'mmlongtail.GumbelLoss' \
            else SIGMOID_COST
    attn = dict(embed_dims=D, num_heads=8, dropout=0.0)
    deform = dict(embed_dims=D, num_heads=8, num_levels=4, num_points=2,
                  dropout=0.0)
    ffn = dict(embed_dims=D, feedforward_channels=32, ffn_drop=0.0)
    return dict(
        type='DINO', num_queries=num_queries, with_box_refine=True,
        as_two_stage=True,
        data_preprocessor=dict(
            type='DetDataPreprocessor', mean=[0., 0., 0.], std=[1., 1., 1.],
            bgr_to_rgb=False, pad_size_divisor=1),
        backbone=dict(
            type='ResNet', depth=18, base_channels=8, num_stages=4,
            out_indices=(1, 2, 3), norm_cfg=dict(type='BN'),
            style='pytorch', init_cfg=None),
        neck=dict(type='ChannelMapper', in_channels=[16, 32, 64],
                  kernel_size=1, out_channels=D, act_cfg=None,
                  norm_cfg=dict(type='GN', num_groups=32), num_outs=4),
        encoder=dict(num_layers=1, layer_cfg=dict(self_attn_cfg=deform,
                                                  ffn_cfg=ffn)),
        decoder=dict(num_layers=2, return_intermediate=True,
                     layer_cfg=dict(self_attn_cfg=attn,
                                    cross_attn_cfg=deform, ffn_cfg=ffn),
                     post_norm_cfg=None),
        positional_encoding=dict(num_feats=D // 2, normalize=True,
                                 offset=0.0, temperature=20),
        bbox_head=dict(type='DINOHead', num_classes=C, embed_dims=D,
                       sync_cls_avg_factor=True, loss_cls=loss_cls,
                       loss_bbox=dict(type='L1Loss', loss_weight=5.0),
                       loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
        dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0,
                    group_cfg=dict(dynamic=True, num_groups=None,
                                   num_dn_queries=6)),
        train_cfg=dict(assigner=dict(
            type='HungarianAssigner',
            match_costs=[cost,
                         dict(type='BBoxL1Cost', weight=5.0,
                              box_format='xywh'),
                         dict(type='IoUCost', iou_mode='giou',
                              weight=2.0)])),
        test_cfg=dict(max_per_img=20))


def build(cfg):
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(copy.deepcopy(cfg))


def batch(n=2, size=64, seed=0):
    """Two images with 3 and 4 boxes of random LVIS-size labels."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(n):
        inputs.append(torch.rand(3, size, size, generator=g) * 255)
        meta = dict(img_shape=(size, size), ori_shape=(size, size),
                    pad_shape=(size, size), scale_factor=(1., 1.),
                    batch_input_shape=(size, size))
        sample = DetDataSample(metainfo=meta)
        k = 3 + i
        xy = torch.rand(k, 2, generator=g) * size * 0.6
        wh = torch.rand(k, 2, generator=g) * size * 0.3 + 4
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, C, (k, ), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def record_calls(loss_module):
    """Record every call of a head's ``loss_cls``: ``(cls_score, labels,
    label_weights, avg_factor, output)``."""
    calls = []

    def hook(module, args, kwargs, output):
        x, y = args[0], args[1]
        w = args[2] if len(args) > 2 else kwargs.get('label_weights')
        calls.append((x, y, w, kwargs.get('avg_factor'), output))

    handle = loss_module.register_forward_hook(hook, with_kwargs=True)
    return calls, handle


def train_step(model, seed=0):
    torch.manual_seed(seed)
    data = model.data_preprocessor(batch(seed=seed), True)
    return model(**data, mode='loss')


# ------------------------------------------------ the methods, written out
def _targets(y):
    return F.one_hot(y, C + 1)[:, :C].double()


def _bce(x, t):
    return F.binary_cross_entropy_with_logits(x, t, reduction='none')


def _focal_terms(x, t, gamma, alpha, class_gamma=None):
    p = x.sigmoid()
    pt = p * t + (1 - p) * (1 - t)
    at = alpha * t + (1 - alpha) * (1 - t)
    g = gamma if class_gamma is None else class_gamma[None, :]
    return at * (1 - pt).pow(g) * _bce(x, t)


def _gol_terms(x, t, y, seed):
    """Gumbel BCE (logits clamped to [-4, 10]) with DropLoss (Alexandridis
    et al., ECCV 2022): a rare negative term is dropped for foreground
    queries, and for background ones where a uniform draw exceeds the
    share of rare classes among the foreground."""
    rare = FREQ < 1.1e-3
    p = torch.exp(-torch.exp(-x.clamp(-4, 10)))
    # GOL's own BCE call: torch's binary_cross_entropy, whose backward
    # divides by max(p (1 - p), 1e-12) (it damps the gradient of a
    # positive with p < 1e-12, as the official code does)
    bce = F.binary_cross_entropy(p, t, reduction='none')
    fg = y < C
    ratio = (rare[y[fg]].double().mean() if fg.any() else
             torch.tensor(1.0, dtype=torch.float64))
    torch.manual_seed(seed)
    rand = torch.rand(len(y), C)
    drop = rare[None, :] & (t == 0) & (fg[:, None] |
                                       (~fg[:, None] & (rand > ratio)))
    return bce * (~drop).double()


def _federated_terms(x, t, y, w, seed):
    """BCE over U (the call's labels, background included) plus classes
    drawn with weight image_count^0.5 up to 50 (Zhou et al., 2021;
    detectron2's get_fed_loss_classes)."""
    torch.manual_seed(seed)
    unique = torch.unique(y[w > 0])
    prob = torch.zeros(C + 1)
    prob[:C] = IMAGE_COUNT.float()**0.5
    prob[unique] = 0
    drawn = torch.multinomial(prob, 50 - len(unique), replacement=False)
    mask = torch.zeros(C + 1, dtype=torch.float64)
    mask[torch.cat([unique, drawn])] = 1
    return _bce(x, t) * mask[None, :C]


def _eqlv2_weights(loss):
    q = 1 / (1 + torch.exp(-loss.gamma * (loss.pos_neg.double() - loss.mu)))
    return 1 + loss.alpha * (1 - q), q


def hand_terms(name, loss, x, y, w, seed):
    """``(N, C)`` float64 element terms of the method (before the per-query
    weight and ``avg_factor``) at the loss's current statistics."""
    t = _targets(y)
    if name == 'focal':
        return _focal_terms(x, t, 2.0, 0.25)
    if name == 'class_balanced':
        n = IMAGE_COUNT * 2  # instance counts
        cb = (1 - 0.999) / (1 - 0.999**n)
        cb = torch.cat([cb / cb.sum() * C, cb.new_ones(1)])  # bg weight 1
        return _focal_terms(x, t, 2.0, 0.25) * cb[y][:, None]
    if name == 'eql':
        tail = (FREQ < 1.76e-3).double()
        fg = (y < C).double()
        return _bce(x, t) * (1 - fg[:, None] * tail[None, :] * (1 - t))
    if name == 'eqlv2':
        pos_w, neg_w = _eqlv2_weights(loss)
        return _bce(x, t) * (t * pos_w + (1 - t) * neg_w)
    if name == 'federated':
        return _federated_terms(x, t, y, w, seed)
    if name == 'gol':
        return _gol_terms(x, t, y, seed)
    if name == 'balms':
        fg = (y < C).double()[:, None]
        return _bce(x - fg * torch.log((1 - FREQ) / FREQ)[None, :], t)
    if name == 'efl':
        g = 2.0 + 8.0 * (1 - loss.pos_neg.double())
        return _focal_terms(x, t, 2.0, 0.25, g) * (g / 2.0)[None, :]
    raise KeyError(name)


def hand_loss(name, loss, x, y, w, avg, seed=0):
    terms = hand_terms(name, loss, x, y, w, seed)
    return (terms * w.double()[:, None]).sum() / float(avg)


# ------------------------------------------------------------------ tests
@pytest.fixture(scope='module')
def models():
    """One tiny DINO per loss, built once (the build is the slow part)."""
    torch.manual_seed(0)
    built = {}
    for name, cfg in LOSSES.items():
        built[name] = build(tiny_dino(cfg))
        built[name].init_weights()  # DINO's own init (no pretrained file)
    return built


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_train_step_matches_the_method_and_predicts(name, models):
    """One train step in DINOHead with 1203 classes: every call of loss_cls
    (2 decoder layers, the encoder proposals, 2 denoising layers) equals
    the method's formula on the head's own targets, in value and in
    gradient; the backward is finite and reaches the classifier; predict
    gives scores in [0, 1]."""
    model = copy.deepcopy(models[name])
    head = model.bbox_head
    assert head.loss_cls.query_head and head.cls_out_channels == C
    before = copy.deepcopy(head.loss_cls)  # statistics of the step's start
    calls, handle = record_calls(head.loss_cls)
    losses = train_step(model)
    handle.remove()
    assert len(calls) == 5  # d0, d1, enc, dn d0, dn d1
    assert all(torch.isfinite(v).all() for v in losses.values())
    # the head's own targets: matched queries and denoising queries hold
    # every gt label of the batch (the dn part repeats each gt)
    gts = torch.cat([s.gt_instances.labels for s in batch()['data_samples']])
    assert set(calls[-1][1].tolist()) - {C} == set(gts.tolist())
    for i, (x, y, w, avg, out) in enumerate(calls):
        x64 = x.detach().double().requires_grad_()
        ref = hand_loss(name, before, x64, y, w, avg, seed=i)
        if name not in ('federated', 'gol'):  # random draws: re-called
            torch.testing.assert_close(out.double().reshape(()), ref,
                                       rtol=1e-5, atol=1e-6)
        # the loss itself on the same inputs, same draws, and its gradient
        loss = copy.deepcopy(before)
        xi = x.detach().clone().requires_grad_()
        torch.manual_seed(i)
        value = loss(xi, y, w, avg_factor=avg)
        torch.testing.assert_close(value.double().reshape(()), ref.detach(),
                                   rtol=1e-5,
                                   atol=1e-6)
        grad, = torch.autograd.grad(value.sum(), xi)
        grad_ref, = torch.autograd.grad(ref, x64)
        torch.testing.assert_close(grad.double(), grad_ref, rtol=1e-4,
                                   atol=1e-9)
    sum(losses.values()).backward()
    weight = head.cls_branches[0].weight.grad
    assert weight is not None and torch.isfinite(weight).all()
    assert weight.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(**model.data_preprocessor(batch(), False),
                    mode='predict')
    scores = out[0].pred_instances.scores
    assert len(scores) == 20 and ((scores >= 0) & (scores <= 1)).all()


def test_federated_draw_holds_every_positive_of_every_call(models,
                                                           monkeypatch):
    """One draw per loss call (detectron2's semantics: one per loss of a
    box predictor). Each call's positives are its matched targets (decoder
    layers, encoder) or the denoising targets (the gt labels; DINO noises
    the queries' input labels, not the targets), and every one of them is
    among that call's drawn classes."""
    draws = []
    original = fed_module.federated_classes

    def spy(labels, *args):
        classes = original(labels, *args)
        draws.append((labels.clone(), classes.clone()))
        return classes

    monkeypatch.setattr(fed_module, 'federated_classes', spy)
    model = copy.deepcopy(models['federated'])
    calls, handle = record_calls(model.bbox_head.loss_cls)
    train_step(model, seed=3)
    handle.remove()
    assert len(draws) == len(calls) == 5
    gts = set(torch.cat([s.gt_instances.labels for s in
                         batch(seed=3)['data_samples']]).tolist())
    for (_, classes), call in zip(draws, calls):
        positives = set(call[1][call[1] < C].tolist())
        assert positives and positives <= set(classes.tolist())
        assert positives <= gts
        assert len(classes) == 50  # U (with background) + drawn
    dn_positives = set(calls[-1][1][calls[-1][1] < C].tolist())
    assert dn_positives == gts


@pytest.mark.parametrize('name', ['eqlv2', 'efl'])
def test_statistics_accumulate_over_every_output_of_a_step(name, models):
    """The gradient statistics after one step equal a hand accumulation
    over ALL classification outputs of the step (2 decoder layers' matched
    queries, the encoder proposals, 2 layers' denoising queries), each at
    the statistics of the step's start:

    * EQLv2: the official sums, sum_i w_i (t pos_w + (1 - t) neg_w)
      |sigmoid(x) - t| split by target (unnormalized);
    * EFL: the magnitude of each output's gradient with respect to its
      logits (what the official hook sees), split by target.
    """
    model = copy.deepcopy(models[name])
    loss = model.bbox_head.loss_cls
    before = copy.deepcopy(loss)
    calls, handle = record_calls(loss)
    losses = train_step(model, seed=1)
    handle.remove()
    # nothing is added before backward: every call used the same factors
    torch.testing.assert_close(loss.pos_grad, before.pos_grad)
    sum(losses.values()).backward()
    pos = torch.zeros(C, dtype=torch.float64)
    neg = torch.zeros(C, dtype=torch.float64)
    for x, y, w, avg, _ in calls:
        t = _targets(y)
        x64 = x.detach().double().requires_grad_()
        if name == 'eqlv2':
            pos_w, neg_w = _eqlv2_weights(before)
            g = (x64.detach().sigmoid() - t).abs() * (
                t * pos_w + (1 - t) * neg_w) * w.double()[:, None]
        else:
            ref = hand_loss(name, before, x64, y, w, avg)
            g = torch.autograd.grad(ref, x64)[0].abs()
        pos += (g * t).sum(0)
        neg += (g * (1 - t)).sum(0)
    assert len(calls) == 5
    torch.testing.assert_close(loss.pos_grad.double(), pos, rtol=1e-4,
                               atol=1e-7)
    torch.testing.assert_close(loss.neg_grad.double(), neg, rtol=1e-4,
                               atol=1e-7)
    assert (loss.pos_grad > 0).sum() >= 3  # the step's positive classes


# ------------------------------------------------------------ match cost
def _pred_gt(num_queries=30, num_gt=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_queries, C, generator=g) * 3
    labels = torch.randint(0, C, (num_gt, ), generator=g)
    return logits, labels


def test_loss_activation_cost_equals_focal_loss_cost():
    """For the focal loss (sigmoid activation) LossActivationCost is
    mmdet's FocalLossCost: same matrix, same Hungarian assignment."""
    model = build(tiny_dino(FOCAL, cost=LOSS_COST))
    cost = model.bbox_head.assigner.match_costs[0]
    assert isinstance(cost, LossActivationCost)
    assert cost.loss is model.bbox_head.loss_cls  # bound by the head
    with DefaultScope.overwrite_default_scope('mmdet'):
        stock = TASK_UTILS.build(SIGMOID_COST)
    logits, labels = _pred_gt()
    pred = InstanceData(scores=logits)
    gt = InstanceData(labels=labels)
    torch.testing.assert_close(cost(pred, gt), stock(pred, gt), rtol=0,
                               atol=0)
    # in a HungarianAssigner with the box costs
    boxes = torch.rand(30, 4) * 0.5
    gt_boxes = torch.rand(6, 4) * 0.5
    gt_boxes[:, 2:] += gt_boxes[:, :2] + 0.1
    meta = dict(img_shape=(1, 1))
    pred = InstanceData(scores=logits, bboxes=torch.cat(
        [boxes[:, :2], boxes[:, :2] + boxes[:, 2:] + 0.05], 1))
    gt = InstanceData(labels=labels, bboxes=gt_boxes)
    ours = model.bbox_head.assigner.assign(pred, gt, img_meta=meta)
    with DefaultScope.overwrite_default_scope('mmdet'):
        theirs = TASK_UTILS.build(dict(
            type='HungarianAssigner',
            match_costs=[SIGMOID_COST,
                         dict(type='BBoxL1Cost', weight=5.0,
                              box_format='xywh'),
                         dict(type='IoUCost', iou_mode='giou',
                              weight=2.0)])).assign(pred, gt, img_meta=meta)
    assert torch.equal(ours.gt_inds, theirs.gt_inds)
    assert (ours.gt_inds > 0).sum() == 6


def test_cost_and_head_scoring_ask_one_rule():
    """LossActivationCost and the query heads' scoring resolve a loss's
    activation by one function (class_probability_fn): bound by hand to
    mmdet's sigmoid FocalLoss, the cost is mmdet's FocalLossCost; bound to
    a softmax loss it is refused with the same reason the head gives."""
    from mmlongtail.models.losses.protocol import class_probability_fn
    with DefaultScope.overwrite_default_scope('mmdet'):
        stock_loss = MODELS.build(dict(type='FocalLoss', use_sigmoid=True))
        softmax = MODELS.build(dict(type='CrossEntropyLoss'))
        stock = TASK_UTILS.build(SIGMOID_COST)
    cost = LossActivationCost(weight=2.0)
    cost.bind(stock_loss)
    logits, labels = _pred_gt()
    pred, gt = InstanceData(scores=logits), InstanceData(labels=labels)
    torch.testing.assert_close(cost(pred, gt), stock(pred, gt), rtol=0,
                               atol=0)
    with pytest.raises(ValueError, match='use_sigmoid=False'):
        LossActivationCost().bind(softmax)
    with pytest.raises(ValueError, match='use_sigmoid=False'):
        class_probability_fn(softmax)
    # an mmlongtail loss answers with its own class_probabilities
    gol = MODELS.build(LOSSES['gol'])
    z = torch.randn(3, C)
    torch.testing.assert_close(class_probability_fn(gol)(z),
                               torch.exp(-torch.exp(-z)))


def test_gol_matches_with_its_gumbel_activation():
    """GOL's queries are matched on its Gumbel probabilities. Query A
    fits the gt box exactly but has class logit 0, query B has logit 3 and
    a box off by d. A Hungarian matcher takes B when the class-cost gain
    cost(0) - cost(3) exceeds B's box cost; d lies halfway between that
    gain under the sigmoid and under exp(-exp(-z)), so the two activations
    match different queries. Fails if GOL's matching used the sigmoid."""
    model = build(tiny_dino(LOSSES['gol']))
    cost = model.bbox_head.assigner.match_costs[0]
    assert isinstance(cost, LossActivationCost)
    assert cost.loss is model.bbox_head.loss_cls
    with DefaultScope.overwrite_default_scope('mmdet'):
        stock = TASK_UTILS.build(SIGMOID_COST)
    label = torch.tensor([7])
    logits = torch.zeros(2, C)
    logits[1, 7] = 3.0
    gt_inst = InstanceData(labels=label)
    gain_gumbel = float(cost(InstanceData(scores=logits), gt_inst)
                        [:, 0].diff().neg())
    gain_sigmoid = float(stock(InstanceData(scores=logits), gt_inst)
                         [:, 0].diff().neg())
    assert abs(gain_gumbel - gain_sigmoid) > 0.1
    box_cost = (gain_gumbel + gain_sigmoid) / 2  # BBoxL1Cost, weight 1
    size = 100.
    gt_box = torch.tensor([[40., 40., 60., 60.]])
    shift = box_cost * size  # L1 of normalized cx only
    pred = InstanceData(scores=logits, bboxes=torch.cat(
        [gt_box, gt_box + torch.tensor([[shift, 0., shift, 0.]])]))
    gt = InstanceData(labels=label, bboxes=gt_box)
    meta = dict(img_shape=(size, size))
    l1 = dict(type='BBoxL1Cost', weight=1.0, box_format='xywh')
    with DefaultScope.overwrite_default_scope('mmdet'):
        ours = TASK_UTILS.build(dict(type='HungarianAssigner',
                                     match_costs=[LOSS_COST, l1]))
        theirs = TASK_UTILS.build(dict(type='HungarianAssigner',
                                       match_costs=[SIGMOID_COST, l1]))
    ours.match_costs[0].bind(model.bbox_head.loss_cls)
    got = ours.assign(pred, gt, img_meta=meta).gt_inds.tolist()
    sigmoid_choice = theirs.assign(pred, gt, img_meta=meta).gt_inds.tolist()
    assert got != sigmoid_choice
    # the Gumbel gain is the larger (exp(-exp(-z)) is steeper there): B
    assert gain_gumbel > gain_sigmoid and got == [0, 1]
    # and the cost is the focal form on exp(-exp(-z))
    p = torch.exp(-torch.exp(-logits[:, 7])).double()
    hand = 2.0 * (-(p + 1e-12).log() * 0.25 * (1 - p)**2 +
                  (1 - p + 1e-12).log() * 0.75 * p**2)
    torch.testing.assert_close(
        cost(InstanceData(scores=logits), gt_inst)[:, 0].double(), hand,
        rtol=1e-5, atol=1e-6)


def test_unbound_cost_and_stock_focal_cost_next_to_gol_are_refused():
    cost = LossActivationCost()
    logits, labels = _pred_gt(4, 2)
    with pytest.raises(RuntimeError, match='not bound'):
        cost(InstanceData(scores=logits), InstanceData(labels=labels))
    with pytest.raises(ValueError, match='mmlongtail.LossActivationCost'):
        build(tiny_dino(LOSSES['gol'], cost=SIGMOID_COST))


@pytest.mark.parametrize('cfg, match', [
    (dict(type='mmlongtail.SeesawLoss', num_classes=C), 'C \\+ 2'),
    (dict(type='mmlongtail.GroupSoftmaxLoss', num_classes=C,
          category_stats=STATS), 'groups|rows'),
    (dict(type='mmlongtail.BalancedSoftmaxLoss', num_classes=C,
          category_stats=STATS), 'use_sigmoid=True'),
    (dict(type='mmlongtail.ECMLoss', num_classes=C,
          category_stats=STATS), 'C \\+ 1'),
    (dict(type='mmlongtail.LDAMLoss', num_classes=C,
          category_stats=STATS), 'C \\+ 1'),
    (dict(type='mmlongtail.APALoss', num_classes=C, category_stats=STATS),
     'learned'),
    (dict(type='mmlongtail.GAPLoss', num_classes=C), 'sampled RoIs'),
])
def test_losses_without_a_query_form_are_refused_at_build(cfg, match):
    """Each names why and what to use (FederatedLoss / EQLv2Loss /
    FocalLoss)."""
    with pytest.raises(ValueError, match=match) as err:
        build(tiny_dino(cfg))
    text = str(err.value)
    assert 'DINOHead' in text and 'mmlongtail.FederatedLoss' in text
    assert 'mmlongtail.EQLv2Loss' in text and 'mmlongtail.FocalLoss' in text


def test_consistency_hook_knows_query_heads(models):
    """Accepts the losses that work (the stock DINOHead scores a sigmoid,
    so GOL there is refused naming the long-tail query head); refuses a
    loss put in place without the query-head mode, and an unbound cost."""
    for name, model in models.items():
        if name == 'gol':
            with pytest.raises(ValueError, match='LongTailDINOHead'):
                check_longtail_consistency(model)
        else:
            check_longtail_consistency(model)
    model = copy.deepcopy(models['focal'])
    with DefaultScope.overwrite_default_scope('mmdet'):
        swapped = MODELS.build(LOSSES['eqlv2'])
    object.__setattr__(model.bbox_head, '_modules', dict(
        model.bbox_head._modules, loss_cls=swapped))
    with pytest.raises(ValueError, match='query-head mode'):
        check_longtail_consistency(model)
    model = copy.deepcopy(models['eqlv2'])
    with DefaultScope.overwrite_default_scope('mmdet'):
        model.bbox_head.assigner.match_costs[0] = TASK_UTILS.build(
            LOSS_COST)
    with pytest.raises(ValueError, match='not bound'):
        check_longtail_consistency(model)


def test_mmdet_shipped_dino_config():
    """mmdet's own dino-4scale_r50_8xb2-12e_coco.py with only
    custom_imports, num_classes and loss_cls changed builds (mmdet's own
    initialisation, without downloading the pretrained backbone) and trains
    one step on two small images."""
    import mmdet
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'dino',
                    'dino-4scale_r50_8xb2-12e_coco.py')
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(dict(
        custom_imports=dict(imports=['mmlongtail'],
                            allow_failed_imports=False),
        model=dict(bbox_head=dict(
            num_classes=C,
            loss_cls=dict(_delete_=True, **LOSSES['federated'])))))
    torch.manual_seed(0)
    model = build(cfg.model)
    # mmdet's own initialisation (level embeddings, the transformer's
    # xavier init, DINO's classifier bias), but no download of the
    # ImageNet backbone: the built module's init_cfg, not the config
    model.backbone.init_cfg = None
    model.init_weights()
    assert model.bbox_head.loss_cls.query_head
    check_longtail_consistency(model)
    torch.manual_seed(0)
    # 224 px: enough encoder points (1045) for DINO's top-900 proposals
    data = model.data_preprocessor(batch(size=224), True)
    losses = model(**data, mode='loss')
    assert all(torch.isfinite(v).all() for v in losses.values())
    sum(losses.values()).backward()


def test_bf16_autocast_train_step_keeps_the_cost_float32(models):
    """A bf16 autocast train step (GOL: the cost asks the Gumbel activation)
    is finite, and the match cost computed in float32."""
    model = copy.deepcopy(models['gol'])
    cost = model.bbox_head.assigner.match_costs[0]
    cost.last_dtype = None
    torch.manual_seed(0)
    data = model.data_preprocessor(batch(), True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model(**data, mode='loss')
    assert cost.last_dtype == torch.float32
    assert all(torch.isfinite(v).all() for v in losses.values())
    sum(losses.values()).backward()
    assert np.isfinite(
        model.bbox_head.cls_branches[0].weight.grad.float().sum().item())


def test_statistics_collectives_do_not_depend_on_the_batch(name='eqlv2'):
    """Review of issue 24: a rank whose images have no boxes has no
    denoising query, and mmdet's DINOHead then skips loss_cls for the
    denoising part. EQLv2 / EFL all-reduce each call's sums, so that rank
    would make fewer collectives than the others (3 against 5 here) and
    pair them wrongly under DDP. LongTailDINOHead makes the same number of
    statistics collectives with or without ground truth, and the empty
    calls add nothing."""
    cfg = tiny_dino(LOSSES[name])
    cfg['bbox_head']['type'] = 'mmlongtail.LongTailDINOHead'
    torch.manual_seed(0)
    model = build(cfg)
    loss = model.bbox_head.loss_cls
    counts = []
    reduce = loss.reduce_gradient_sums

    def counted(*args):
        counts[-1] += 1
        return reduce(*args)

    loss.reduce_gradient_sums = counted
    for empty in (False, True):
        counts.append(0)
        data = batch(seed=1)
        if empty:
            for sample in data['data_samples']:
                sample.gt_instances = sample.gt_instances[:0]
            before = loss.pos_grad.clone(), loss.neg_grad.clone()
        torch.manual_seed(1)
        losses = model(**model.data_preprocessor(data, True), mode='loss')
        sum(v.sum() for v in losses.values()).backward()
    assert counts == [5, 5]
    # no positive anywhere: the empty step adds no positive gradient
    torch.testing.assert_close(loss.pos_grad, before[0], rtol=0, atol=0)
    assert float(losses['dn_loss_cls'].detach()) == 0.0


def test_consistency_hook_refuses_statistics_losses_in_mmdet_dino_ddp(
        models, monkeypatch):
    """Review of issue 24: under a multi-rank process group, EQLv2 / EFL
    in mmdet's own DINOHead (which skips loss_cls for the denoising part
    of a rank without boxes) is refused, naming LongTailDINOHead; without
    one (or with a loss that keeps no statistics) it is accepted."""
    from mmlongtail.utils import dist as dist_utils
    check_longtail_consistency(models['eqlv2'])
    monkeypatch.setattr(dist_utils, 'is_distributed', lambda: True)
    for name in ('eqlv2', 'efl'):
        with pytest.raises(ValueError, match='LongTailDINOHead'):
            check_longtail_consistency(models[name])
    check_longtail_consistency(models['federated'])
