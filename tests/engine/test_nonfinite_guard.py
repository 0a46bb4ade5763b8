"""NonFiniteGuardHook and the crash-safe hook's non-finite refusal, through a
real mmengine Runner on a toy classifier trained with mmlongtail's Seesaw
(``cum_samples``, updated in forward) and EQLv2 (``pos_grad``/``neg_grad``,
updated in backward) losses.

* stop: a NaN injected into one loss component at a chosen iteration stops
  training at that iteration, naming component, iteration and rank; with
  ``max_keep_ckpts=1`` the last good checkpoint survives and the resume
  repeats the uninterrupted run exactly;
* skip: the dropped step leaves weights and statistics equal, bit for bit,
  to a run that never saw that batch;
* without the guard, the checkpoint hook refuses to write the poisoned
  state over the good checkpoint;
* two gloo ranks, a NaN on one rank only: both take the same decision.
"""
import os.path as osp
import uuid

import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import MessageHub, MMLogger
from mmengine.model import BaseModel
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmlongtail  # noqa: F401
from mmlongtail.engine import NonFiniteError, NonFiniteGuardHook
from mmlongtail.engine.checkpoint_io import check_checkpoint, read_pointer
from mmlongtail.engine.nonfinite import (agree_across_ranks, any_nonfinite,
                                         first_nonfinite)
from mmlongtail.models.losses import EQLv2Loss, SeesawLoss
from tests.dist_utils import spawn_gloo

C = 4  # classes
STATS = ('seesaw.cum_samples', 'eqlv2.pos_grad', 'eqlv2.neg_grad',
         'eqlv2.pos_neg')


class _Samples(Dataset):
    """Sample ``i``: fixed features and label ``i % (C + 1)`` (C is the
    background)."""

    def __init__(self, drop=()):
        self.ids = [i for i in range(6) if i not in drop]

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, k):
        i = self.ids[k]
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, generator=g),
                    data_samples=torch.tensor(i % (C + 1)))


class _Classifier(BaseModel):
    """Two linear classifiers, one per loss. ``poison`` maps a 1-based
    training step (counted in the forward) to ``(component, how)``: the
    component's value is multiplied (NaN gradients too) or added to (a NaN
    loss with finite gradients) by NaN."""

    def __init__(self, poison=None, rank=0):
        super().__init__()
        self.fc_seesaw = nn.Linear(3, C + 2)
        self.fc_eqlv2 = nn.Linear(3, C + 1)
        self.seesaw = SeesawLoss(num_classes=C)
        self.eqlv2 = EQLv2Loss(num_classes=C)
        self.poison = poison or {}
        self.steps = 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs)
        if mode != 'loss':
            return [dict(out=o) for o in self.fc_eqlv2(x).detach()]
        self.steps += 1
        labels = torch.stack(data_samples)
        losses = dict(self.seesaw(self.fc_seesaw(x), labels))
        losses['loss_eqlv2'] = self.eqlv2(self.fc_eqlv2(x), labels)
        name, how = self.poison.get(self.steps, (None, None))
        if name is not None:
            nan = torch.tensor(float('nan'))
            losses[name] = losses[name] * nan if how == 'mul' \
                else losses[name] + nan
        return losses


class _Record(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.losses = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        loss = outputs.get('loss')  # a skipped step's NaN is not logged
        self.losses.append(None if loss is None else float(loss))


def _runner(work_dir, poison=None, guard='stop', resume=False, drop=(),
            epochs=3, max_keep_ckpts=1, accumulate=1):
    torch.manual_seed(0)
    hooks = dict(checkpoint=dict(type='mmlongtail.CrashSafeCheckpointHook',
                                 interval=1, max_keep_ckpts=max_keep_ckpts),
                 logger=dict(type='LoggerHook', interval=100))
    if guard is not None:
        hooks['nonfinite_guard'] = dict(type='mmlongtail.NonFiniteGuardHook',
                                        policy=guard)
    runner = Runner(
        model=_Classifier(poison),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_Samples(drop), batch_size=2, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9,
                           weight_decay=1e-3),
            accumulative_counts=accumulate),
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        default_hooks=hooks,
        default_scope='mmdet',
        randomness=dict(seed=3),
        resume=resume,
        experiment_name=f'guard-{uuid.uuid4().hex}',  # its own message hub
        log_level='WARNING')
    record = _Record()
    runner.register_hook(record)
    return runner, record


def _state(runner):
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_stop_names_the_step_and_the_last_good_checkpoint_resumes(tmp_path):
    full, rec_full = _runner(tmp_path / 'full')
    full.train()
    # step 5 is the second batch of epoch 2; epoch_1.pth is the last save
    runner, _ = _runner(tmp_path / 'run', poison={5: ('loss_eqlv2', 'mul')})
    with pytest.raises(NonFiniteError) as info:
        runner.train()
    message = str(info.value)
    for part in ('loss_eqlv2 = nan', 'iteration 5', 'epoch 2', 'rank 0'):
        assert part in message
    # the parameters were not touched by the poisoned step
    assert all(torch.isfinite(v).all() for v in _state(runner).values())
    first = str(tmp_path / 'run' / 'epoch_1.pth')
    assert read_pointer(str(tmp_path / 'run')) == first
    assert check_checkpoint(first)['epoch'] == 1
    resumed, rec = _runner(tmp_path / 'run', resume=True)
    resumed.train()
    assert rec.losses == rec_full.losses[3:]
    for key, value in _state(full).items():
        assert torch.equal(_state(resumed)[key], value), key


