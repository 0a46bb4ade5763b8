"""SeesawLoss: exact agreement with mmdet 3.3.0 over several iterations,
hand-derived values for 2-3 classes, cum_samples semantics and state_dict,
no-positive batches, bad input."""
import math

import pytest
import torch
from mmdet.models.losses import SeesawLoss as MMDetSeesawLoss
from mmdet.models.losses.seesaw_loss import \
    seesaw_ce_loss as mmdet_seesaw_ce_loss

import mmlongtail  # noqa: F401
from mmlongtail.models.losses import SeesawLoss, seesaw_ce_loss
from mmlongtail.registry import MODELS

VARIANTS = [
    dict(),
    dict(p=0.0),
    dict(q=0.0),
    dict(p=0.0, q=0.0),
    dict(p=1.5, q=0.5, eps=0.1),
    dict(use_sigmoid=False, loss_weight=2.0),
]
# (reduction_override, avg_factor)
REDUCTIONS = [(None, 7.0), (None, None), ('sum', None), ('none', None)]


def _batch(num_classes, n, gen, dtype):
    logits = torch.randn(n, num_classes + 2, generator=gen, dtype=dtype) * 3
    # long-tailed labels with plenty of background
    labels = torch.randint(0, num_classes + 1, (n, ), generator=gen)
    labels[torch.rand(n, generator=gen) < 0.3] = num_classes
    labels[torch.rand(n, generator=gen) < 0.3] = 0
    weights = torch.rand(n, generator=gen, dtype=dtype)
    return logits, labels, weights


def _compare(ours, ref, logits, labels, weights, reduction, avg_factor,
             tol):
    x_ours = logits.clone().requires_grad_()
    x_ref = logits.clone().requires_grad_()
    out = ours(x_ours, labels, weights, avg_factor, reduction)
    out_ref = ref(x_ref, labels, weights, avg_factor, reduction)
    pos = labels < ours.num_classes
    if isinstance(out, dict):
        assert list(out) == list(out_ref)
        for key in out:
            got = out[key]
            if reduction == 'none' and key == 'loss_cls_classes':
                # ours: (N,) with zeros off positives; mmdet: positives only
                assert got.shape == labels.shape
                assert (got[~pos] == 0).all()
                got = got[pos]
            torch.testing.assert_close(
                got, out_ref[key].to(got.dtype), **tol)
        total = sum(v.sum() for v in out.values())
        total_ref = sum(v.sum() for v in out_ref.values())
    else:
        torch.testing.assert_close(out, out_ref.to(out.dtype), **tol)
        total, total_ref = out.sum(), out_ref.sum()
    total.backward()
    total_ref.backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, **tol)
    # counts: identical, background (label C) included
    assert ours.cum_samples.dtype == ref.cum_samples.dtype == torch.float32
    assert torch.equal(ours.cum_samples, ref.cum_samples)
    torch.testing.assert_close(
        ours.get_activation(logits), ref.get_activation(logits), **tol)


@pytest.mark.parametrize('kwargs,select',
                         [(kw, None) for kw in VARIANTS] +
                         [(VARIANTS[0], True), (VARIANTS[0], False)])
@pytest.mark.parametrize('reduction,avg_factor', REDUCTIONS)
def test_matches_mmdet_over_iterations(kwargs, reduction, avg_factor,
                                       select):
    """select None: rows of positives gathered on CPU when they are a
    minority; True/False force the gathered and the masked (sync-free)
    paths."""
    num_classes = 6
    gen = torch.Generator().manual_seed(0)
    ours = SeesawLoss(num_classes=num_classes, select_positives=select,
                      **kwargs)
    ref = MMDetSeesawLoss(num_classes=num_classes, **kwargs)
    for _ in range(3):  # counts accumulate between calls
        logits, labels, weights = _batch(num_classes, 24, gen, torch.float64)
        _compare(ours, ref, logits, labels, weights, reduction, avg_factor,
                 dict(rtol=1e-6, atol=1e-9))
    assert ours.cum_samples.sum() == 3 * 24


