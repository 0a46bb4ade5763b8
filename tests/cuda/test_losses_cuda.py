"""Every registered loss on the device against the CPU in float64.

Each loss of the contract suite's specs (every registered loss: see
``cuda_cases``) trains a linear classifier ``logits = feats @ W.T`` on the
device, in float32 and under fp16 and bf16 autocast (the logits come out of
the autocast matmul in low precision, as from a head), and on the CPU in
float64 with the same data and the same random draws. Compared: the loss
and ``dL/dW`` of one step (tolerances per precision in
``cuda_cases.TOLERANCES``), and every buffer after several SGD steps
(running statistics: Seesaw's ``cum_samples`` exactly, EQLv2's and EFL's
gradient sums within the loss tolerance; they stay float32 under autocast).
EFL's backward hooks are checked against autograd's own logit gradient.
"""
import pytest
import torch

import mmlongtail  # noqa: F401
from cuda_cases import (C, PRECISIONS, SPECS, TOLERANCES, SameDraws,
                        autocast_dtype, total)
from mmlongtail.registry import MODELS

pytestmark = pytest.mark.cuda

N, D = 48, 16
NAMES = sorted(SPECS)


def _build(name):
    return MODELS.build(dict(type=f'mmlongtail.{name}',
                             **SPECS[name].kwargs))


