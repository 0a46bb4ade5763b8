"""LDAM loss with deferred re-weighting (Cao et al., NeurIPS 2019): margins
and loss by hand, values pinned from the official code, the DRW weights and
switch (through a real Runner, and after a resume), a real
``Shared2FCBBoxHead`` training step and the consistency checks."""
import math
import os.path as osp
import uuid

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmlongtail  # noqa: F401
from mmlongtail.engine import check_longtail_consistency
from mmlongtail.engine.hooks import DRWHook
from mmlongtail.models.layers.normed_predictor import NormedLinear
from mmlongtail.models.losses import LDAMLoss
from mmlongtail.models.losses.ldam_loss import ldam_margins
from mmlongtail.models.losses.protocol import unwatch_host

#: instance counts with round fourth roots: n^(-1/4) = 0.1, 1/3, 1/2, 1
COUNTS = [10000, 81, 16, 1]
C = len(COUNTS)
#: cosine logits (a NormedLinear of temperature 1); labels, 4 = background
X = torch.tensor([[0.2, -0.1, 0.4, 0.0, 0.3],
                  [0.5, 0.1, -0.3, 0.2, -0.2],
                  [-0.4, 0.3, 0.1, 0.6, 0.0],
                  [0.1, 0.2, 0.3, -0.5, 0.7],
                  [0.0, -0.2, 0.1, 0.3, 0.25]], dtype=torch.float64)
Y = torch.tensor([2, 0, 3, 4, 1])


def _stats(counts=COUNTS):
    return dict(
        num_images=20000,
        categories=[
            dict(id=i + 1, name=f'c{i}', frequency='f', image_count=1,
                 instance_count=n) for i, n in enumerate(counts)
        ])


def _loss(**kw):
    return LDAMLoss(num_classes=C, category_stats=_stats(), **kw)


def test_margins_equal_the_formula():
    # 0.5 * n^(-1/4) / max_k n_k^(-1/4), max_k n_k^(-1/4) = 1 (n = 1)
    np.testing.assert_allclose(
        ldam_margins(np.array(COUNTS), 0.5), [0.05, 0.5 / 3, 0.25, 0.5])
    np.testing.assert_allclose(
        ldam_margins(np.array([16, 81]), 1.0), [1.0, 2 / 3])
    loss = _loss(max_margin=0.5)
    # background last, without margin
    torch.testing.assert_close(
        loss.margin, torch.tensor([0.05, 0.5 / 3, 0.25, 0.5, 0.0]))
    with pytest.raises(ValueError, match=r'classes \[1\]'):
        ldam_margins(np.array([3, 0]), 0.5)
    with pytest.raises(ValueError, match='max_margin'):
        ldam_margins(np.array([3, 4]), 0.0)


def test_loss_and_gradient_by_hand():
    """CE of z = s x with s Delta_y taken off the true logit (not the
    background's), written out; d/dz = softmax(z') - onehot, over N."""
    s, margin = 30.0, [0.05, 0.5 / 3, 0.25, 0.5, 0.0]
    z = (s * X).clone().requires_grad_(True)
    got = _loss()(z, Y)
    total, grads = 0.0, []
    for row, y in zip((s * X).tolist(), Y.tolist()):
        row = list(row)
        row[y] -= s * margin[y]
        norm = sum(math.exp(v) for v in row)
        total += math.log(norm) - row[y]
        grads.append([math.exp(v) / norm - (j == y) for j, v in
                      enumerate(row)])
    # the margins are a float32 buffer
    assert float(got.detach()) == pytest.approx(total / len(Y), rel=1e-7)
    got.backward()
    torch.testing.assert_close(
        z.grad, torch.tensor(grads, dtype=torch.float64) / len(Y),
        rtol=1e-6, atol=1e-9)


def test_equals_the_official_ldam_loss():
    """Values printed from kaidic/LDAM-DRW losses.py ``LDAMLoss`` (max_m 0.5,
    s 30; run in float64 on the cosines X, background as a fifth class of
    margin 0), and the DRW run (cifar_train.py's ``per_cls_weights`` at
    epoch 160, background weighing 1). Ours takes the scaled logits 30 X; the
    official weighted mean divides by the sum of the batch's weights, which
    ours does with that avg_factor."""
    z = (30 * X).clone().requires_grad_(True)
    loss = _loss()
    official_none = [4.5592360054e+00, 5.8045590281e-04, 6.0050680506e+00,
                     6.4653237536e-06, 2.0203538630e+01]
    torch.testing.assert_close(
        loss(z, Y, reduction_override='none'),
        torch.tensor(official_none, dtype=torch.float64), rtol=1e-6,
        atol=1e-9)
    out = loss(z, Y)
    assert float(out) == pytest.approx(6.1536859215, rel=1e-6)
    out.backward()
    out = out.detach()
    # the official gradient w.r.t. the cosines, row 0 and row 4
    torch.testing.assert_close(
        30 * z.grad[[0, 4]],
        torch.tensor([[2.8154118513e-01, 3.4744942500e-05, -5.9371796703e+00,
                       6.9787082547e-04, 5.6549058694e+00],
                      [6.0409504580e-04, -5.9999999899e+00, 1.2133573348e-02,
                       4.8950328563e+00, 1.0922294652e+00]],
                     dtype=torch.float64), rtol=1e-5, atol=1e-8)
    drw = _loss(drw_epoch=160)
    drw.set_epoch(160)
    w = drw.class_weight.double()[Y]
    assert float(drw(30 * X, Y, avg_factor=float(w.sum()))) == \
        pytest.approx(4.8670152330, rel=1e-6)


