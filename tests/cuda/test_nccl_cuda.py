"""Two processes on two GPUs joined by nccl (``tools/dist_train.sh``): the
demo recipe shrunk to a few iterations, with a Seesaw and an EQLv2 Cascade
stage, as ``tests/test_dist_train.py`` runs it on gloo. Each rank trains on
its own GPU; the statistics are all-reduced, so both ranks end with the
same, global ones. Skipped, with the reason, without two CUDA devices;
``MMLT_TEST_DEVICE=cpu`` runs it on two CPU processes joined by gloo (to
check the test itself)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from cuda_cases import ROOT
from dist_utils import free_port
from longtail_probe import tiny_config

pytestmark = pytest.mark.cuda

SEESAW = 'roi_head.bbox_head.0.loss_cls'
EQLV2 = 'roi_head.bbox_head.1.loss_cls'


def test_two_processes_train_with_global_statistics(tiny_lvis, tmp_path,
                                                    cuda_device):
    if cuda_device.type == 'cuda' and torch.cuda.device_count() < 2:
        pytest.skip('nccl run needs 2 CUDA devices; this machine has '
                    f'{torch.cuda.device_count()}')
    backend = 'nccl' if cuda_device.type == 'cuda' else 'gloo'
    n = tiny_lvis['cfg'].num_classes
    work = tmp_path / 'work'
    cfg = tiny_config(tiny_lvis['root'], n, str(work), num_images=8,
                      batch_size=2, cascade_eqlv2=True)
    cfg.custom_hooks = [dict(type='device_probe.DeviceProbeHook')]
    cfg.find_unused_parameters = True
    # the demo configs say gloo (they are CPU configs); a GPU run says nccl
    cfg.env_cfg.dist_cfg.backend = backend
    cfg_file = str(tmp_path / 'two_procs.py')
    cfg.dump(cfg_file)
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable,
               OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(
                   [osp.join(ROOT, 'tests'), osp.join(ROOT, 'tests', 'cuda'),
                    ROOT]))
    if cuda_device.type == 'cuda':
        env.setdefault('CUDA_VISIBLE_DEVICES', '0,1')
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools/dist_train.sh'), cfg_file, '2',
         '--work-dir', str(work)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    for r in range(2):
        with open(work / f'device_rank{r}.json') as f:
            record = json.load(f)
        assert record['backend'] == backend, record
        assert record['params'] == [cuda_device.type], record
        assert record['buffers'] == [cuda_device.type], record
    probes = [torch.load(work / f'probe_rank{r}.pt', map_location='cpu')
              for r in range(2)]
    assert [p['world_size'] for p in probes] == [2, 2]
    assert probes[0]['iter'] == probes[1]['iter'] >= 2
    for p in probes:
        assert torch.isfinite(torch.tensor(p['losses'])).all()
    b0, b1 = probes[0]['buffers'], probes[1]['buffers']
    assert set(b0) == {f'{SEESAW}.cum_samples', f'{EQLV2}.pos_grad',
                       f'{EQLV2}.neg_grad', f'{EQLV2}.pos_neg'}
    for k in b0:  # all-reduced: the same on both ranks, bit for bit
        assert torch.equal(b0[k], b1[k]), k
    # Seesaw counted every label either rank saw
    labels = torch.cat([p['labels'][SEESAW] for p in probes]).cpu()
    hist = torch.bincount(labels, minlength=n + 1).float()
    assert torch.equal(b0[f'{SEESAW}.cum_samples'], hist)
    # EQLv2: the sum of both ranks' own contributions (float32 sums, added
    # in another order by the all-reduce)
    local = [p['eqlv2_local'][EQLV2].cpu() for p in probes]
    torch.testing.assert_close(b0[f'{EQLV2}.pos_grad'],
                               local[0][0] + local[1][0], rtol=1e-5,
                               atol=1e-7)
    torch.testing.assert_close(b0[f'{EQLV2}.neg_grad'],
                               local[0][1] + local[1][1], rtol=1e-5,
                               atol=1e-7)
    # the ranks drew different images
    assert probes[0]['indices'] != probes[1]['indices']
