"""PCBLoss (He et al., CVPR 2022): numbers of the official code over several
iterations for each wrapped loss, the epoch and "all classes seen" gates,
exact resume, autocast, refusals and a real Shared2FCBBoxHead."""
import pytest
import torch
from mmengine.logging import MessageHub

import mmlongtail  # noqa: F401
from mmlongtail.engine import check_longtail_consistency
from mmlongtail.registry import MODELS

C, N, ITERS = 4, 10, 4
BASES = {
    'softmax': (dict(type='CrossEntropyLoss', use_sigmoid=False), 0.4, C + 1),
    'eqlv2': (dict(type='mmlongtail.EQLv2Loss', num_classes=C), 0.2, C + 1),
    'seesaw': (dict(type='mmlongtail.SeesawLoss', num_classes=C), 0.3, C + 2),
}

# Printed from the official CrossEntropyPCBLoss, EQLv2PCBLoss and
# SeesawPCBLoss (megvii-research/PCB, mmdet/models/losses/*_pcb_loss.py;
# CUDA, broadcast and all_gather replaced by their one-process CPU meaning)
# on _inputs below, with start_epoch=1, _epoch=1, all-one weights,
# avg_factor=N; loss, the gradient's dot product with _probe and its L1
# norm per iteration, then the confusion matrix and instance counts.
OFFICIAL = {
    'softmax': dict(
        loss=[2.227519, 1.826762, 2.404647, 2.605788],
        grad_probe=[-0.016208, 0.014805, 0.012194, 0.013781],
        grad_abs=[1.590027, 1.122263, 1.351972, 1.484385],
        matrix=[[0.421172, 0.072595, 0.339442, 0.166791],
                [0.072124, 0.049269, 0.218996, 0.659611],
                [0.225006, 0.389345, 0.050918, 0.334731],
                [0.265506, 0.105364, 0.02333, 0.6058]],
        counts=[11.0, 5.0, 6.0, 10.0]),
    'eqlv2': dict(
        loss=[4.428093, 3.489999, 5.520808, 5.17431],
        grad_probe=[-0.172917, 0.228788, 0.065635, 0.165511],
        grad_abs=[2.149395, 1.417182, 1.926962, 2.015217],
        matrix=[[0.019136, 0.015504, 0.015979, 0.020452],
                [0.020487, 0.015524, 0.023946, 0.024149],
                [0.013138, 0.013424, 0.007768, 0.009724],
                [0.018125, 0.012239, 0.008879, 0.021051]],
        counts=[11.0, 5.0, 6.0, 10.0]),
    'seesaw': dict(
        loss=[2.844191, 8.0943, 7.217158, 4.818474],
        grad_probe=[0.015134, 0.01649, 0.029597, 0.004276],
        grad_abs=[1.435149, 2.673337, 2.596319, 1.759097],
        matrix=[[0.499035, 0.025938, 0.324329, 0.150698],
                [0.008449, 0.945202, 0.010068, 0.036281],
                [0.039117, 0.280068, 0.418045, 0.26277],
                [0.130534, 0.392905, 0.408358, 0.068203]],
        counts=[6.0, 10.0, 7.0, 10.0]),
}


@pytest.fixture(autouse=True)
def _no_runner_epoch():
    """A message hub of our own, without a runner's epoch (counts as 1)."""
    MessageHub.get_instance('test_pcb_loss')
    MessageHub.get_current_instance().runtime_info.pop('epoch', None)
    yield


def _inputs(width, it):
    g = torch.Generator().manual_seed(100 + it)
    x = torch.randn(N, width, generator=g) * 2
    y = torch.randint(0, C + 1, (N, ), generator=g)
    if it == 0:
        y[y == C - 1] = C  # class C - 1 unseen at first: PCB waits
    else:
        y[:C] = torch.arange(C)
    return x, y


def _probe(width):
    return torch.linspace(-1, 1, N * width).view(N, width)


def _pcb(kind, **over):
    base, alpha, _ = BASES[kind]
    cfg = dict(type='mmlongtail.PCBLoss', num_classes=C, alpha=alpha,
               start_epoch=1, loss=base)
    cfg.update(over)
    return MODELS.build(cfg)


def _total(out):
    return sum(out.values()) if isinstance(out, dict) else out


