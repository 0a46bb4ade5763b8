"""A rank that dies mid-epoch: torchrun restarts the group, which resumes.

Two gloo processes train under the real launcher (``MAX_RESTARTS=1
tools/dist_train.sh``) the demo recipe (Seesaw + Norm Mask + RFS) shrunk to
2 iterations per epoch. Rank 1 SIGKILLs itself before the second iteration
of epoch 2 (``tests/rank_faults.py``, armed by its environment variable,
first start only), as the OOM killer would. torchrun stops rank 0, names
the failed rank, and starts both again; the restarted group resumes from
``epoch_1.pth`` by itself (the command has no ``--resume``), trains epoch 2
again and finishes. Its final checkpoint equals an uninterrupted run's bit
for bit: weights and the Seesaw class counts (a buffer in the state dict),
optimizer state, LR schedule and both ranks' RNG states. The probe of
``tests/longtail_probe.py`` shows the restarted group trained only epoch 2
(a restart from scratch would reach the same weights with the same seed).
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from dist_utils import free_port, launcher_env
from longtail_probe import tiny_config
from rank_faults import KILL_RANK_ENV

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
EPOCHS = 2
ITERS_PER_EPOCH = 2  # 8 images, 2 ranks x 2 per batch
KILL = f'1:{ITERS_PER_EPOCH + 1}'  # rank 1, second iteration of epoch 2
SEESAW_COUNTS = 'roi_head.bbox_head.loss_cls.cum_samples'


def _launch(cfg_file, work_dir, extra_env=None, timeout=240):
    env = launcher_env(KILL_RANK_ENV, 'MAX_RESTARTS')
    env.update(extra_env or {})
    try:
        proc = subprocess.run(
            ['bash', osp.join(ROOT, 'tools/dist_train.sh'), cfg_file, '2',
             '--work-dir', work_dir],
            cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b'').decode() + (e.stderr or b'').decode()
        pytest.fail(f'no end in {timeout} s (a hang?)\n{out[-6000:]}')
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def config_file(tiny_lvis, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('restart')
    cfg = tiny_config(tiny_lvis['root'], tiny_lvis['cfg'].num_classes,
                      str(tmp / 'unused'), num_images=8, batch_size=2,
                      max_epochs=EPOCHS)
    cfg.custom_hooks = [
        dict(type='rank_faults.KillRankHook'),
        dict(type='longtail_probe.LongTailProbeHook'),
    ]
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    path = str(tmp / 'tiny_restart.py')
    cfg.dump(path)
    return path


def test_killed_rank_restarts_resumes_and_equals_uninterrupted(
        config_file, tmp_path):
    ref_dir, work = str(tmp_path / 'ref'), str(tmp_path / 'killed')
    code, ref_log = _launch(config_file, ref_dir)
    assert code == 0, ref_log[-6000:]
    code, log = _launch(config_file, work,
                        {'MAX_RESTARTS': '1', KILL_RANK_ENV: KILL})
    assert code == 0, log[-6000:]
    assert osp.isfile(osp.join(work, 'killed_rank1.txt')), log[-6000:]

    final = f'epoch_{EPOCHS}.pth'
    a = torch.load(osp.join(ref_dir, final), weights_only=True)
    b = torch.load(osp.join(work, final), weights_only=True)
    assert (a['meta']['epoch'], a['meta']['iter']) == \
        (b['meta']['epoch'], b['meta']['iter']) == \
        (EPOCHS, EPOCHS * ITERS_PER_EPOCH)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:  # weights and the Seesaw counts
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    assert a['state_dict'][SEESAW_COUNTS].sum() > 0
    oa, ob = a['optimizer'], b['optimizer']
    assert oa['param_groups'] == ob['param_groups']
    for i in oa['state']:
        for k, v in oa['state'][i].items():
            assert torch.equal(v, ob['state'][i][k]), (i, k)
    assert a['param_schedulers'] == b['param_schedulers']
    for sa, sb in zip(a['rng_states'], b['rng_states']):
        assert torch.equal(sa['torch'], sb['torch'])

    # the restarted group resumed: it trained epoch 2 only, with the
    # uninterrupted run's losses
    for rank in range(2):
        ref = torch.load(osp.join(ref_dir, f'probe_rank{rank}.pt'))
        got = torch.load(osp.join(work, f'probe_rank{rank}.pt'))
        assert len(ref['losses']) == EPOCHS * ITERS_PER_EPOCH
        assert got['losses'] == ref['losses'][ITERS_PER_EPOCH:], rank
        assert got['indices'] == ref['indices'][ITERS_PER_EPOCH:], rank
    # torchrun names the rank that stopped and how; the restart says so
    assert 'failed (exitcode: -9) local_rank: 1' in log, log[-6000:]
    assert 'Restart 1 of 1 of the worker group' in log, log[-6000:]


FRESH_STORE_WORKER = """
import os, signal, sys
import torch.distributed as dist
dist.init_process_group('gloo')
store = dist.distributed_c10d._get_default_store()
if os.environ['TORCHELASTIC_RESTART_COUNT'] == '0':
    if dist.get_rank() == 0:
        store.set('left_by_the_first_start', '1')
    dist.barrier()
    if dist.get_rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()  # rank 0 waits here until torchrun stops it
else:
    stale = store.check(['left_by_the_first_start'])
    dist.barrier()
    dist.destroy_process_group()  # exiting with it alive may abort
    sys.exit(3 if stale else 0)
"""


def test_each_restart_gets_a_fresh_store(tmp_path):
    """A store shared across restarts hands the restarted processes the
    old ones' keys, their addresses included, and about half of such
    restarts fail or hang in init_process_group (pytorch#135712)."""
    script = tmp_path / 'worker.py'
    script.write_text(FRESH_STORE_WORKER)
    env = dict(os.environ, MAX_RESTARTS='1', PORT=str(free_port()),
               PYTHON=sys.executable, OMP_NUM_THREADS='1')
    try:
        proc = subprocess.run(
            ['bash', osp.join(ROOT, 'tools/torchrun.sh'), '2', str(script)],
            env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f'no end in 120 s\n{(e.stderr or b"").decode()[-4000:]}')
    out = proc.stdout + proc.stderr
    assert 'failed (exitcode: -9) local_rank: 1' in out, out[-4000:]
    assert proc.returncode == 0, out[-4000:]


def test_max_restarts_must_be_a_count():
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools/torchrun.sh'), '2', 'unused.py'],
        env=dict(os.environ, MAX_RESTARTS='two'), capture_output=True,
        text=True, timeout=30)
    assert proc.returncode == 2
    assert "MAX_RESTARTS must be an integer >= 0, got 'two'" in proc.stderr