@pytest.mark.parametrize('how', ['mul', 'add'],
                         ids=['nan_gradients', 'finite_gradients'])
def test_skip_equals_a_run_that_never_saw_the_batch(tmp_path, how):
    # step 2 is the batch of samples 2 and 3 in epoch 1
    skipped, rec = _runner(tmp_path / 'skip', guard='skip', epochs=1,
                           poison={2: ('loss_cls_classes', how)})
    skipped.train()
    never, _ = _runner(tmp_path / 'never', guard='skip', epochs=1,
                       drop=(2, 3))
    never.train()
    guard = next(h for h in skipped.hooks
                 if isinstance(h, NonFiniteGuardHook))
    assert guard.skips == 1
    assert rec.losses[1] is None
    assert all(torch.isfinite(torch.tensor(v)) for v in rec.losses[::2])
    a, b = _state(skipped), _state(never)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the statistics did move (the check is not vacuous)
    assert a['seesaw.cum_samples'].sum() == 4
    assert a['eqlv2.pos_grad'].sum() > 0
    ckpt = torch.load(tmp_path / 'skip' / 'epoch_1.pth', weights_only=False)
    assert ckpt['message_hub']['runtime_info']['nonfinite_skips'] == 1


def test_a_resume_continues_the_skip_count(tmp_path):
    first, _ = _runner(tmp_path, guard='skip', epochs=1,
                       poison={2: ('loss_eqlv2', 'mul')})
    first.train()
    resumed, _ = _runner(tmp_path, guard='skip', epochs=2, resume=True,
                         poison={2: ('loss_eqlv2', 'mul')})  # 2nd after it
    resumed.train()
    guard = next(h for h in resumed.hooks
                 if isinstance(h, NonFiniteGuardHook))
    assert guard.skips == 2


def test_without_the_guard_the_poisoned_state_is_never_saved(tmp_path):
    runner, _ = _runner(tmp_path, guard=None,
                        poison={5: ('loss_cls_objectness', 'mul')})
    with pytest.raises(NonFiniteError) as info:
        runner.train()
    message = str(info.value)
    assert 'Refusing to write checkpoint epoch_2.pth' in message
    assert 'fc_seesaw.weight' in message and 'rank 0' in message
    assert 'epoch_1.pth' in message
    first = str(tmp_path / 'epoch_1.pth')
    assert read_pointer(str(tmp_path)) == first
    assert not (tmp_path / 'epoch_2.pth').exists()
    check_checkpoint(first)


def test_a_step_that_only_accumulates_gradients_is_checked(tmp_path):
    # with two batches per update, step 1 never reaches optimizer.step; its
    # NaN loss (finite gradients) is caught at its own iteration
    runner, _ = _runner(tmp_path, accumulate=2,
                        poison={1: ('loss_cls_objectness', 'add')})
    with pytest.raises(NonFiniteError,
                       match='iteration 1 .*loss_cls_objectness = nan'):
        runner.train()


def test_policy_is_checked():
    with pytest.raises(ValueError, match='policy'):
        NonFiniteGuardHook(policy='ignore')


def test_too_many_skips_in_a_row_stop(tmp_path):
    runner, _ = _runner(tmp_path, guard='skip', epochs=1,
                        poison={s: ('loss_eqlv2', 'mul')
                                for s in (1, 2)})
    guard = next(h for h in runner.hooks
                 if isinstance(h, NonFiniteGuardHook))
    guard.max_consecutive_skips = 1
    with pytest.raises(NonFiniteError, match='2 steps in a row'):
        runner.train()


