"""Mixed precision: the losses under autocast (bf16 on CPU, fp16 on CUDA)
match fp32 within the low-precision tolerance and keep float32 statistics;
``--amp`` uses mmengine's AmpOptimWrapper on CUDA and is refused with a clear
message on the CPU."""
import pytest
import torch
from mmengine.config import Config

from mmlongtail.apis import build_runner_config, enable_amp
from mmlongtail.registry import MODELS

C, N, D = 6, 48, 16
STATS = dict(
    num_images=200,
    categories=[
        dict(id=i + 1, name=f'c{i}', frequency='rcf'[min(i // 2, 2)],
             image_count=ic, instance_count=3 * ic)
        for i, ic in enumerate([1, 3, 12, 40, 90, 150])
    ])
# BAGS keeps every "others" proposal (beta large), so fp32 and autocast
# draw the same terms
LOSSES = {
    'SeesawLoss': dict(type='mmlongtail.SeesawLoss', num_classes=C,
                       return_dict=False),
    'EQLLoss': dict(type='mmlongtail.EQLLoss', num_classes=C,
                    category_stats=STATS, freq_thr=0.05),
    'EQLv2Loss': dict(type='mmlongtail.EQLv2Loss', num_classes=C),
    'FocalLoss': dict(type='mmlongtail.FocalLoss'),
    'EqualizedFocalLoss': dict(type='mmlongtail.EqualizedFocalLoss',
                               num_classes=C),
    'GroupSoftmaxLoss': dict(type='mmlongtail.GroupSoftmaxLoss',
                             num_classes=C, category_stats=STATS, beta=1000),
}
STAT_BUFFERS = ('cum_samples', 'pos_grad', 'neg_grad')
DEVICES = [
    pytest.param('cpu', torch.bfloat16, id='cpu-bf16'),
    pytest.param(
        'cuda', torch.float16, id='cuda-fp16', marks=pytest.mark.cuda),
]


def _batches(device, iters=3):
    g = torch.Generator().manual_seed(0)
    for _ in range(iters):
        feats = torch.randn(N, D, generator=g)
        labels = torch.multinomial(
            torch.tensor([1., 2, 3, 4, 5, 6, 12]), N, True, generator=g)
        yield feats.to(device), labels.to(device)


def _train(name, device, dtype):
    """Three steps of a linear classifier; returns losses, grads, loss."""
    loss_fn = MODELS.build(LOSSES[name]).to(device)
    channels = loss_fn.get_cls_channels(C)  # the classifier layout
    weight = torch.randn(channels, D,
                         generator=torch.Generator().manual_seed(1)) * 0.3
    weight = weight.to(device).requires_grad_(True)
    losses, grads = [], []
    for feats, labels in _batches(device):
        weight.grad = None
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            logits = feats @ weight.t()
            if dtype is not None:
                assert logits.dtype == dtype
            loss = loss_fn(logits, labels)
        loss.backward()
        losses.append(loss.detach().float())
        grads.append(weight.grad.detach().clone())
    return torch.stack(losses), torch.stack(grads), loss_fn


@pytest.mark.parametrize('device, dtype', DEVICES)
@pytest.mark.parametrize('name', sorted(LOSSES))
def test_loss_under_autocast_matches_fp32(name, device, dtype):
    ref_losses, ref_grads, ref = _train(name, device, None)
    losses, grads, amp = _train(name, device, dtype)
    assert torch.isfinite(losses).all() and torch.isfinite(grads).all()
    assert grads.dtype == torch.float32  # parameters stay fp32
    # bf16 keeps 8 bits of mantissa (relative step 2^-8 ~ 4e-3). Measured
    # on CPU: losses within 6e-4 relative, weight gradients within 5e-3 of
    # their largest entry, EQLv2 gradient sums within 8e-4; the bounds leave
    # about 3x margin
    torch.testing.assert_close(losses, ref_losses, rtol=4e-3, atol=1e-4)
    torch.testing.assert_close(
        grads, ref_grads, rtol=0, atol=1.5e-2 * float(ref_grads.abs().max()))
    for key in STAT_BUFFERS:
        if not hasattr(ref, key):
            continue
        buf, ref_buf = getattr(amp, key), getattr(ref, key)
        assert buf.dtype == torch.float32, key  # accumulated in fp32
        if key == 'cum_samples':
            assert torch.equal(buf, ref_buf)  # counts are exact
        else:
            assert ref_buf.sum() > 0
            torch.testing.assert_close(buf, ref_buf, rtol=4e-3, atol=1e-4)


def _cfg_file(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text(
        "optim_wrapper = dict(type='OptimWrapper', "
        "optimizer=dict(type='SGD', lr=0.01))\n")
    return str(path)


def test_amp_on_cuda_uses_mmengine_amp_wrapper(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = build_runner_config(_cfg_file(tmp_path), work_dir=str(tmp_path),
                              amp=True)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper.optimizer.lr == 0.01
    assert 'env_cfg' not in cfg  # nccl stays: no gloo rewrite with CUDA


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_amp_on_cpu_is_refused_with_the_reason(tmp_path):
    with pytest.raises(RuntimeError, match='--amp needs a CUDA device.*'
                       'mmcv.*float32 only'):
        build_runner_config(_cfg_file(tmp_path), amp=True)
    with pytest.raises(RuntimeError, match='--amp needs a CUDA device'):
        enable_amp(Config(dict(optim_wrapper=dict(type='OptimWrapper'))))


def test_reason_for_refusing_cpu_amp_still_holds():
    """The refusal rests on mmcv's CPU nms having no bf16 kernel: if this
    starts to pass, CPU autocast may be worth enabling for ``--amp``."""
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11]])
    scores = torch.tensor([0.9, 0.8])
    nms(boxes, scores, 0.5)  # float32 works
    with pytest.raises(RuntimeError, match='BFloat16'):
        nms(boxes.bfloat16(), scores.bfloat16(), 0.5)
