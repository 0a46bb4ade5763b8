"""CrashSafeCheckpointHook through a real mmengine Runner on a toy model whose
training draws from every global generator (torch in the forward pass, NumPy
and Python in the dataset, which runs in the main process).

* saving order: checkpoint, then last_checkpoint, then removal of the
  checkpoints beyond max_keep_ckpts; the files are mmengine's names;
* a crash at each step of a save (in the write, before the pointer, before
  the removal) still resumes, with max_keep_ckpts=1;
* a damaged checkpoint: a clear error for a given path, the newest intact
  one (and a log line saying which and why) in auto mode;
* exact resume without reseeding, in epoch and iteration loops, with
  validation (which also draws) between a save and the next batch;
* every checkpoint loads with weights_only=True and holds the RNG state.
"""
import logging
import os
import os.path as osp
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmlongtail  # noqa: F401
from mmlongtail.engine import CheckpointError, CrashSafeCheckpointHook
from mmlongtail.engine.checkpoint_io import AtomicLocalBackend
from mmlongtail.engine.hooks import crash_safe_checkpoint_hook as hook_mod
from mmlongtail.utils import atomic_io
from mmlongtail.utils.rng_state import get_rng_state, set_rng_state


class _Draws(Dataset):
    """Each sample carries draws from NumPy's and Python's generators."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        x = torch.tensor([float(i), np.random.rand(), random.random()])
        return dict(inputs=x)


class _Noisy(BaseModel):
    """A linear model whose input gets torch noise (like proposal sampling)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs)
        out = self.linear(x + torch.rand_like(x))
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return [dict(out=o) for o in out.detach()]


class _Metric(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.extend(float(s['out']) for s in data_samples)

    def compute_metrics(self, results):
        return dict(mean=float(np.mean(results)))


class _Record(Hook):
    """Losses and parameters after every iteration."""
    priority = 'LOWEST'

    def __init__(self):
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses.append(outputs['loss'].item())


class _Stop(Exception):
    pass


class _StopAt(Hook):

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            raise _Stop


def _runner(work_dir, by_epoch=True, resume=False, load_from=None,
            max_keep_ckpts=-1, val=False, seed=11, **ckpt):
    loader = dict(dataset=_Draws(), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=True)
                  if by_epoch else dict(type='InfiniteSampler', shuffle=True))
    if by_epoch:
        train_cfg = dict(by_epoch=True, max_epochs=3, val_interval=1)
    else:
        train_cfg = dict(type='IterBasedTrainLoop', max_iters=9,
                         val_interval=3)
    val_kwargs = {}
    if val:
        val_kwargs = dict(
            val_dataloader=dict(
                dataset=_Draws(), batch_size=3, num_workers=0,
                sampler=dict(type='DefaultSampler', shuffle=True)),
            val_cfg=dict(), val_evaluator=[_Metric()])
    torch.manual_seed(0)  # the same initial weights in every run
    model = _Noisy()
    runner = Runner(
        model=model,
        work_dir=str(work_dir),
        train_dataloader=loader,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        train_cfg=train_cfg,
        default_hooks=dict(
            checkpoint=dict(
                type='mmlongtail.CrashSafeCheckpointHook',
                interval=1 if by_epoch else 3,
                by_epoch=by_epoch,
                max_keep_ckpts=max_keep_ckpts,
                **ckpt),
            logger=dict(type='LoggerHook', interval=100)),
        randomness=dict(seed=seed),
        resume=resume,
        load_from=load_from,
        log_level='WARNING',
        **val_kwargs)
    record = _Record()
    runner.register_hook(record)
    return runner, record


def _train(work_dir, stop_at=None, **kwargs):
    runner, record = _runner(work_dir, **kwargs)
    if stop_at is not None:
        runner.register_hook(_StopAt(stop_at))
        with pytest.raises(_Stop):
            runner.train()
    else:
        runner.train()
    return runner, record


