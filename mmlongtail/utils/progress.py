"""Progress with the time left, for long loops in the library (the
calibration sweep's batches and evaluations, the val/test progress hook)."""
import time

from mmengine.logging import MMLogger


class Progress:
    """Progress lines of a counted task, with the time left estimated from
    the mean time per step so far: ``'{what} 3/40 (...), 12.1 s elapsed,
    about 2 min 29 s left'``.

    Args:
        what (str): The line's start.
        total (int): Steps in all.
        logger (MMLogger): Where the lines go (INFO).
        interval (int): Log every this many steps; the first and the last
            step are always logged. Defaults to 1.
    """

    def __init__(self, what: str, total: int, logger: MMLogger,
                 interval: int = 1) -> None:
        if interval < 1:
            raise ValueError(f'log_interval must be >= 1, got {interval}')
        self.what, self.total, self.logger = what, total, logger
        self.interval = interval
        self.done = 0
        self.start = time.perf_counter()

    def step(self, detail: str = '') -> None:
        """Count one step done; log it when due."""
        self.done += 1
        if self.done not in (1, self.total) and self.done % self.interval:
            return
        elapsed = time.perf_counter() - self.start
        left = time_left(elapsed, self.done, self.total)
        self.logger.info(
            f'{self.what} {self.done}/{self.total}'
            + (f' {detail}' if detail else '') +
            f', {format_seconds(elapsed)} elapsed, about '
            f'{format_seconds(left)} left')


def time_left(elapsed: float, done: int, total: int) -> float:
    """Seconds left for ``total`` steps when ``done`` took ``elapsed``, at
    the mean time per step so far."""
    return elapsed / max(done, 1) * max(total - done, 0)


def format_seconds(seconds: float) -> str:
    """``'4.2 s'``, ``'2 min 29 s'`` or ``'1 h 03 min'``."""
    if seconds < 60:
        return f'{seconds:.1f} s'
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f'{minutes} min {secs:02d} s'
    hours, minutes = divmod(minutes, 60)
    return f'{hours} h {minutes:02d} min'


