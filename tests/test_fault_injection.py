"""kill -9 at any moment loses only the work since the last checkpoint.

A 2-process gloo training (``tools/dist_train.sh``, the demo recipe shrunk
to a few iterations, with a 2-stage Cascade whose second stage uses EQLv2,
``max_keep_ckpts=1``) is killed with SIGKILL, every process of it at once,
and resumed with ``--resume`` each time:

1. rank 0 kills itself half-way through writing ``epoch_2.pth`` (the
   test-only fault point of :mod:`mmlongtail.utils.atomic_io`);
2. then twice at a random moment (seeded; printed on failure) after the run
   has saved a new checkpoint, which lands in training, in a save, or in the
   removal of the previous checkpoint;
3. then it runs to the end.

After every kill, ``last_checkpoint`` names a complete checkpoint and every
checkpoint file in the work dir passes ``check_checkpoint``. The final
checkpoint equals an uninterrupted run's bit for bit: weights, long-tail
statistics (Seesaw counts, EQLv2 gradient sums, which are buffers in the
state dict), optimizer state, LR schedule, and both ranks' RNG states.
"""
import os
import os.path as osp
import random
import signal
import subprocess
import time

import pytest
import torch

from dist_utils import launcher_env
from longtail_probe import tiny_config
from mmlongtail.engine.checkpoint_io import (check_checkpoint,
                                             checkpoint_steps, read_pointer)
from mmlongtail.utils.atomic_io import KILL_DURING_WRITE_ENV, is_temporary

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
EPOCHS = 4
KILL_SEED = 2024
STATS = ('roi_head.bbox_head.0.loss_cls.cum_samples',
         'roi_head.bbox_head.1.loss_cls.pos_grad',
         'roi_head.bbox_head.1.loss_cls.neg_grad')