def _state(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


@pytest.mark.parametrize(
    'by_epoch,stop', [(True, 3), (True, 6), (False, 3), (False, 6)],
    ids=['epoch1', 'epoch2', 'iter3', 'iter6'])
@pytest.mark.parametrize('val', [False, True], ids=['noval', 'val'])
def test_resume_continues_exactly_without_reseeding(tmp_path, by_epoch, stop,
                                                    val):
    full, rec_full = _train(tmp_path / 'a', by_epoch=by_epoch, val=val)
    _train(tmp_path / 'b', stop_at=stop, by_epoch=by_epoch, val=val)
    resumed, rec = _train(tmp_path / 'b', by_epoch=by_epoch, val=val,
                          resume=True)
    assert len(rec_full.losses) == 9
    assert rec.losses == rec_full.losses[stop:]
    a, b = _state(full), _state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    oa = full.optim_wrapper.state_dict()['state']
    ob = resumed.optim_wrapper.state_dict()['state']
    assert all(torch.equal(oa[i]['momentum_buffer'], ob[i]['momentum_buffer'])
               for i in oa)


def test_without_restoring_the_rng_the_resumed_run_differs(tmp_path,
                                                           monkeypatch):
    """The test above can fail: skip the restore and the losses differ."""
    _, rec_full = _train(tmp_path / 'a')
    _train(tmp_path / 'b', stop_at=3)
    monkeypatch.setattr(CrashSafeCheckpointHook, '_restore_rng',
                        lambda self, runner: None)
    _, rec = _train(tmp_path / 'b', resume=True)
    assert rec.losses != rec_full.losses[3:]


def test_checkpoint_holds_rng_state_and_loads_weights_only(tmp_path):
    _train(tmp_path, stop_at=7)
    ckpt = torch.load(tmp_path / 'epoch_2.pth', weights_only=True)
    states = ckpt['rng_states']
    assert len(states) == 1  # one process
    assert set(states[0]) == {'python', 'numpy', 'torch', 'cuda'}
    assert ckpt['message_hub']['runtime_info']['last_ckpt'] == str(
        tmp_path / 'epoch_2.pth')
    # a state the generators accept
    before = get_rng_state()
    set_rng_state(states[0])
    draws = torch.rand(3)
    set_rng_state(states[0])
    assert torch.equal(torch.rand(3), draws)
    set_rng_state(before)


def test_same_file_names_and_options_as_mmengine(tmp_path):
    _train(tmp_path / 'e', max_keep_ckpts=2)
    assert sorted(n for n in os.listdir(tmp_path / 'e')
                  if n.endswith('.pth')) == ['epoch_2.pth', 'epoch_3.pth']
    assert (tmp_path / 'e' / 'last_checkpoint').read_text() == str(
        tmp_path / 'e' / 'epoch_3.pth')
    _train(tmp_path / 'i', by_epoch=False, filename_tmpl='step{}.ckpt',
           out_dir=str(tmp_path / 'out'))
    assert sorted(os.listdir(tmp_path / 'out' / 'i')) == [
        'step3.ckpt', 'step6.ckpt', 'step9.ckpt']
    assert (tmp_path / 'i' / 'last_checkpoint').read_text() == str(
        tmp_path / 'out' / 'i' / 'step9.ckpt')
    # remote storage keeps mmengine's writer
    hook = CrashSafeCheckpointHook(interval=1,
                                   backend_args=dict(backend='local'))
    assert not hook.atomic and hook.backend_args == dict(backend='local')
    assert CrashSafeCheckpointHook(interval=1).atomic


def test_order_checkpoint_pointer_then_removal(tmp_path, monkeypatch):
    events = []
    real_replace, real_remove = os.replace, os.remove

    def replace(src, dst):
        events.append(('write', osp.basename(dst)))
        real_replace(src, dst)

    def remove(path):
        events.append(('remove', osp.basename(path)))
        real_remove(path)

    monkeypatch.setattr(os, 'replace', replace)
    monkeypatch.setattr(os, 'remove', remove)
    _train(tmp_path, max_keep_ckpts=1)
    assert events == [
        ('write', 'epoch_1.pth'), ('write', 'last_checkpoint'),
        ('write', 'epoch_2.pth'), ('write', 'last_checkpoint'),
        ('remove', 'epoch_1.pth'),
        ('write', 'epoch_3.pth'), ('write', 'last_checkpoint'),
        ('remove', 'epoch_2.pth')]


def _crash_at_write(monkeypatch, name, nth):
    """Make the ``nth`` write of a file called ``name`` fail, as a kill
    would (a real kill also leaves a temporary file: tests/utils)."""
    real = atomic_io.atomic_write
    seen = []

    def write(path, data):
        if osp.basename(path) == name:
            seen.append(path)
            if len(seen) == nth:
                raise _Stop
        real(path, data)

    monkeypatch.setattr(hook_mod, 'atomic_write', write)  # last_checkpoint
    monkeypatch.setattr('mmlongtail.engine.checkpoint_io.atomic_write',
                        write)  # checkpoints


@pytest.mark.parametrize('name,nth', [('epoch_2.pth', 1),
                                      ('last_checkpoint', 2)],
                         ids=['in_checkpoint', 'in_pointer'])
def test_crash_during_save_with_max_keep_one_resumes(tmp_path, monkeypatch,
                                                     name, nth):
    _, rec_full = _train(tmp_path / 'a', max_keep_ckpts=1)
    with monkeypatch.context() as m:
        _crash_at_write(m, name, nth)
        runner, _ = _runner(tmp_path / 'b', max_keep_ckpts=1)
        with pytest.raises(_Stop):
            runner.train()
    # epoch_1 is kept until epoch_2 and the pointer to it are complete
    assert (tmp_path / 'b' / 'epoch_1.pth').is_file()
    assert (tmp_path / 'b' / 'last_checkpoint').read_text() == str(
        tmp_path / 'b' / 'epoch_1.pth')
    _, rec = _train(tmp_path / 'b', resume=True, max_keep_ckpts=1)
    assert rec.losses == rec_full.losses[3:]
    assert sorted(n for n in os.listdir(tmp_path / 'b')
                  if n.endswith('.pth')) == ['epoch_3.pth']


def test_crash_before_removal_is_finished_by_the_resume(tmp_path,
                                                        monkeypatch):
    _, rec_full = _train(tmp_path / 'a', max_keep_ckpts=1)
    with monkeypatch.context() as m:

        def remove(self, path):
            raise _Stop

        m.setattr(AtomicLocalBackend, 'remove', remove)
        runner, _ = _runner(tmp_path / 'b', max_keep_ckpts=1)
        with pytest.raises(_Stop):
            runner.train()
    names = sorted(os.listdir(tmp_path / 'b'))
    assert 'epoch_1.pth' in names and 'epoch_2.pth' in names
    _, rec = _train(tmp_path / 'b', resume=True, max_keep_ckpts=1)
    assert not (tmp_path / 'b' / 'epoch_1.pth').exists()  # removal finished
    assert rec.losses == rec_full.losses[6:]


class _Collect(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _truncate(path):
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 3])