def _step(loss, kind, it, x=None):
    width = BASES[kind][2]
    x0, y = _inputs(width, it)
    x = (x0 if x is None else x).clone().requires_grad_()
    out = _total(loss(x, y, torch.ones(N), avg_factor=float(N)))
    out.backward()
    return out, x.grad


@pytest.mark.parametrize('kind', sorted(BASES))
def test_equals_official_over_iterations(kind):
    ref = OFFICIAL[kind]
    loss = _pcb(kind)
    width = BASES[kind][2]
    for it in range(ITERS):
        out, grad = _step(loss, kind, it)
        assert out.item() == pytest.approx(ref['loss'][it], abs=2e-6)
        assert (grad * _probe(width)).sum().item() == pytest.approx(
            ref['grad_probe'][it], abs=2e-6)
        assert grad.abs().sum().item() == pytest.approx(
            ref['grad_abs'][it], abs=2e-6)
    torch.testing.assert_close(
        loss.confusion_matrix, torch.tensor(ref['matrix']), atol=2e-6,
        rtol=0)
    assert loss.instance_count.tolist() == ref['counts']
    assert loss.confusion_matrix.dtype == torch.float32
    # PCB did act: without it (alpha 0) the last loss differs
    plain = _pcb(kind, alpha=0.0)
    for it in range(ITERS):
        out0, _ = _step(plain, kind, it)
    assert abs(out0.item() - ref['loss'][-1]) > 1e-3
    torch.testing.assert_close(plain.confusion_matrix, loss.confusion_matrix)


def test_waits_for_start_epoch_and_every_class():
    kind = 'softmax'
    hub = MessageHub.get_current_instance()
    x, y = _inputs(C + 1, 1)
    plain = _total(_pcb(kind, alpha=0.0)(x, y, avg_factor=float(N)))
    for epoch, acts in ((15, False), (16, True)):  # 0-based runtime epoch
        hub.update_info('epoch', epoch)
        pcb = _pcb(kind, start_epoch=17)
        assert pcb.current_epoch() == epoch + 1
        got = _total(pcb(x, y, avg_factor=float(N)))
        assert (got != plain) == acts
    # a class never seen: the matrix updates, PCB waits
    pcb = _pcb(kind, start_epoch=0)
    y0 = y.masked_fill(y == 2, C)
    _total(pcb(x, y0, avg_factor=float(N)))
    assert pcb.instance_count[2] == 0 and pcb.confusion_matrix.abs().sum()
    torch.testing.assert_close(
        _total(pcb(x, y0, avg_factor=float(N))),
        _total(_pcb(kind, alpha=0.0)(x, y0, avg_factor=float(N))))


@pytest.mark.parametrize('kind', sorted(BASES))
def test_resume_is_exact(kind):
    run = _pcb(kind)
    for it in range(2):
        _step(run, kind, it)
    state = {k: v.clone() for k, v in run.state_dict().items()}
    assert {'confusion_matrix', 'instance_count'} <= set(state)
    resumed = _pcb(kind)
    resumed.load_state_dict(state)
    for it in range(2, ITERS):
        a, ga = _step(run, kind, it)
        b, gb = _step(resumed, kind, it)
        assert torch.equal(a, b) and torch.equal(ga, gb)
    assert torch.equal(run.confusion_matrix, resumed.confusion_matrix)


def test_autocast_bf16_keeps_float32_matrix():
    kind = 'seesaw'
    loss = _pcb(kind).half()  # buffers stay float32 whatever the cast
    assert loss.confusion_matrix.dtype == torch.float32
    assert loss.instance_count.dtype == torch.float32
    fc = torch.nn.Linear(8, C + 2)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(N, 8, generator=g)
    for it in range(2):
        _, y = _inputs(C + 2, it + 1)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            score = fc(feats)
            assert score.dtype == torch.bfloat16
            out = _total(loss(score, y, avg_factor=float(N)))
        assert out.dtype == torch.float32 and torch.isfinite(out)
        out.backward()
    assert torch.isfinite(fc.weight.grad).all()
    assert loss.confusion_matrix.dtype == torch.float32
    assert torch.allclose(loss.confusion_matrix.sum(1), torch.ones(C))