def test_matches_mmdet_float32_lvis_size():
    """C = 1203, float32 logits, counts from a long-tailed history."""
    num_classes = 1203
    gen = torch.Generator().manual_seed(1)
    ours = SeesawLoss(num_classes=num_classes)
    ref = MMDetSeesawLoss(num_classes=num_classes)
    history = torch.randint(0, 50, (5000, ), generator=gen)
    ours.cum_samples[:50] = history.bincount(minlength=50).float()
    ref.load_state_dict(ours.state_dict())
    for _ in range(3):
        logits, labels, weights = _batch(num_classes, 128, gen,
                                         torch.float32)
        _compare(ours, ref, logits, labels, weights, None, 100.0,
                 dict(rtol=1e-5, atol=1e-6))


def test_return_dict_false_is_the_sum():
    gen = torch.Generator().manual_seed(2)
    logits, labels, weights = _batch(5, 16, gen, torch.float64)
    as_dict = SeesawLoss(num_classes=5)(logits, labels, weights)
    summed = SeesawLoss(num_classes=5, return_dict=False)(logits, labels,
                                                          weights)
    ref = MMDetSeesawLoss(num_classes=5, return_dict=False)(logits, labels,
                                                           weights)
    torch.testing.assert_close(summed, sum(as_dict.values()))
    torch.testing.assert_close(summed, ref)


def test_functional_core_matches_mmdet_elementwise():
    gen = torch.Generator().manual_seed(3)
    c = 9
    logits = torch.randn(30, c, generator=gen, dtype=torch.float64) * 4
    labels = torch.randint(0, c, (30, ), generator=gen)
    counts = torch.randint(0, 300, (c, ), generator=gen).float()
    for p, q, eps in [(0.8, 2.0, 1e-2), (2.0, 1.0, 0.3), (0.5, 3.0, 0.0)]:
        x = logits.clone().requires_grad_()
        x_ref = logits.clone().requires_grad_()
        got = seesaw_ce_loss(x, labels, counts, p, q, eps)
        ref = mmdet_seesaw_ce_loss(x_ref, labels, None, counts, c, p, q, eps,
                                   'none')
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-9)
        (got * torch.arange(30.)).sum().backward()
        (ref * torch.arange(30.)).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-6, atol=1e-9)


def test_accuracy_and_channels_match_mmdet():
    gen = torch.Generator().manual_seed(4)
    logits, labels, _ = _batch(5, 40, gen, torch.float32)
    ours, ref = SeesawLoss(num_classes=5), MMDetSeesawLoss(num_classes=5)
    acc, acc_ref = ours.get_accuracy(logits, labels), ref.get_accuracy(
        logits, labels)
    assert acc.keys() == acc_ref.keys()
    for k in acc:
        torch.testing.assert_close(acc[k], acc_ref[k])
    assert ours.get_cls_channels(5) == 7
    assert ours.custom_cls_channels and ours.custom_activation
    assert ours.custom_accuracy
    with pytest.raises(ValueError, match='5.*1203|1203.*5'):
        ours.get_cls_channels(1203)


# ---------------------------------------------------------------------------
# hand-derived values
def _one_sample(num_classes, counts_before, class_logits, label, **kwargs):
    """Loss of one positive sample with objectness logits (0, 0)."""
    loss = SeesawLoss(num_classes=num_classes, **kwargs)
    loss.cum_samples.copy_(torch.tensor(counts_before, dtype=torch.float32))
    x = torch.tensor([list(class_logits) + [0.0, 0.0]],
                     dtype=torch.float64, requires_grad=True)
    out = loss(x, torch.tensor([label]))
    return loss, x, out


def test_hand_mitigation_only():
    # counts after the update: N0 = 10, N1 = 1. Label 0 is the frequent
    # class: the rare class's logit is scaled by (N1 / N0)^p.
    loss, _, out = _one_sample(2, [9, 1, 0], [0.0, 0.0], 0, q=0.0, p=0.8)
    assert loss.cum_samples.tolist() == [10.0, 1.0, 0.0]
    expected = math.log(1 + 0.1**0.8)
    assert out['loss_cls_classes'].item() == pytest.approx(expected, 1e-12)
    assert out['loss_cls_objectness'].item() == pytest.approx(math.log(2))
    # label 1 is the rare class: no mitigation (N1 < N0), plain CE = log 2
    _, _, out = _one_sample(2, [9, 1, 0], [0.0, 0.0], 1, q=0.0, p=0.8)
    assert out['loss_cls_classes'].item() == pytest.approx(math.log(2))


