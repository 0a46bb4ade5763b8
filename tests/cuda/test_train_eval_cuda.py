"""The demo recipe (``configs/demo/seesaw_mask_rcnn_r18_light_rfs_synthetic
.py``: Seesaw, Norm Mask, RFS) trained for 200 iterations on one GPU and
evaluated with the LVIS metric (standard and fixed protocols), on a small
dataset made by ``tools/make_synthetic_lvis.py``; also with ``--amp``
(mmengine's AmpOptimWrapper, fp16 autocast).

On the CPU (``MMLT_TEST_DEVICE=cpu``, to check the test itself) it trains
``CPU_ITERS`` iterations only (a shared CPU takes 5-20 s per iteration of
8 images) and does not ask for a falling loss or a positive AP, which so
short a run (inside the warm-up) need not reach."""
import os
import os.path as osp
import subprocess
import sys
from unittest import mock

import pytest
import torch
from mmengine.runner import Runner

from cuda_cases import ROOT
from device_probe import DeviceProbeHook
from mmlongtail.engine import LastMetricsHook
from mmlongtail_bench.demo import DATA_ROOT_VAR, demo_config

pytestmark = pytest.mark.cuda

CONFIG = osp.join(ROOT, 'configs/demo/seesaw_mask_rcnn_r18_light_rfs_'
                  'synthetic.py')
ITERS = 200
CPU_ITERS = 10


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    """The demo's 40 classes, 240 train images of 128 px, one val image per
    class."""
    root = str(tmp_path_factory.mktemp('synthetic_lvis'))
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools/make_synthetic_lvis.py'), root,
         '--num-train-images', '240', '--val-images-per-class', '1'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return root


def _config(data_root, work_dir, amp, iters):
    with mock.patch.dict(os.environ, {DATA_ROOT_VAR: data_root + '/'}):
        cfg = demo_config(CONFIG, str(work_dir))
    if amp:
        from mmlongtail.apis import enable_amp
        enable_amp(cfg)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters,
                         val_interval=iters)
    cfg.train_dataloader.sampler.infinite = True
    # the demo's warm-up; its epoch-based step is past the end
    cfg.param_scheduler = [cfg.param_scheduler[0]]
    cfg.default_hooks.checkpoint = dict(
        type='mmlongtail.CrashSafeCheckpointHook', interval=iters,
        by_epoch=False)
    cfg.log_processor = dict(by_epoch=False, window_size=25)
    cfg.log_level = 'WARNING'
    return cfg


@pytest.mark.parametrize('precision', ['fp32', 'amp'])
def test_demo_trains_200_iterations_and_evaluates(demo_data, tmp_path,
                                                  cuda_device, precision):
    if precision == 'amp' and cuda_device.type != 'cuda':
        pytest.skip('--amp runs on CUDA only (refused on the CPU)')
    if cuda_device.type == 'cuda':
        torch.cuda.set_device(cuda_device)
    iters = ITERS if cuda_device.type == 'cuda' else CPU_ITERS
    cfg = _config(demo_data, tmp_path, precision == 'amp', iters)
    runner = Runner.from_cfg(cfg)
    keep = LastMetricsHook()
    runner.register_hook(keep)
    runner.register_hook(DeviceProbeHook('T'))
    runner.train()
    assert runner.iter == iters
    model = runner.model
    assert next(model.parameters()).device.type == cuda_device.type
    counts = model.roi_head.bbox_head.loss_cls.cum_samples
    assert counts.device.type == cuda_device.type
    assert counts.dtype == torch.float32
    probe = torch.load(osp.join(tmp_path, 'probeT_rank0.pt'))
    losses = torch.tensor(probe['losses'])
    assert len(losses) == iters and torch.isfinite(losses).all()
    if iters == ITERS:
        # it learns (past the 100-iteration warm-up): the last 25
        # iterations' mean loss is well below the first 25's
        first, last = losses[:25].mean(), losses[-25:].mean()
        assert last < 0.7 * first, (float(first), float(last))
    # Seesaw counted every sampled RoI of every iteration
    assert counts.sum() == probe['labels']['roi_head.bbox_head.loss_cls'] \
        .numel()
    metrics = keep.metrics
    for task in ('bbox', 'segm'):
        for key in ('AP', 'APr', 'APc', 'APf', 'APfixed'):
            value = metrics[f'lvis/{task}_{key}']
            assert 0 <= value <= 1, (task, key, value)
    if iters == ITERS:
        assert metrics['lvis/bbox_AP'] > 0, metrics
    assert osp.isfile(osp.join(tmp_path, f'iter_{iters}.pth'))