def test_damaged_checkpoint_auto_mode_uses_newest_intact(tmp_path):
    _, rec_full = _train(tmp_path / 'a')
    _train(tmp_path / 'b', stop_at=7)
    _truncate(tmp_path / 'b' / 'epoch_2.pth')  # as a non-atomic writer leaves
    handler = _Collect()
    runner, rec = _runner(tmp_path / 'b', resume=True)
    runner.logger.addHandler(handler)
    try:
        runner.train()
    finally:
        runner.logger.removeHandler(handler)
    note = [m for m in handler.messages if 'newest intact' in m]
    assert len(note) == 1
    assert str(tmp_path / 'b' / 'epoch_1.pth') in note[0]
    assert str(tmp_path / 'b' / 'epoch_2.pth') in note[0]
    assert 'truncated' in note[0]
    assert rec.losses == rec_full.losses[3:]  # from the end of epoch 1


def test_damaged_checkpoint_given_as_path_is_a_clear_error(tmp_path):
    _train(tmp_path, stop_at=7)
    path = str(tmp_path / 'epoch_2.pth')
    _truncate(path)
    runner, _ = _runner(tmp_path, resume=True, load_from=path)
    with pytest.raises(CheckpointError) as info:
        runner.train()
    assert info.value.path == path
    assert f'checkpoint {path} is unusable' in str(info.value)
    assert 'truncated' in str(info.value)


def test_load_from_without_resume_does_not_touch_the_rng(tmp_path):
    _train(tmp_path / 'a', stop_at=7)
    runner, _ = _runner(tmp_path / 'b', load_from=str(tmp_path / 'a' /
                                                     'epoch_2.pth'))
    hook = [h for h in runner.hooks
            if isinstance(h, CrashSafeCheckpointHook)][0]
    runner.train()
    assert runner.iter == 9  # trained from the start
    assert not hook._resuming and hook._resumed_rng is None


def test_validation_gets_its_own_generators():
    hook = CrashSafeCheckpointHook(interval=1)
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    hook.before_val(None)
    torch.rand(100)
    np.random.rand(7)
    hook.after_val(None)
    assert torch.equal(torch.rand(2), expected)


def test_stale_temporaries_removed_at_start(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    stale = tmp_path / '.epoch_2.pth.tmp-4242'
    stale.write_bytes(b'half')
    keep = tmp_path / 'notes.tmp'
    keep.write_bytes(b'user file')
    _train(tmp_path)
    assert not stale.exists() and keep.exists()


def test_resume_with_another_seed_is_reported(tmp_path):
    _train(tmp_path, stop_at=4)
    handler = _Collect()
    runner, _ = _runner(tmp_path, resume=True, seed=12)
    runner.logger.addHandler(handler)
    try:
        runner.train()
    finally:
        runner.logger.removeHandler(handler)
    assert any('was trained with seed 11' in m and 'seed 12' in m
               for m in handler.messages)