def test_hand_compensation_only():
    # sigma ~ (1, 2, 4), label 0 (sigma_0 = 1/7 > eps): classes 1 and 2 are
    # over-predicted by 2x and 4x, so with q = 2 their logits get
    # +log 4 and +log 16: exp(z) = (1, 8, 64).
    _, x, out = _one_sample(3, [0, 0, 0, 0],
                            [0.0, math.log(2), math.log(4)], 0, p=0.0, q=2.0)
    assert out['loss_cls_classes'].item() == pytest.approx(math.log(73))
    # a class predicted below the target is left alone: label 2
    _, _, out = _one_sample(3, [0, 0, 0, 0],
                            [0.0, math.log(2), math.log(4)], 2, p=0.0, q=2.0)
    assert out['loss_cls_classes'].item() == pytest.approx(math.log(7 / 4))


def test_hand_compensation_eps_floor():
    # sigma_0 = 1/1000 < eps = 0.01: the ratio uses eps as denominator.
    _, _, out = _one_sample(2, [0, 0, 0], [0.0, math.log(999)], 0, p=0.0,
                            q=2.0, eps=0.01)
    expected = math.log(1 + 999 * (0.999 / 0.01)**2)
    assert out['loss_cls_classes'].item() == pytest.approx(expected, 1e-10)


def test_hand_both_factors_and_gradient():
    # counts after the update (100, 10, 1000); sigma ~ (1, 1, 3); p = q = 1:
    # M_01 = 10/100, M_02 = 1; C_01 = 1, C_02 = 3 -> exp(z) = (1, 0.1, 9).
    _, x, out = _one_sample(3, [99, 10, 1000, 0], [0.0, 0.0, math.log(3)],
                            0, p=1.0, q=1.0)
    assert out['loss_cls_classes'].item() == pytest.approx(math.log(10.1))
    sum(out.values()).backward()
    expected = [1 / 10.1 - 1, 0.1 / 10.1, 9 / 10.1, 0.5 - 1, 0.5]
    torch.testing.assert_close(x.grad[0], torch.tensor(
        expected, dtype=torch.float64))


def test_avg_factor_label_weights_loss_weight_by_hand():
    # two samples of test_hand_both_factors (loss log 10.1) and one
    # background; weights (2, 0.5, 1), avg_factor 4, loss_weight 3.
    loss = SeesawLoss(num_classes=3, p=1.0, q=1.0, loss_weight=3.0)
    loss.cum_samples.copy_(torch.tensor([98., 10., 1000., 0.]))
    x = torch.tensor([[0.0, 0.0, math.log(3), 0.0, 0.0]] * 3,
                     dtype=torch.float64)
    out = loss(x, torch.tensor([0, 0, 3]), torch.tensor([2.0, 0.5, 1.0]),
               avg_factor=4.0)
    eps = torch.finfo(torch.float32).eps
    assert out['loss_cls_classes'].item() == pytest.approx(
        3 * 2.5 * math.log(10.1) / (4 + eps))
    assert out['loss_cls_objectness'].item() == pytest.approx(
        3 * 3.5 * math.log(2) / (4 + eps))


# ---------------------------------------------------------------------------
# counts, state, dtypes
def test_cum_samples_counts_every_label_including_background():
    loss = SeesawLoss(num_classes=3)
    x = torch.zeros(7, 5)
    loss(x, torch.tensor([0, 3, 3, 2, 3, 0, 0]), torch.zeros(7))
    assert loss.cum_samples.tolist() == [3.0, 0.0, 1.0, 3.0]
    loss(x[:2], torch.tensor([1, 1]))
    assert loss.cum_samples.tolist() == [3.0, 2.0, 1.0, 3.0]