def _data(name, iters, seed=0):
    """``(W (O, D), [(feats (N, D), labels (N,))] * iters)``, CPU float64;
    every class and background in every batch."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(SPECS[name].channels, D, generator=g,
                         dtype=torch.float64) * 0.3
    batches = []
    for _ in range(iters):
        feats = torch.randn(N, D, generator=g, dtype=torch.float64)
        labels = torch.randint(0, C + 1, (N, ), generator=g)
        labels[:C + 1] = torch.arange(C + 1)
        batches.append((feats, labels))
    return weight, batches


def _train(name, device, amp, iters, lr=0.5):
    """``iters`` SGD steps; returns (losses, dL/dW per step, the loss
    module). ``device`` None: the CPU float64 reference."""
    reference = device is None
    device = torch.device('cpu') if reference else device
    dtype = torch.float64 if reference else torch.float32
    weight, batches = _data(name, iters)
    loss_fn = _build(name)
    loss_fn = loss_fn.double() if reference else loss_fn.to(device)
    weight = weight.to(device, dtype).requires_grad_(True)
    draws = SameDraws(seed=1)
    losses, grads = [], []
    for feats, labels in batches:
        with draws.active(), torch.autocast(device.type, dtype=amp,
                                            enabled=amp is not None):
            logits = feats.to(device, dtype) @ weight.t()
            if amp is not None:
                assert logits.dtype == amp
            loss = total(loss_fn(logits, labels.to(device)))
        weight.grad = None
        loss.backward()
        assert weight.grad.dtype == dtype  # parameters keep their dtype
        losses.append(loss.detach().cpu().double())
        grads.append(weight.grad.detach().cpu().double())
        with torch.no_grad():
            weight -= lr * weight.grad
    return torch.stack(losses), torch.stack(grads), loss_fn


def _close(got, ref, precision, what):
    tol = TOLERANCES[precision]
    torch.testing.assert_close(
        got, ref, rtol=tol['rtol'], atol=tol['rtol'] * 1e-2,
        check_dtype=False, msg=lambda m: f'{what} ({precision}): {m}')


def _close_grad(got, ref, precision, what):
    atol = TOLERANCES[precision]['grad'] * float(ref.abs().max())
    torch.testing.assert_close(
        got, ref, rtol=0, atol=atol, check_dtype=False,
        msg=lambda m: f'{what} ({precision}): {m}')


@pytest.mark.parametrize('precision', list(PRECISIONS))
@pytest.mark.parametrize('name', NAMES)
def test_forward_backward_matches_cpu_float64(name, precision, cuda_device,
                                              exact_fp32):
    amp = autocast_dtype(cuda_device, precision)
    ref_loss, ref_grad, _ = _train(name, None, None, iters=1)
    loss, grad, _ = _train(name, cuda_device, amp, iters=1)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert ref_grad.abs().sum() > 0
    _close(loss, ref_loss, precision, f'{name} loss')
    _close_grad(grad, ref_grad, precision, f'{name} dL/dW')


@pytest.mark.parametrize('precision', list(PRECISIONS))
@pytest.mark.parametrize('name', NAMES)
def test_statistics_over_iterations_match_cpu_float64(name, precision,
                                                      cuda_device,
                                                      exact_fp32):
    """Five SGD steps: the losses and every buffer (running statistics and
    fixed class weights) against the float64 run on the CPU."""
    amp = autocast_dtype(cuda_device, precision)
    ref_loss, _, ref = _train(name, None, None, iters=5)
    loss, _, ours = _train(name, cuda_device, amp, iters=5)
    _close(loss, ref_loss, precision, f'{name} losses')
    fresh = dict(_build(name).named_buffers())
    ref_buffers = dict(ref.named_buffers())
    for key, buf in ours.named_buffers():
        assert buf.device.type == cuda_device.type, key
        assert buf.dtype == fresh[key].dtype, key  # float32 under autocast
        want = ref_buffers[key]
        if not buf.is_floating_point() or key == 'cum_samples':
            assert torch.equal(buf.cpu(), want.to(buf.dtype)), key  # counts
        else:
            # sums over five steps, each with its own rounding: twice the
            # one-step loss bound
            tol = TOLERANCES[precision]['rtol'] * 2
            torch.testing.assert_close(
                buf.cpu().double(), want, rtol=tol,
                atol=tol * 1e-2 * float(want.abs().max()),
                msg=lambda m, k=key: f'{name}.{k} ({precision}): {m}')
    if hasattr(ours, 'pos_grad'):
        assert ours.pos_grad.sum() > 0 and ours.neg_grad.sum() > 0
    if hasattr(ours, 'cum_samples'):
        assert ours.cum_samples.sum() == 5 * N


#: EFL's hook statistics against autograd's logit gradient, per precision
HOOK_RTOL = {'fp32': 1e-5, 'fp16': 1e-3, 'bf16': 8e-3}


@pytest.mark.parametrize('precision', list(PRECISIONS))
def test_efl_hooks_collect_autograd_logit_gradient(precision, cuda_device,
                                                   exact_fp32):
    """EFL as in a RetinaNet head: one call per FPN level in forward, one
    backward. Its hooks add exactly the magnitude of the gradient autograd
    computes for each level's logits, split by positive and negative
    targets; a call that is not backpropagated adds nothing."""
    amp = autocast_dtype(cuda_device, precision)
    efl = MODELS.build(dict(type='mmlongtail.EqualizedFocalLoss',
                            num_classes=C, loss_weight=1.5)).to(cuda_device)
    g = torch.Generator().manual_seed(4)
    pos, neg = torch.zeros(C, dtype=torch.float64), torch.zeros(
        C, dtype=torch.float64)
    for step in range(3):
        levels, loss = [], 0
        for n in (96, 40, 9):  # anchors per level
            z = (torch.randn(n, C, generator=g) * 2).to(cuda_device)
            labels = torch.randint(0, C + 1, (n, ), generator=g)
            z.requires_grad_(True)
            with torch.autocast(cuda_device.type, dtype=amp,
                                enabled=amp is not None):
                logits = z.to(amp) if amp is not None else z
                loss = loss + efl(logits, labels.to(cuda_device),
                                  avg_factor=float(n) / 3)
            levels.append((z, labels))
        # a call whose output is dropped (evaluation) changes nothing
        before = efl.pos_grad.clone()
        with torch.no_grad():
            efl(levels[0][0].detach(), levels[0][1].to(cuda_device))
        efl(levels[1][0].detach(), levels[1][1].to(cuda_device))
        assert torch.equal(efl.pos_grad, before)
        loss.backward()
        for z, labels in levels:
            grad = z.grad.detach().abs().double().cpu()
            target = torch.nn.functional.one_hot(labels, C + 1)[:, :C]
            pos += (grad * target).sum(0)
            neg += (grad * (1 - target)).sum(0)
        # the closed form runs in float32 on the autocast logits; autograd
        # computes the same float32 gradient and rounds it to the logits'
        # dtype on its way back (2^-11 relative in fp16, 2^-8 in bf16)
        for got, want in ((efl.pos_grad, pos), (efl.neg_grad, neg)):
            torch.testing.assert_close(
                got.cpu().double(), want, rtol=HOOK_RTOL[precision],
                atol=1e-7, msg=lambda m, s=step: f'step {s}: {m}')
        assert efl.pos_grad.dtype == torch.float32
    ratio = (efl.pos_grad / (efl.neg_grad + efl.RATIO_EPS)).clamp(0, 1)
    torch.testing.assert_close(efl.pos_neg, ratio)
    assert (efl.pos_neg < 1).any()  # the factors moved off plain focal
