"""``mmlongtail.EvalProgressHook``: validation and test progress lines on
loaders of any length.

mmengine's ``LoggerHook`` logs a val/test iteration every ``interval``
iterations (25 in the demo, 50 in the runtime base). A loader shorter than
that prints nothing until its metrics, however long each iteration takes (a
Fixed-AP pass of a weakly trained model can spend minutes on 8 iterations).
This hook logs at least every ``fraction`` of the loader and at its end, with
the elapsed time and an ETA.
"""
import math
import time
from datetime import timedelta
from typing import Optional, Sequence

from mmengine.hooks import Hook

from mmlongtail.registry import HOOKS
from mmlongtail.utils.progress import time_left


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(round(seconds))))


@HOOKS.register_module()
class EvalProgressHook(Hook):
    """Logs ``Epoch(val) progress [k/n] p%, elapsed h:mm:ss, ETA h:mm:ss``
    every ``ceil(fraction * n)`` iterations of a val or test loader of ``n``
    iterations, and after its last one.

    Args:
        fraction (float): Largest share of the loader between two lines, in
            ``(0, 1]``. Defaults to 0.1 (at least ten lines per loader; a
            line per iteration for loaders of up to ten).
    """
    priority = 'BELOW_NORMAL'

    def __init__(self, fraction: float = 0.1) -> None:
        if isinstance(fraction, bool) or not isinstance(
                fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(
                f'EvalProgressHook: fraction must lie in (0, 1], got '
                f'{fraction!r}')
        self.fraction = float(fraction)
        self._start = 0.0
        self._total = 0
        self._every = 1

    def _begin(self, loader: Sequence) -> None:
        self._start = time.perf_counter()
        self._total = len(loader)
        self._every = max(1, math.ceil(self.fraction * self._total))

    def _log_progress(self, runner, batch_idx: int, mode: str) -> None:
        done = batch_idx + 1
        if done % self._every and done != self._total:
            return
        elapsed = time.perf_counter() - self._start
        left = time_left(elapsed, done, self._total)
        percent = 100.0 * done / max(self._total, 1)
        runner.logger.info(
            f'Epoch({mode}) progress [{done}/{self._total}] {percent:.0f}%, '
            f'elapsed {_clock(elapsed)}, ETA {_clock(left)}')

    def before_val_epoch(self, runner) -> None:
        self._begin(runner.val_dataloader)

    def before_test_epoch(self, runner) -> None:
        self._begin(runner.test_dataloader)

    def after_val_iter(self,
                       runner,
                       batch_idx: int,
                       data_batch: Optional[dict] = None,
                       outputs: Optional[Sequence] = None) -> None:
        self._log_progress(runner, batch_idx, 'val')

    def after_test_iter(self,
                        runner,
                        batch_idx: int,
                        data_batch: Optional[dict] = None,
                        outputs: Optional[Sequence] = None) -> None:
        self._log_progress(runner, batch_idx, 'test')
