"""ROG's GAP ranking loss (mmlongtail.GAPLoss, gap_loss): pinned against the
official code, equal to the loop form the benchmark times, edge cases, the
running counts, and a real Shared2FCBBoxHead training on it."""
import importlib.util
import os

import pytest
import torch

from mmlongtail.models.losses import GAPLoss
from mmlongtail.models.losses.gap_loss import gap_class_weights, gap_loss
from mmlongtail_bench.gap_loop import gap_loop

# Pinned inputs: 6 RoIs, C = 3 (labels 3 are background), running counts.
Z = torch.tensor([[-1.2, 0.6, 2.9], [-0.5, 0.3, 1.2], [1.6, -1.1, -1.3],
                  [-1.8, -2.7, -0.5], [-3.1, 1.0, -2.0], [-2.0, -1.3, -0.8]])
Y = torch.tensor([0, 2, 3, 0, 1, 3])
COUNTS = torch.tensor([5., 40., 2.])

# Printed from the official code (github.com/EricZsy/ROG,
# mmdet/models/losses/gap_loss.py, GAPLoss.apply(Z.reshape(-1), Y, COUNTS,
# 3, gamma, lam[, delta, eps]) and backward of its scalar), run on CPU.
OFFICIAL = {
    # the official configs' call: gamma 1, lam 0.1, default delta 0.5
    (1.0, 0.1, 0.5): (0.8363220691680908, torch.tensor(
        [[-0.01300940, 0.00283995, 0.03276921],
         [0.00270732, 0.00270732, -0.05459770],
         [0.02989565, 0.00208036, 0.00176689],
         [-0.01208321, 0.00000000, 0.00270732],
         [0.00000000, -0.00278515, 0.00034198],
         [0.00034198, 0.00176689, 0.00255058]])),
    # gamma 0 (equal weights), lam 1, the hard step (delta 0)
    (0.0, 1.0, 0.0): (0.7314814925193787, torch.tensor(
        [[-0.14814815, 0.03240741, 0.25462964],
         [0.03240741, 0.03240741, -0.22222221],
         [0.25462964, 0.03240741, 0.01388889],
         [-0.13888888, 0.00000000, 0.03240741],
         [0.00000000, -0.22222221, 0.00000000],
         [0.00000000, 0.01388889, 0.03240741]])),
}


def _ours(z, y, weights, lam, delta, weight=None):
    x = z.clone().requires_grad_(True)
    per_roi = gap_loss(x, y, weights, lam, delta, weight=weight)
    per_roi.sum().backward()
    return per_roi, x.grad


@pytest.mark.parametrize('key', sorted(OFFICIAL))
def test_equals_pinned_official_values(key):
    gamma, lam, delta = key
    value, grad = OFFICIAL[key]
    per_roi, got = _ours(Z, Y, gap_class_weights(COUNTS, gamma), lam, delta)
    assert per_roi.sum().item() == pytest.approx(value, abs=1e-6)
    torch.testing.assert_close(got, grad, atol=1e-7, rtol=1e-5)
    # only positive RoIs carry the error
    assert (per_roi[Y == 3] == 0).all()


def test_class_weights_formula():
    w = gap_class_weights(COUNTS, 1.0)
    inv = 1 / COUNTS
    torch.testing.assert_close(w, inv / (inv.sum() + 1e-9) * 3)
    torch.testing.assert_close(gap_class_weights(COUNTS, 0.0),
                               torch.ones(3))