def _descendants(pid):
    children = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(')', 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def _kill_all(proc):
    """SIGKILL the launcher and every worker (torchrun starts each worker
    in a session of its own, so a process-group kill would miss them)."""
    for pid in _descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


class _Launcher:

    def __init__(self, cfg_file, work_dir, log_dir):
        self.cfg_file = cfg_file
        self.work_dir = work_dir
        self.log_dir = log_dir
        self.launches = []

    def start(self, resume, extra_env=None):
        env = launcher_env(KILL_DURING_WRITE_ENV)
        env.update(extra_env or {})
        log = osp.join(self.log_dir, f'launch{len(self.launches)}.log')
        cmd = ['bash', osp.join(ROOT, 'tools/dist_train.sh'), self.cfg_file,
               '2', '--work-dir', self.work_dir] + (['--resume']
                                                    if resume else [])
        out = open(log, 'w')
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        out.close()
        self.launches.append(log)
        return proc

    def tail(self):
        text = ''
        for log in self.launches:
            with open(log) as f:
                text += f'==== {log}\n' + f.read()[-3000:]
        return text


def _wait(proc, timeout, what, launcher):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_all(proc)
        pytest.fail(f'{what} did not finish in {timeout} s\n' +
                    launcher.tail())


def _assert_resumable(work_dir, launcher, context):
    """The pointer names a complete checkpoint; no checkpoint is damaged."""
    pointed = read_pointer(work_dir)
    assert pointed is not None, context + launcher.tail()
    check_checkpoint(pointed)
    for _, path in checkpoint_steps(work_dir, 'epoch_{}.pth'):
        check_checkpoint(path)
    return pointed


@pytest.fixture(scope='module')
def config_file(tiny_lvis, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('fault')
    cfg = tiny_config(tiny_lvis['root'], tiny_lvis['cfg'].num_classes,
                      str(tmp / 'unused'), num_images=8, batch_size=2,
                      max_epochs=EPOCHS, cascade_eqlv2=True)
    cfg.custom_hooks = []  # mixed Cascade stages: see test_dist_train.py
    cfg.find_unused_parameters = True
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    path = str(tmp / 'tiny_fault.py')
    cfg.dump(path)
    return path


def _train_uninterrupted(config_file, tmp):
    launcher = _Launcher(config_file, str(tmp / 'a'), str(tmp))
    proc = launcher.start(resume=False)
    assert _wait(proc, 300, 'uninterrupted run', launcher) == 0, \
        launcher.tail()
    return str(tmp / 'a')


def test_sigkill_at_any_moment_then_resume_equals_uninterrupted(
        config_file, tmp_path):
    start = time.time()
    ref_dir = _train_uninterrupted(config_file, tmp_path)
    work = str(tmp_path / 'b')
    launcher = _Launcher(config_file, work, str(tmp_path))
    rng = random.Random(KILL_SEED)
    history = []

    # 1. killed while writing epoch_2.pth, with max_keep_ckpts=1
    proc = launcher.start(resume=False,
                          extra_env={KILL_DURING_WRITE_ENV: 'epoch_2.pth'})
    code = _wait(proc, 300, 'run killed in a write', launcher)
    assert code != 0, launcher.tail()
    leftovers = [n for n in os.listdir(work) if is_temporary(n)]
    assert any(n.startswith('.epoch_2.pth.tmp-') for n in leftovers), \
        (os.listdir(work), launcher.tail())
    assert _assert_resumable(work, launcher, 'after the write kill') == \
        osp.join(work, 'epoch_1.pth')
    history.append('killed in the write of epoch_2.pth')

    # 2. killed at random moments after progress
    for cycle in range(2):
        before = read_pointer(work)
        proc = launcher.start(resume=True)
        deadline = time.time() + 300
        while read_pointer(work) == before and proc.poll() is None:
            if time.time() > deadline:
                _kill_all(proc)
                pytest.fail('no progress after a resume\n' + launcher.tail())
            time.sleep(0.05)
        delay = rng.uniform(0.0, 2.0)
        time.sleep(delay)
        finished = proc.poll() is not None
        _kill_all(proc)
        history.append(f'cycle {cycle}: {before} -> {read_pointer(work)}, '
                       f'killed {delay:.2f} s later' +
                       (' (had finished)' if finished else ''))
        _assert_resumable(work, launcher, '; '.join(history))

    # 3. resume to the end
    proc = launcher.start(resume=True)
    assert _wait(proc, 300, 'final resume', launcher) == 0, launcher.tail()
    elapsed = time.time() - start

    final = f'epoch_{EPOCHS}.pth'
    assert sorted(n for n in os.listdir(work) if n.endswith('.pth')) == [
        final], '; '.join(history)  # max_keep_ckpts=1, temporaries removed
    assert not [n for n in os.listdir(work) if is_temporary(n)]
    a = torch.load(osp.join(ref_dir, final), weights_only=True)
    b = torch.load(osp.join(work, final), weights_only=True)
    context = '; '.join(history) + f' ({elapsed:.0f} s)'
    assert (a['meta']['epoch'], a['meta']['iter']) == \
        (b['meta']['epoch'], b['meta']['iter']), context
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:  # weights and long-tail statistics
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), \
            (k, context)
    for k in STATS:
        assert a['state_dict'][k].abs().sum() > 0, k
    oa, ob = a['optimizer'], b['optimizer']
    assert oa['param_groups'] == ob['param_groups']
    assert oa['state'].keys() == ob['state'].keys()
    for i in oa['state']:
        for k, v in oa['state'][i].items():
            assert torch.equal(v, ob['state'][i][k]), (i, k, context)
    assert a['param_schedulers'] == b['param_schedulers']
    ra, rb = a['rng_states'], b['rng_states']
    assert len(ra) == len(rb) == 2
    for sa, sb in zip(ra, rb):  # each rank's generators, continued exactly
        assert torch.equal(sa['torch'], sb['torch'])
        assert torch.equal(sa['numpy']['keys'], sb['numpy']['keys'])
        assert torch.equal(sa['python']['state'], sb['python']['state'])