class _StubRunner:
    """What the guard reads from a Runner, for a hand-driven step."""

    def __init__(self, model, name):
        self.model = model
        self.optim_wrapper = OptimWrapper(
            torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
        self.message_hub = MessageHub.get_instance(name)
        self.logger = MMLogger.get_instance(name, log_level='WARNING')
        self.iter = 0
        self.epoch = 0


def _two_ranks(rank, world, results):
    for policy in ('stop', 'skip'):
        torch.manual_seed(0)
        # samples 0, 1 on rank 0 and 2, 3 on rank 1; a NaN on rank 1 only,
        # at step 2
        model = _Classifier(
            poison={2: ('loss_eqlv2', 'mul')} if rank else {})
        runner = _StubRunner(model, f'guard-{policy}-{rank}')
        guard = NonFiniteGuardHook(policy=policy)
        guard.before_train(runner)
        data = [_Samples()[2 * rank + k] for k in (0, 1)]
        batch = dict(inputs=[d['inputs'] for d in data],
                     data_samples=[d['data_samples'] for d in data])
        outcome = 'finished'
        try:
            for it in range(3):
                runner.iter = it
                guard.before_train_iter(runner, it)
                out = model.train_step(batch, runner.optim_wrapper)
                guard.after_train_iter(runner, it, outputs=out)
        except NonFiniteError as e:
            outcome = f'stopped at {runner.iter + 1}: {e.findings}'
        torch.save(dict(outcome=outcome, skips=guard.skips,
                        state=model.state_dict()),
                   osp.join(results, f'{policy}{rank}.pth'))


def test_two_ranks_take_the_same_decision(tmp_path):
    spawn_gloo(_two_ranks, str(tmp_path))
    stop0, stop1, skip0, skip1 = (
        torch.load(tmp_path / f'{p}{r}.pth', weights_only=False)
        for p in ('stop', 'skip') for r in (0, 1))
    expected = "stopped at 2: ['rank 1: loss_eqlv2 = nan']"
    assert stop0['outcome'] == stop1['outcome'] == expected
    assert skip0['outcome'] == skip1['outcome'] == 'finished'
    assert skip0['skips'] == skip1['skips'] == 1
    # the statistics are summed over ranks: equal on both, finite
    for key in STATS:
        assert torch.equal(skip0['state'][key], skip1['state'][key]), key
        assert torch.isfinite(skip0['state'][key]).all(), key


class _CpuAmp(AmpOptimWrapper):
    """mmengine's AmpOptimWrapper (its backward and step, unchanged) with a
    CPU GradScaler: AmpOptimWrapper's own constructor requires CUDA."""

    def __init__(self, optimizer, init_scale):
        OptimWrapper.__init__(self, optimizer)
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', init_scale=init_scale)
        self.cast_dtype = None


def test_amp_overflow_is_left_to_the_grad_scaler():
    torch.manual_seed(0)
    model = _Classifier(poison={4: ('loss_eqlv2', 'add')})
    runner = _StubRunner(model, 'guard-amp')
    # a loss scale so large that the scaled gradients overflow to inf
    runner.optim_wrapper = _CpuAmp(
        torch.optim.SGD(model.parameters(), lr=0.1), init_scale=3e38)
    guard = NonFiniteGuardHook(policy='stop')
    guard.before_train(runner)
    data = [_Samples()[k] for k in (0, 1)]
    # large features: the scaled weight gradients overflow (dL/dW ~ x)
    batch = dict(inputs=[d['inputs'] * 1e3 for d in data],
                 data_samples=[d['data_samples'] for d in data])
    before = _state_of(model)
    scales = []
    for it in range(3):
        runner.iter = it
        guard.before_train_iter(runner, it)
        out = model.train_step(batch, runner.optim_wrapper)
        guard.after_train_iter(runner, it, outputs=out)
        scales.append(runner.optim_wrapper.loss_scaler.get_scale())
    # the scaler skipped overflowing steps and lowered its scale: no fault
    assert scales[0] < 3e38 and guard.skips == 0
    assert torch.equal(before['fc_eqlv2.weight'],
                       model.state_dict()['fc_eqlv2.weight'])
    # a non-finite loss is still a fault under AMP
    runner.iter = 3
    guard.before_train_iter(runner, 3)
    with pytest.raises(NonFiniteError, match='iteration 4'):
        out = model.train_step(batch, runner.optim_wrapper)
        guard.after_train_iter(runner, 3, outputs=out)


def _state_of(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_finite_gradients_whose_norm_overflows_are_no_fault():
    model = _Classifier()
    runner = _StubRunner(model, 'guard-overflow')
    guard = NonFiniteGuardHook(policy='stop')
    guard.before_train(runner)
    for value, fault in ((1e30, False), (float('inf'), True)):
        for p in model.parameters():
            p.grad = torch.full_like(p, 1e30)  # |g|_2 overflows float32
        model.fc_eqlv2.bias.grad[0] = value
        guard.before_train_iter(runner, 0)
        if fault:
            with pytest.raises(NonFiniteError,
                               match='gradient of fc_eqlv2.bias'):
                runner.optim_wrapper.step()
        else:
            runner.optim_wrapper.step()
            guard.after_train_iter(runner, 0, outputs={})
            assert guard.skips == 0


def test_checkpoint_scan_is_exact():
    named = [('a', torch.full((4, ), 1e30)), ('b', torch.arange(3.))]
    # the fast flag is up (the norm overflows), the exact scan finds nothing
    assert bool(any_nonfinite(t for _, t in named))
    assert agree_across_ranks(any_nonfinite(t for _, t in named),
                              lambda: first_nonfinite(named)) == []
    named[1][1][2] = float('-inf')
    assert agree_across_ranks(
        any_nonfinite(t for _, t in named),
        lambda: first_nonfinite(named)) == [
            'rank 0: b holds 1 non-finite values (-inf) of 3, shape (3,)']