def test_refuses_what_it_cannot_wrap():
    with pytest.raises(ValueError, match='cannot wrap FocalLoss'):
        _pcb('softmax', loss=dict(type='mmlongtail.FocalLoss',
                                  num_classes=C))
    with pytest.raises(ValueError, match='use_sigmoid'):
        _pcb('softmax', loss=dict(type='CrossEntropyLoss', use_sigmoid=True))
    with pytest.raises(ValueError, match='5'):
        _pcb('seesaw', loss=dict(type='mmlongtail.SeesawLoss',
                                 num_classes=C + 1))
    for bad in (dict(alpha=1.5), dict(momentum=1.0), dict(start_epoch=-1)):
        with pytest.raises(ValueError):
            _pcb('softmax', **bad)
    with pytest.raises(ValueError, match='dense head'):
        from mmdet.models.dense_heads import RetinaHead
        RetinaHead(num_classes=C, in_channels=4, feat_channels=4,
                   stacked_convs=1,
                   loss_cls=dict(type='mmlongtail.PCBLoss', num_classes=C,
                                 alpha=0.1,
                                 loss=BASES['softmax'][0]))


def _head(kind, **over):
    from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
    base, alpha, _ = BASES[kind]
    loss_cls = dict(type='mmlongtail.PCBLoss', num_classes=C, alpha=alpha,
                    start_epoch=1, loss=base)
    loss_cls.update(over)
    return Shared2FCBBoxHead(
        in_channels=4, fc_out_channels=16, roi_feat_size=2, num_classes=C,
        reg_class_agnostic=True, loss_cls=loss_cls)


@pytest.mark.parametrize('kind', sorted(BASES))
def test_consistency_hook_accepts_it_in_a_bbox_head(kind):
    head = _head(kind)
    assert head.fc_cls.out_features == BASES[kind][2]
    check_longtail_consistency(head, max_epochs=1)
    with pytest.raises(ValueError, match='acts from epoch 17.*24'):
        check_longtail_consistency(_head(kind, start_epoch=17),
                                   max_epochs=12)
    check_longtail_consistency(_head(kind, start_epoch=17), max_epochs=24)


def test_shared2fc_bbox_head_trains():
    """A few SGD steps of a real head with Seesaw + PCB: the loss terms come
    out, the matrix follows the RoIs, and the classifier's scores are the
    Seesaw activation."""
    torch.manual_seed(0)
    head = _head('seesaw')
    opt = torch.optim.SGD(head.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(30, 4, 2, 2, generator=g)
    labels = torch.arange(30) % (C + 1)
    rois = torch.cat([torch.zeros(30, 1), torch.rand(30, 4, generator=g)], 1)
    for _ in range(5):
        cls_score, bbox_pred = head(feats)
        losses = head.loss(cls_score, bbox_pred, rois, labels,
                           torch.ones(30), torch.zeros(30, 4),
                           torch.ones(30, 4))
        assert {'loss_cls_objectness', 'loss_cls_classes',
                'loss_pcb_classes', 'acc_objectness', 'acc_classes',
                'loss_bbox'} <= set(losses)
        assert losses['loss_pcb_classes'] > 0
        total = sum(v for k, v in losses.items() if 'loss' in k)
        opt.zero_grad()
        total.backward()
        opt.step()
    pcb = head.loss_cls
    assert pcb.instance_count.tolist() == [30.0] * C  # 6 RoIs x 5 steps
    torch.testing.assert_close(pcb.confusion_matrix.sum(1), torch.ones(C))
    assert pcb.loss.cum_samples.tolist() == [30.0] * (C + 1)
    scores = head.loss_cls.get_activation(cls_score.detach())
    assert scores.shape == (30, C + 1)
    torch.testing.assert_close(scores.sum(1), torch.ones(30))


def test_consistency_hook_reads_the_train_loops_epochs():
    from types import SimpleNamespace

    from mmlongtail.engine.hooks.longtail_consistency_hook import \
        LongTailConsistencyHook
    head = _head('seesaw', start_epoch=5)

    def runner(max_epochs):
        loop = SimpleNamespace(max_epochs=max_epochs, dataloader=None)
        return SimpleNamespace(model=head, train_loop=loop, val_loop=loop)

    LongTailConsistencyHook().before_train(runner(5))
    LongTailConsistencyHook().before_val(runner(1))  # val: not checked
    with pytest.raises(ValueError, match='never act.*SeesawLoss'):
        LongTailConsistencyHook().before_train(runner(4))
