"""tools/dist_train.sh end to end: 2 CPU processes (torchrun, gloo).

One launch trains the demo recipe (Seesaw + Norm Mask + RFS), shrunk to a
few iterations, with a 2-stage Cascade whose second stage uses EQLv2, so
both kinds of long-tail statistics run under DDP. Mixed stages cannot be
evaluated (Cascade averages the stages' logits), so the consistency hook
would refuse this model; the test config replaces ``custom_hooks`` with the
recording hook of ``tests/longtail_probe.py`` and never validates.
"""
import math
import os.path as osp
import subprocess

import pytest
import torch

from dist_utils import launcher_env
from longtail_probe import tiny_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SEESAW = 'roi_head.bbox_head.0.loss_cls'
EQLV2 = 'roi_head.bbox_head.1.loss_cls'


@pytest.fixture(scope='module')
def dist_run(tiny_lvis, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dist')
    n = tiny_lvis['cfg'].num_classes
    cfg = tiny_config(tiny_lvis['root'], n, str(tmp / 'work'),
                      num_images=8, batch_size=2, cascade_eqlv2=True)
    cfg.custom_hooks = [dict(type='longtail_probe.LongTailProbeHook')]
    cfg.find_unused_parameters = True
    cfg_file = str(tmp / 'tiny_dist.py')
    cfg.dump(cfg_file)
    env = launcher_env()
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools/dist_train.sh'), cfg_file, '2',
         '--work-dir', str(tmp / 'work')],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    probes = [torch.load(tmp / 'work' / f'probe_rank{r}.pt')
              for r in range(2)]
    return probes, n


def test_both_ranks_train_finite_losses(dist_run):
    probes, _ = dist_run
    assert [p['rank'] for p in probes] == [0, 1]
    assert all(p['world_size'] == 2 for p in probes)
    assert probes[0]['iter'] == probes[1]['iter'] == len(probes[0]['losses'])
    assert probes[0]['iter'] >= 2
    for p in probes:
        assert torch.isfinite(torch.tensor(p['losses'])).all()


def test_statistics_identical_and_global(dist_run):
    probes, n = dist_run
    b0, b1 = probes[0]['buffers'], probes[1]['buffers']
    assert set(b0) == {f'{SEESAW}.cum_samples', f'{EQLV2}.pos_grad',
                       f'{EQLV2}.neg_grad', f'{EQLV2}.pos_neg'}
    for k in b0:
        assert b0[k].dtype == torch.float32
        assert torch.equal(b0[k], b1[k]), k
    # Seesaw: the histogram of every label either rank's loss saw
    labels = torch.cat([p['labels'][SEESAW] for p in probes])
    hist = torch.bincount(labels, minlength=n + 1).float()
    assert torch.equal(b0[f'{SEESAW}.cum_samples'], hist)
    for p in probes:  # each rank alone saw less than the global count
        assert p['labels'][SEESAW].numel() < hist.sum()
    # EQLv2: the sum of both ranks' own gradient contributions
    local = [p['eqlv2_local'][EQLV2] for p in probes]
    total = local[0] + local[1]
    torch.testing.assert_close(b0[f'{EQLV2}.pos_grad'], total[0])
    torch.testing.assert_close(b0[f'{EQLV2}.neg_grad'], total[1])
    assert (local[0][1] > 0).all() and (local[1][1] > 0).all()


def test_sampler_shards_cover_the_epoch(dist_run):
    probes, _ = dist_run
    s0, s1 = probes[0]['streams'][0], probes[1]['streams'][0]
    assert torch.equal(s0, s1)  # same epoch stream on both ranks
    padded_len = math.ceil(len(s0) / 2) * 2
    padded = s0.repeat(2)[:padded_len].tolist()
    drawn = [sum(p['indices'], []) for p in probes]
    # rank r takes positions r, r + 2, ...: disjoint, together the epoch
    assert drawn[0] == padded[0::2]
    assert drawn[1] == padded[1::2]
    assert sorted(drawn[0] + drawn[1]) == sorted(padded)


def test_cpu_device_defaults_for_a_launcher():
    """Without CUDA a launched run gets gloo and the CPU DDP wrapper, which
    keeps the config's find_unused_parameters (mmengine reads it only when
    model_wrapper_cfg is unset)."""
    from mmengine.config import Config

    from mmlongtail.apis import apply_device_defaults
    if torch.cuda.is_available():
        pytest.skip('CPU-only behaviour')
    cfg = apply_device_defaults(Config(dict(
        launcher='pytorch', find_unused_parameters=True,
        env_cfg=dict(dist_cfg=dict(backend='nccl')))))
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(
        type='mmlongtail.CPUDistributedDataParallel',
        broadcast_buffers=False, find_unused_parameters=True)
    cfg = apply_device_defaults(Config(dict(
        launcher='pytorch',
        model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                               detect_anomalous_params=True))))
    assert cfg.model_wrapper_cfg == dict(
        type='mmlongtail.CPUDistributedDataParallel',
        detect_anomalous_params=True)
    assert 'model_wrapper_cfg' not in apply_device_defaults(
        Config(dict(launcher='none')))