def test_drw_weights_equal_the_official_and_switch_at_drw_epoch():
    # cifar_train.py, train_rule 'DRW': beta [0, 0.9999][epoch // 160],
    # (1 - beta) / (1 - beta^n), scaled to sum to C; printed from it
    official = [5.88570501e-04, 4.61171121e-02, 2.32710914e-01,
                3.72058340e+00]
    loss = _loss(drw_epoch=160, drw_bg_weight=0.5)
    for epoch, on in ((0, False), (159, False), (160, True), (199, True)):
        loss.set_epoch(epoch)
        assert int(loss.epoch) == epoch and loss.drw_active(epoch) == on
        expected = official + [0.5] if on else [1.0] * (C + 1)
        np.testing.assert_allclose(loss.class_weight.numpy(), expected,
                                   rtol=1e-6)
    assert float(loss.class_weight[:C].sum()) == pytest.approx(C)
    # without drw_epoch: never re-weighted
    plain = _loss()
    plain.set_epoch(10**6)
    assert (plain.class_weight == 1).all()


def test_refuses_training_without_the_epoch_and_bad_arguments():
    loss = _loss(drw_epoch=3)
    with pytest.raises(RuntimeError, match='DRWHook'):
        loss(30 * X, Y)
    loss.eval()
    assert torch.isfinite(loss(30 * X, Y))
    for bad in (dict(drw_epoch=-1), dict(drw_epoch=1.5),
                dict(count='boxes'), dict(scale=0),
                dict(drw_bg_weight=-1.0)):
        with pytest.raises(ValueError):
            _loss(**bad)
    with pytest.raises(ValueError, match='EQLv2Loss'):
        _loss(use_sigmoid=True)
    with pytest.raises(ValueError, match=r'classes \[1\]'):
        LDAMLoss(num_classes=2, category_stats=_stats([4, 0]))


# --- the switch through a real Runner, and after a resume -----------------


