"""The CUDA generator in the RNG state, and an exact resume on one GPU.

The resume is ``tests/test_resume.py``'s (the demo recipe as a 2-stage
Cascade, 6 iterations, stopped after 3 and resumed from
``mmlongtail.CrashSafeCheckpointHook``'s checkpoint), on the test device,
with the second stage's loss swapped for GroupSoftmax, which draws its
"others" with ``torch.rand`` on the logits' device. (mmdet's proposal
samplers draw with ``torch.randperm`` on the CPU even on a GPU, so without
such a loss nothing in the run would use the CUDA generator.) The run
repeats only if the checkpoint restores the device's generator: a control
resume that leaves it at the seed ends in a state the same comparison
refuses.

What is exact on the GPU: the sampler's indices, iteration counts, the
labels of the RoIs the proposal sampler drew (in order), Seesaw's label
counts and the LR schedule. Losses, weights and optimizer state are
compared within ``GPU_RTOL``: RoIAlign's and ``index_add_``'s CUDA backward
add with atomics in no fixed order, so two uninterrupted GPU runs already
differ in the last bits. On the CPU (``MMLT_TEST_DEVICE=cpu``) everything
is compared exactly.
"""
import io
import os.path as osp

import pytest
import torch

from device_probe import DeviceProbeHook
from test_resume import _cfg, _probe, _Stop, _StopAt

pytestmark = pytest.mark.cuda

#: Relative tolerance of float results on the GPU (see the module doc).
GPU_RTOL = 1e-4
STOP = 3
SEESAW_LOSS = 'roi_head.bbox_head.0.loss_cls'
SEESAW = f'{SEESAW_LOSS}.cum_samples'


def _config(tiny_lvis, work_dir):
    """test_resume's iteration-based run, its second stage drawing on the
    device (GroupSoftmax: ``beta`` others per positive, drawn at random from
    the many background RoIs)."""
    cfg = _cfg(tiny_lvis, work_dir, False)
    n = tiny_lvis['cfg'].num_classes
    cfg.model.roi_head.bbox_head[1].loss_cls = dict(
        type='mmlongtail.GroupSoftmaxLoss', num_classes=n,
        category_stats=tiny_lvis['train'], beta=2.0, loss_weight=1.0)
    return cfg


def _draws(device):
    return (torch.rand(8, device=device).tolist(),
            torch.randperm(50, device=device).tolist())


def test_rng_state_holds_the_device_generator(cuda_device):
    from mmlongtail.utils.rng_state import get_rng_state, set_rng_state
    state = get_rng_state()
    if cuda_device.type == 'cuda':
        assert len(state['cuda']) == torch.cuda.device_count()
        assert all(s.device.type == 'cpu' for s in state['cuda'])
    # through a checkpoint file read back with weights_only
    buf = io.BytesIO()
    torch.save({'rng_states': [state]}, buf)
    expected = _draws(cuda_device)
    torch.manual_seed(123)  # reseeds every CUDA device too
    assert _draws(cuda_device) != expected
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)['rng_states'][0]
    assert set_rng_state(loaded) == []
    assert _draws(cuda_device) == expected


def _train(cfg, tag, stop_at=None, resume=False):
    """``test_resume``'s run, recorded by the device-aware probe."""
    from mmengine.runner import Runner
    cfg = cfg.copy()
    cfg.resume = resume
    runner = Runner.from_cfg(cfg)
    runner.register_hook(DeviceProbeHook(tag))
    if stop_at is None:
        runner.train()
        return runner
    runner.register_hook(_StopAt(stop_at))
    with pytest.raises(_Stop):
        runner.train()
    return runner


def _labels_after_resume(full, resumed):
    """The uninterrupted run's Seesaw labels of the iterations the resumed
    run trained (as many as it saw; a different length fails the caller's
    comparison)."""
    labels = full['labels'][SEESAW_LOSS].cpu()
    return labels[len(labels) - len(resumed['labels'][SEESAW_LOSS]):]


def _close(a, b, exact, what):
    if exact:
        assert torch.equal(a, b), what
    else:
        torch.testing.assert_close(
            a.cpu().double(), b.cpu().double(), rtol=GPU_RTOL,
            atol=GPU_RTOL * 1e-2 * float(b.abs().max() + 1e-12),
            msg=lambda m: f'{what}: {m}')