def test_state_dict_round_trip_and_mmdet_checkpoint():
    loss = SeesawLoss(num_classes=4)
    loss(torch.randn(10, 6), torch.tensor([0, 1, 1, 2, 4, 4, 4, 3, 0, 4]))
    state = loss.state_dict()
    assert list(state) == ['cum_samples']
    restored = SeesawLoss(num_classes=4)
    restored.load_state_dict(state)
    assert torch.equal(restored.cum_samples, loss.cum_samples)
    # same key, shape and dtype as mmdet's: checkpoints load both ways
    ref = MMDetSeesawLoss(num_classes=4)
    ref.load_state_dict(state)
    assert torch.equal(ref.cum_samples, loss.cum_samples)
    restored = SeesawLoss(num_classes=4)
    restored.load_state_dict(ref.state_dict())
    assert torch.equal(restored.cum_samples, ref.cum_samples)
    with pytest.raises(RuntimeError, match='size mismatch'):
        SeesawLoss(num_classes=5).load_state_dict(state)


def test_counts_stay_float32_under_dtype_casts():
    loss = SeesawLoss(num_classes=2)
    loss.cum_samples.fill_(4097.0)  # not representable in float16
    loss.half()
    assert loss.cum_samples.dtype == torch.float32
    assert loss.cum_samples[0].item() == 4097.0
    out = loss(torch.randn(4, 4, dtype=torch.float16), torch.tensor(
        [0, 1, 2, 0]))
    assert loss.cum_samples.tolist() == [4099.0, 4098.0, 4098.0]
    assert all(torch.isfinite(v) for v in out.values())
    loss.double()
    assert loss.cum_samples.dtype == torch.float32


def test_half_input_close_to_float32():
    gen = torch.Generator().manual_seed(5)
    logits, labels, _ = _batch(8, 32, gen, torch.float32)
    half = SeesawLoss(num_classes=8)(logits.half(), labels)
    full = SeesawLoss(num_classes=8)(logits.half().float(), labels)
    for k in half:
        torch.testing.assert_close(half[k], full[k], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# no positives, bad input
@pytest.mark.parametrize('select', [True, False])
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_batch_without_positives(select, reduction):
    loss = SeesawLoss(num_classes=4, select_positives=select)
    x = torch.randn(6, 6, requires_grad=True)
    out = loss(x, torch.full((6, ), 4), reduction_override=reduction)
    assert torch.isfinite(out['loss_cls_classes']).all()
    assert (out['loss_cls_classes'] == 0).all()
    sum(v.sum() for v in out.values()).backward()
    assert (x.grad[:, :4] == 0).all()  # no class gradient
    assert (x.grad[:, 4:] != 0).all()  # objectness still learns
    assert loss.cum_samples.tolist() == [0, 0, 0, 0, 6]


def test_built_from_registry_by_scoped_name():
    loss = MODELS.build(
        dict(type='mmlongtail.SeesawLoss', num_classes=3, p=0.5))
    assert isinstance(loss, SeesawLoss) and loss.p == 0.5
    from mmdet.registry import MODELS as MMDET_MODELS
    assert type(MMDET_MODELS.build(dict(type='mmlongtail.SeesawLoss',
                                        num_classes=3))) is SeesawLoss
    assert type(MMDET_MODELS.build(dict(type='SeesawLoss'))) is \
        MMDetSeesawLoss


def test_bad_input_is_refused_with_a_clear_message():
    loss = SeesawLoss(num_classes=3)
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\]'):
        loss(x, torch.tensor([0, 1, 4, 3]))
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\]'):
        loss(x, torch.tensor([0, -1, 2, 3]))
    assert loss.cum_samples.sum() == 0  # nothing counted from bad batches
    with pytest.raises(ValueError, match='5 channels.*got 4'):
        loss(torch.randn(4, 4), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match='label_weights'):
        loss(x, torch.tensor([0, 1, 2, 3]), torch.ones(3))
    with pytest.raises(ValueError, match='integer'):
        loss(x, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match='use_sigmoid'):
        SeesawLoss(num_classes=3, use_sigmoid=True)
    with pytest.raises(TypeError, match='num_classes'):
        SeesawLoss()
    with pytest.raises(ValueError, match='reduction'):
        SeesawLoss(num_classes=3, reduction='avg')
    with pytest.raises(AssertionError):
        loss(x, torch.tensor([0, 1, 2, 3]), reduction_override='avg')
    with pytest.raises(ValueError, match='cum_samples has 4 entries'):
        seesaw_ce_loss(torch.randn(2, 3), torch.tensor([0, 1]),
                       torch.zeros(4))
