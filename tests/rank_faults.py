"""A test-only fault: one rank SIGKILLs itself at a chosen iteration.

Used by ``tests/test_dist_restart.py`` in processes launched by
``tools/dist_train.sh`` (a config names it as
``type='rank_faults.KillRankHook'`` with ``tests/`` on PYTHONPATH). The
fault is armed by the environment, ``MMLONGTAIL_TEST_KILL_RANK=RANK:ITER``:
rank ``RANK`` kills itself (SIGKILL, as the OOM killer would) right before
training iteration ``ITER`` (0-based, counted over the whole run), on the
first start of the worker group only (``TORCHELASTIC_RESTART_COUNT`` 0), so
the restarted group runs through. Before dying it writes the time of the
kill to ``<work_dir>/killed_rank<RANK>.txt``.
"""
import os
import os.path as osp
import signal
import time

from mmengine.dist import get_rank
from mmengine.hooks import Hook

KILL_RANK_ENV = 'MMLONGTAIL_TEST_KILL_RANK'


class KillRankHook(Hook):
    """SIGKILL this process before an iteration (see the module doc)."""

    priority = 'VERY_HIGH'

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        spec = os.environ.get(KILL_RANK_ENV)
        if not spec or os.environ.get('TORCHELASTIC_RESTART_COUNT',
                                      '0') != '0':
            return
        rank, at = (int(v) for v in spec.split(':'))
        if get_rank() == rank and runner.iter == at:
            with open(osp.join(runner.work_dir, f'killed_rank{rank}.txt'),
                      'w') as f:
                f.write(repr(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)