def _compare_checkpoints(path_a, path_b, exact):
    ca = torch.load(path_a, map_location='cpu')
    cb = torch.load(path_b, map_location='cpu')
    assert ca['meta']['iter'] == cb['meta']['iter']
    sa, sb = ca['state_dict'], cb['state_dict']
    assert sa.keys() == sb.keys()
    for k in sa:
        if k.endswith('cum_samples'):
            assert torch.equal(sa[k], sb[k]), k  # label counts
        else:
            _close(sa[k], sb[k], exact, k)
    oa, ob = ca['optimizer'], cb['optimizer']
    assert oa['param_groups'] == ob['param_groups']
    for i in oa['state']:
        for k, v in oa['state'][i].items():
            _close(v, ob['state'][i][k], exact, f'optimizer {i}.{k}')
    assert ca['param_schedulers'] == cb['param_schedulers']


def _device_generator_dropped(device):
    """set_rng_state that leaves ``device``'s generator as it is."""
    from mmlongtail.utils import rng_state

    def restore(state):
        if device.type == 'cuda':
            state = dict(state, cuda=[])
        else:
            state = dict(state, torch=torch.get_rng_state())
        return rng_state.set_rng_state(state)

    return restore


def test_exact_resume_on_one_device(tiny_lvis, tmp_path, cuda_device,
                                    monkeypatch):
    exact = cuda_device.type == 'cpu'
    if cuda_device.type == 'cuda':
        torch.cuda.set_device(cuda_device)
    dirs = {k: tmp_path / k for k in 'abc'}
    full = _train(_config(tiny_lvis, dirs['a']), 'A')
    assert next(full.model.parameters()).device.type == cuda_device.type
    a = _probe(dirs['a'], 'A')
    _train(_config(tiny_lvis, dirs['b']), 'B1', stop_at=STOP)
    resumed = _train(_config(tiny_lvis, dirs['b']), 'B2', resume=True)
    b = _probe(dirs['b'], 'B2')
    assert resumed.iter == full.iter == len(a['indices']) == 2 * STOP
    assert b['indices'] == a['indices'][STOP:]  # sampler position
    _close(torch.tensor(b['losses']), torch.tensor(a['losses'][STOP:]),
           exact, 'losses after the resume')
    for k in a['buffers']:
        if k == SEESAW:
            assert torch.equal(a['buffers'][k].cpu(), b['buffers'][k].cpu())
        else:
            _close(b['buffers'][k], a['buffers'][k], exact, k)
    assert a['buffers'][SEESAW].sum() > 0
    # the labels of the RoIs the proposal sampler drew, in order
    tail = _labels_after_resume(a, b)
    assert torch.equal(tail, b['labels'][SEESAW_LOSS].cpu())
    for it in (STOP, full.iter):
        _compare_checkpoints(dirs['a'] / f'iter_{it}.pth',
                             dirs['b'] / f'iter_{it}.pth', exact)

    # control: the same resume with the device's generator left at the seed
    # draws other proposals, so the comparison above would have failed
    import shutil
    shutil.copytree(dirs['b'], dirs['c'])
    for name in ('iter_6.pth', 'probeB2_rank0.pt'):
        (dirs['c'] / name).unlink()
    (dirs['c'] / 'last_checkpoint').write_text(
        osp.join(str(dirs['c']), f'iter_{STOP}.pth'))
    from mmlongtail.engine.hooks import crash_safe_checkpoint_hook
    monkeypatch.setattr(crash_safe_checkpoint_hook, 'set_rng_state',
                        _device_generator_dropped(cuda_device))
    _train(_config(tiny_lvis, dirs['c']), 'C', resume=True)
    c = _probe(dirs['c'], 'C')
    assert c['indices'] == a['indices'][STOP:]  # the sampler's own stream
    with pytest.raises(AssertionError):
        _compare_checkpoints(dirs['a'] / f'iter_{full.iter}.pth',
                             dirs['c'] / f'iter_{full.iter}.pth', exact)