def _random(seed, num, num_classes, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(num, num_classes, generator=g) * scale
    y = torch.randint(0, num_classes + 1, (num, ), generator=g)
    counts = torch.randint(1, 100, (num_classes, ), generator=g).float()
    return z, y, gap_class_weights(counts, 1.0)


@pytest.mark.parametrize('delta', [0.5, 0.2, 0.0])
@pytest.mark.parametrize('shape', [(10, 1), (16, 4), (40, 9)])
def test_equals_the_loop_form(shape, delta):
    """The benchmark's yardstick computes the same value and gradient."""
    for seed in range(3):
        z, y, w = _random(seed, *shape)
        if delta == 0.0:  # ties matter for the hard step: make some
            z = (z * 2).round() / 2
        per_roi, grad = _ours(z, y, w, 0.1, delta)
        value, loop_grad = gap_loop(z, y, w, 0.1, delta)
        assert per_roi.sum().item() == pytest.approx(value.item(), abs=1e-6)
        torch.testing.assert_close(grad, loop_grad, atol=1e-7, rtol=1e-5)


def test_no_positives_is_a_connected_zero():
    z = torch.randn(5, 3, requires_grad=True)
    y = torch.full((5, ), 3)
    per_roi = gap_loss(z, y, torch.ones(3))
    assert per_roi.shape == (5, ) and (per_roi == 0).all()
    per_roi.sum().backward()
    assert (z.grad == 0).all()
    # the whole loss: CE only, GAP zero
    loss = GAPLoss(num_classes=3)(torch.randn(5, 4), y)
    assert loss['loss_rank'] == 0 and loss['loss_cls'] > 0


def test_single_class():
    z, y, w = _random(3, 12, 1)
    y[:3] = 0
    per_roi, grad = _ours(z, y, w, 0.1, 0.5)
    value, loop_grad = gap_loop(z, y, w, 0.1, 0.5)
    assert per_roi.sum().item() == pytest.approx(value.item(), abs=1e-6)
    torch.testing.assert_close(grad, loop_grad)
    assert grad[y == 0].le(0).all() and grad[y == 1].ge(0).all()


def test_labels_out_of_range_are_refused():
    loss = GAPLoss(num_classes=3)
    for bad in (4, -1):
        y = Y.clone()
        y[2] = bad
        with pytest.raises(ValueError, match=rf'\[0, 3\].*\[{bad}\]'):
            loss(torch.randn(6, 4), y)
    with pytest.raises(ValueError, match='4 channels'):
        loss(torch.randn(6, 3), Y)
    with pytest.raises(ValueError, match='lam must be finite and >= 0'):
        GAPLoss(num_classes=3, lam=-1)
    with pytest.raises(ValueError, match='lam must be finite'):
        GAPLoss(num_classes=3, lam=float('inf'))


def test_reduction_none_backpropagates_per_roi():
    """The gradient of one RoI's entry is that positive's update alone;
    the entries' gradients add up to the official one."""
    z, y, w = _random(1, 16, 4)
    y[:4] = torch.arange(4)
    _, total = _ours(z, y, w, 0.1, 0.5)
    parts = torch.zeros_like(z)
    for i in (y < 4).nonzero().squeeze(1).tolist():
        x = z.clone().requires_grad_(True)
        gap_loss(x, y, w, 0.1, 0.5)[i].backward()
        assert x.grad.count_nonzero() > 0
        parts += x.grad
    torch.testing.assert_close(parts, total)


def test_loss_is_ce_plus_gap_with_running_counts():
    loss = GAPLoss(num_classes=3, gamma=1.0, lam=0.1)
    logits = torch.cat([Z, torch.zeros(6, 1)], dim=1).requires_grad_()
    out = loss(logits, Y)
    torch.testing.assert_close(
        out['loss_cls'], torch.nn.functional.cross_entropy(logits, Y))
    counts = torch.bincount(Y, minlength=4)
    assert torch.equal(loss.num_samples, counts)
    # counts before the call are [0, 0, 0, 0]: after it the batch's, clamped
    weights = gap_class_weights(counts[:3].clamp(min=1), 1.0)
    x = Z.clone().requires_grad_()
    expected = gap_loss(x, Y, weights).sum()
    torch.testing.assert_close(out['loss_rank'], expected)
    # the class weights act on the gradient only (the value is the plain
    # ranking error): they are the updated counts' ones, not the counts
    # before the call (all weights equal)
    out['loss_rank'].backward()
    expected.backward()
    torch.testing.assert_close(logits.grad[:, :3], x.grad)
    assert (logits.grad[:, 3] == 0).all()
    _, before = _ours(Z, Y, gap_class_weights(torch.ones(3), 1.0), 0.1, 0.5)
    assert (before - x.grad).abs().max() > 1e-3
    logits = logits.detach()
    # accumulates over calls; zero-weight RoIs are not counted
    w = torch.ones(6)
    w[0] = 0
    loss(logits, Y, label_weights=w)
    assert torch.equal(loss.num_samples, 2 * counts - torch.tensor(
        [1, 0, 0, 0]))
    # and survive a checkpoint
    fresh = GAPLoss(num_classes=3)
    fresh.load_state_dict(loss.state_dict())
    assert torch.equal(fresh.num_samples, loss.num_samples)


def test_zero_weight_rois_take_no_part():
    z, y, w = _random(2, 14, 4)
    y[:4] = torch.arange(4)
    keep = torch.ones(14)
    keep[10:] = 0
    per_roi, grad = _ours(z, y, w, 0.1, 0.5, weight=keep)
    ref, ref_grad = _ours(z[:10], y[:10], w, 0.1, 0.5)
    torch.testing.assert_close(per_roi[:10], ref)
    assert (per_roi[10:] == 0).all() and (grad[10:] == 0).all()
    torch.testing.assert_close(grad[:10], ref_grad)


def test_shared2fc_bbox_head_trains_on_it():
    """A real Shared2FCBBoxHead: C + 1 softmax classifier, both terms in
    its losses, and SGD steps lower the ranking error."""
    from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
    torch.manual_seed(0)
    c = 5
    head = Shared2FCBBoxHead(
        in_channels=4, fc_out_channels=16, roi_feat_size=2, num_classes=c,
        loss_cls=dict(type='mmlongtail.GAPLoss', num_classes=c))
    assert head.fc_cls.out_features == c + 1
    feats = torch.randn(48, 4, 2, 2)
    labels = torch.randint(0, c + 1, (48, ))
    labels[:c] = torch.arange(c)
    rois = torch.cat([torch.zeros(48, 1), torch.rand(48, 4) * 32], dim=1)
    targets = torch.randn(48, 4) * 0.1
    optim = torch.optim.SGD(head.parameters(), lr=0.5)
    ranks = []
    for _ in range(8):
        cls_score, bbox_pred = head(feats)
        losses = head.loss(cls_score, bbox_pred, rois, labels,
                           torch.ones(48), targets, torch.ones(48, 4))
        assert {'loss_cls', 'loss_rank', 'acc', 'loss_bbox'} <= set(losses)
        ranks.append(losses['loss_rank'].item())
        optim.zero_grad()
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        assert torch.isfinite(head.fc_cls.weight.grad).all()
        optim.step()
    assert ranks[-1] < ranks[0]
    assert torch.equal(head.loss_cls.num_samples,
                       8 * torch.bincount(labels, minlength=c + 1))
    # softmax scores: C + 1 columns summing to 1
    scores = head.loss_cls.get_activation(cls_score)
    torch.testing.assert_close(scores.sum(1), torch.ones(48))


def test_consistency_hook_accepts_bbox_head_refuses_dense_head():
    from mmdet.models.dense_heads import RetinaHead
    from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead

    from mmlongtail.engine import check_longtail_consistency
    cfg = dict(type='mmlongtail.GAPLoss', num_classes=4)
    check_longtail_consistency(Shared2FCBBoxHead(
        in_channels=4, fc_out_channels=8, roi_feat_size=1, num_classes=4,
        loss_cls=cfg))
    anchors = dict(type='AnchorGenerator', octave_base_scale=4,
                   scales_per_octave=1, ratios=[1.0], strides=[8])
    retina = RetinaHead(num_classes=4, in_channels=8, feat_channels=8,
                        stacked_convs=1, anchor_generator=anchors,
                        loss_cls=cfg)
    with pytest.raises(ValueError, match='GAPLoss cannot be used there: GAP '
                       'works in R-CNN bbox heads only.*sampled RoIs.*'
                       'EqualizedFocalLoss'):
        check_longtail_consistency(retina)


def test_benchmark_tool_tiny_run(capsys):
    """tools/benchmark_gap_loss.py runs, and the two forms it times agree."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    spec = importlib.util.spec_from_file_location(
        'benchmark_gap_loss', os.path.join(root, 'tools',
                                           'benchmark_gap_loss.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['--num-rois', '24', '--num-classes', '6', '--iters', '1',
               '--warmup', '0', '--devices', 'cpu'])
    lines = capsys.readouterr().out.splitlines()
    assert 'loop/ours' in lines[2] and 'torch' in lines[0]
    row = lines[4].split()
    assert row[0] == 'cpu' and row[3].endswith('x')
    assert float(row[-1]) < 1e-5  # max |ours - loop|
