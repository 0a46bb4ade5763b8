"""What decides the random draws of dataloader workers across a resume.

Workers are separate processes; their generators are not in the main
process's RNG state and not in a checkpoint. mmengine's Runner builds every
dataloader with its ``worker_init_fn``, which seeds Python, NumPy and torch
in worker ``w`` of rank ``r`` with ``seed + r * num_workers + w`` when the
worker starts, whatever the main process's generators hold. So:

* non-persistent workers (``persistent_workers=False``) start afresh every
  epoch: epoch ``e`` draws the same after a resume as in an uninterrupted
  run (exact resume holds for random augmentation in workers);
* persistent workers start once per launch and keep their generators across
  epochs: after a resume at epoch ``e`` they draw what the uninterrupted
  run's workers drew in its first epoch, not what they drew in epoch ``e``
  (the README says so; set ``persistent_workers=False`` for exactness).

In ``IterBasedTrainLoop`` the resumed run replays the trained batches
through the workers, which repeats their draws
(``tests/test_resume.py`` covers the loop's replay).
"""
import random

import numpy as np
import torch
from mmengine.runner import Runner
from torch.utils.data import Dataset


class _WorkerDraws(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(index=i, draws=(random.random(), float(np.random.rand()),
                                    float(torch.rand(()))))


def _loader(persistent, seed=5):
    return Runner.build_dataloader(
        dict(dataset=_WorkerDraws(), batch_size=2, num_workers=2,
             persistent_workers=persistent,
             sampler=dict(type='DefaultSampler', shuffle=True)),
        seed=seed)


def _epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)
    indices, draws = [], []
    for batch in loader:
        indices += batch['index']
        draws += batch['draws']
    return indices, draws


def _scramble_main_process():
    random.seed(999)
    np.random.seed(999)
    torch.manual_seed(999)


def test_non_persistent_workers_repeat_after_a_resume():
    loader = _loader(persistent=False)
    uninterrupted = [_epoch(loader, e) for e in range(3)]
    _scramble_main_process()  # a new process, generators anywhere
    resumed = _loader(persistent=False)
    assert _epoch(resumed, 2) == uninterrupted[2]
    # the draws come from (seed, rank, worker), not from the main process
    assert _epoch(_loader(persistent=False, seed=6), 2)[1] != \
        uninterrupted[2][1]


def test_persistent_workers_restart_their_stream_at_a_resume():
    loader = _loader(persistent=True)
    uninterrupted = [_epoch(loader, e) for e in range(2)]
    assert uninterrupted[0][1] != uninterrupted[1][1]  # the stream goes on
    _scramble_main_process()
    indices, draws = _epoch(_loader(persistent=True), 1)
    assert indices == uninterrupted[1][0]  # the sampler's order is exact
    assert draws != uninterrupted[1][1]  # the workers' draws are not:
    assert draws == uninterrupted[0][1]  # they start over
