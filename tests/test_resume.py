"""Exact resume: a run stopped part-way and resumed equals an uninterrupted
one.

The model is the demo recipe (Seesaw + Norm Mask + RFS) with a 2-stage
Cascade whose second stage uses EQLv2, so both kinds of long-tail statistics
are checkpointed (see ``tests/longtail_probe.py``). Compared at the end:
iteration count, optimizer state, LR scheduler state, the indices the
sampler drew after the resume, the statistics, the weights and the losses.

Randomness. Nothing is reseeded during training. The checkpoints are written
by ``mmlongtail.CrashSafeCheckpointHook`` (as in every mmlongtail config),
which stores the global RNG states (Python, NumPy, torch) and restores them
right before the first batch after the resume, so the proposal samplers
(``RandomSampler``) and the pipeline's ``RandomFlip`` (run in the main
process here, ``num_workers=0``) draw exactly what the uninterrupted run
drew. With ``deterministic=True`` the CPU computation is deterministic and
everything is compared exactly. The sampler's stream depends only on
``(seed, epoch)``.

Sampler position: in epoch mode mmengine resumes at an epoch boundary and
calls ``set_epoch``; in infinite mode (``IterBasedTrainLoop``) mmengine
replays the first ``iter`` batches of the restarted dataloader, and since
the infinite stream restarts identically from the sampler's epoch, the
replay lands exactly where the stopped run was. The sampler itself does not
restore a position (that would make the loop's replay skip twice).
"""
import os.path as osp

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from longtail_probe import LongTailProbeHook, tiny_config

SEED = 7


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread (two thrash on a shared 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Stop(Exception):
    pass


class _StopAt(Hook):
    """Interrupt the run (as a crash would) before iteration ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            raise _Stop


def _cfg(tiny_lvis, work_dir, by_epoch):
    cfg = tiny_config(tiny_lvis['root'], tiny_lvis['cfg'].num_classes,
                      str(work_dir), num_images=6, batch_size=2,
                      max_epochs=2, cascade_eqlv2=True)
    assert any(t['type'] == 'RandomFlip'
               for t in cfg.train_dataloader.dataset.pipeline)
    cfg.randomness = dict(seed=SEED, deterministic=True)
    # mixed Cascade stages are refused by the consistency hook (they cannot
    # be evaluated); this test only trains
    cfg.custom_hooks = []
    if by_epoch:
        cfg.param_scheduler = [
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                 end=4),
            dict(type='MultiStepLR', by_epoch=True, milestones=[1],
                 gamma=0.1)
        ]
    else:
        cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=6,
                             val_interval=100)
        cfg.train_dataloader.sampler.infinite = True
        cfg.param_scheduler = [
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                 end=2),
            dict(type='MultiStepLR', by_epoch=False, milestones=[4],
                 gamma=0.1)
        ]
        cfg.default_hooks.checkpoint = dict(
            type='mmlongtail.CrashSafeCheckpointHook', interval=3,
            by_epoch=False)
        cfg.log_processor = dict(by_epoch=False)
    return cfg


def _train(cfg, tag, stop_at=None, resume=False):
    cfg = cfg.copy()
    cfg.resume = resume
    runner = Runner.from_cfg(cfg)
    runner.register_hook(LongTailProbeHook(tag))
    if stop_at is not None:
        runner.register_hook(_StopAt(stop_at))
        with pytest.raises(_Stop):
            runner.train()
    else:
        runner.train()
    return runner


def _probe(work_dir, tag):
    return torch.load(osp.join(work_dir, f'probe{tag}_rank0.pt'))


def _assert_same_checkpoint(a, b):
    ca, cb = torch.load(a), torch.load(b)
    assert ca['meta']['epoch'] == cb['meta']['epoch']
    assert ca['meta']['iter'] == cb['meta']['iter']
    sa, sb = ca['state_dict'], cb['state_dict']
    assert sa.keys() == sb.keys()
    for k in sa:  # weights and long-tail statistics, bit for bit
        assert torch.equal(sa[k], sb[k]), k
    oa, ob = ca['optimizer'], cb['optimizer']
    assert oa['param_groups'] == ob['param_groups']
    assert oa['state'].keys() == ob['state'].keys()
    for i in oa['state']:
        for k, v in oa['state'][i].items():
            assert torch.equal(v, ob['state'][i][k]), (i, k)
    assert ca['param_schedulers'] == cb['param_schedulers']
    return ca


STATS = ('roi_head.bbox_head.0.loss_cls.cum_samples',
         'roi_head.bbox_head.1.loss_cls.pos_grad',
         'roi_head.bbox_head.1.loss_cls.neg_grad')


@pytest.mark.parametrize('by_epoch', [True, False], ids=['epoch', 'infinite'])
def test_resumed_run_equals_uninterrupted(tiny_lvis, tmp_path, by_epoch):
    dir_a, dir_b = tmp_path / 'a', tmp_path / 'b'
    full = _train(_cfg(tiny_lvis, dir_a, by_epoch), 'A')
    a = _probe(dir_a, 'A')
    if by_epoch:
        per_epoch = len(a['indices']) // 2
        assert per_epoch * 2 == len(a['indices']) and per_epoch >= 2
        stop, ckpt = per_epoch, 'epoch_{}.pth'
    else:
        stop, ckpt = 3, 'iter_{}.pth'
    _train(_cfg(tiny_lvis, dir_b, by_epoch), 'B1', stop_at=stop)
    b1 = _probe(dir_b, 'B1') if osp.exists(dir_b / 'probeB1_rank0.pt') \
        else None
    assert b1 is None  # the interrupted run never finished
    resumed = _train(_cfg(tiny_lvis, dir_b, by_epoch), 'B2', resume=True)
    b2 = _probe(dir_b, 'B2')

    # the checkpoint the resume started from equals the uninterrupted run's
    first = 1 if by_epoch else stop
    _assert_same_checkpoint(dir_a / ckpt.format(first),
                            dir_b / ckpt.format(first))
    # the resumed run continued where the interrupted one stopped ...
    assert resumed.iter == full.iter == len(a['indices'])
    assert resumed.epoch == full.epoch
    assert len(b2['indices']) == len(a['indices']) - stop
    assert b2['indices'] == a['indices'][stop:]  # sampler position
    assert b2['losses'] == a['losses'][stop:]
    # ... and ended in the same state
    last = 2 if by_epoch else full.iter
    _assert_same_checkpoint(dir_a / ckpt.format(last),
                            dir_b / ckpt.format(last))
    for k in STATS:
        assert torch.equal(a['buffers'][k], b2['buffers'][k]), k
    assert a['buffers'][STATS[0]].sum() > 0
    lr_a = [g['lr'] for g in full.optim_wrapper.optimizer.param_groups]
    lr_b = [g['lr'] for g in resumed.optim_wrapper.optimizer.param_groups]
    assert lr_a == lr_b