class _Samples(Dataset):
    """Sample ``i``: fixed features, label ``i % (C + 1)``."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(6, generator=g),
                    data_samples=torch.tensor(i % (C + 1)))


class _Classifier(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = NormedLinear(6, C + 1, temperature=30, bias=False)
        self.loss = LDAMLoss(num_classes=C, category_stats=_stats(),
                             drw_epoch=2)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = self.fc(torch.stack(inputs))
        if mode != 'loss':
            return [dict(out=o) for o in x.detach()]
        return dict(loss_cls=self.loss(x, torch.stack(data_samples)))


class _Record(Hook):
    """Epoch and weights the loss trains each iteration with."""
    priority = 'LOWEST'

    def __init__(self):
        self.seen = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        loss = runner.model.loss
        self.seen.append(
            (runner.epoch, int(loss.epoch), loss.class_weight.clone()))


def _runner(work_dir, epochs, resume=False):
    torch.manual_seed(0)
    runner = Runner(
        model=_Classifier(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_Samples(), batch_size=5, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05,
                                          momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=1),
                           logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[dict(type='mmlongtail.DRWHook')],
        default_scope='mmdet',
        randomness=dict(seed=3),  # the runner re-initializes the model
        resume=resume,
        experiment_name=f'drw-{uuid.uuid4().hex}',
        log_level='WARNING')
    record = _Record()
    runner.register_hook(record)
    return runner, record


def test_drw_switches_at_its_epoch_in_a_runner_and_after_a_resume(tmp_path):
    full, rec = _runner(tmp_path / 'full', 3)
    full.train()
    cb = full.model.loss.drw_weights(True).float()
    ones = torch.ones(C + 1)
    assert [(e, told) for e, told, _ in rec.seen] == \
        [(0, 0), (0, 0), (1, 1), (1, 1), (2, 2), (2, 2)]
    for epoch, _, weight in rec.seen:
        torch.testing.assert_close(weight, cb if epoch >= 2 else ones)
    # the checkpoints hold the state of the epoch they end
    for n, weight in ((2, ones), (3, cb)):
        state = torch.load(osp.join(tmp_path / 'full', f'epoch_{n}.pth'),
                           map_location='cpu')['state_dict']
        torch.testing.assert_close(state['loss.class_weight'], weight)
        assert int(state['loss.epoch']) == n - 1
    # stopped after two epochs, resumed for the third: the same run
    part, _ = _runner(tmp_path / 'part', 2)
    part.train()
    resumed, rec2 = _runner(tmp_path / 'part', 3, resume=True)
    resumed.train()
    assert [(e, told) for e, told, _ in rec2.seen] == [(2, 2), (2, 2)]
    torch.testing.assert_close(rec2.seen[0][2], cb)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value,
                                   rtol=0, atol=0)


def test_drw_hook_refuses_a_model_without_drw_and_an_iteration_loop():
    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
    model = nn.Module()
    model.loss = _loss()
    runner = type('R', (), {'model': model})()
    with pytest.raises(ValueError, match='drw_epoch'):
        DRWHook().before_train(runner)
    model.loss = _loss(drw_epoch=1)
    runner.train_loop = object.__new__(EpochBasedTrainLoop)
    DRWHook().before_train(runner)
    runner.train_loop = object.__new__(IterBasedTrainLoop)
    with pytest.raises(ValueError, match='EpochBasedTrainLoop'):
        DRWHook().before_train(runner)


# --- a real Shared2FCBBoxHead, the consistency checks ---------------------


def _bbox_head(predictor=None):
    from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
    return Shared2FCBBoxHead(
        in_channels=4, fc_out_channels=16, roi_feat_size=2, num_classes=C,
        cls_predictor_cfg=predictor or dict(
            type='mmlongtail.NormedLinear', temperature=30, bias=False),
        loss_cls=dict(type='mmlongtail.LDAMLoss', num_classes=C,
                      category_stats=_stats(), drw_epoch=1))


def test_shared2fc_bbox_head_trains():
    torch.manual_seed(0)
    head = _bbox_head()
    assert head.fc_cls.out_features == C + 1
    check_longtail_consistency(head)
    head.loss_cls.set_epoch(1)  # re-weighted
    feats = torch.randn(12, 4, 2, 2)
    labels = torch.tensor([0, 1, 2, 3, 4, 4, 4, 4, 0, 1, 2, 3])
    rois = torch.cat([torch.zeros(12, 1), torch.rand(12, 2) * 8,
                      torch.rand(12, 2) * 8 + 8], dim=1)
    targets = torch.zeros(12, 4)
    weights = torch.ones(12, 4)
    opt = torch.optim.SGD(head.parameters(), lr=0.05)
    history = []
    for _ in range(5):
        cls_score, bbox_pred = head(feats)
        losses = head.loss(cls_score, bbox_pred, rois, labels,
                           torch.ones(12), targets, weights)
        assert torch.isfinite(losses['loss_cls'])
        history.append(float(losses['loss_cls']))
        opt.zero_grad()
        (losses['loss_cls'] + losses['loss_bbox']).backward()
        assert head.fc_cls.weight.grad.abs().sum() > 0
        opt.step()
    assert history[-1] < history[0]
    # the head's loss equals the loss on the same logits, avg over the RoIs
    cls_score, _ = head(feats)
    torch.testing.assert_close(
        head.loss(cls_score, bbox_pred.detach(), rois, labels,
                  torch.ones(12), targets, weights)['loss_cls'],
        head.loss_cls(cls_score, labels, avg_factor=12.0))
    scores = head.loss_cls.get_activation(cls_score)
    torch.testing.assert_close(scores.sum(1), torch.ones(12))


def test_consistency_refuses_what_cannot_work():
    with pytest.raises(ValueError, match=r"NormedLinear', temperature=30"):
        check_longtail_consistency(_bbox_head(dict(type='Linear')))
    with pytest.raises(ValueError, match='temperature 20'):
        check_longtail_consistency(_bbox_head(
            dict(type='mmlongtail.NormedLinear', temperature=20)))
    from mmdet.registry import MODELS as MMDET_MODELS
    retina = dict(
        type='RetinaHead', num_classes=C, in_channels=4, feat_channels=4,
        stacked_convs=1,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                              scales_per_octave=1, ratios=[1.0],
                              strides=[8]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
        loss_cls=dict(type='mmlongtail.LDAMLoss', num_classes=C,
                      category_stats=_stats()))
    # refused when the dense head builds it ...
    with pytest.raises(ValueError, match='EqualizedFocalLoss'):
        MMDET_MODELS.build(dict(retina))
    # ... and by the hook where it was put in place some other way
    head = MMDET_MODELS.build(dict(retina, loss_cls=dict(type='FocalLoss')))
    loss = _loss()
    unwatch_host(loss)
    head.loss_cls = loss
    with pytest.raises(ValueError, match='a dense head.*EqualizedFocalLoss'):
        check_longtail_consistency(head)
