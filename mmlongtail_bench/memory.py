"""A process's memory as the kernel counts it: the one reader of
``/proc/<pid>/status`` and of the peak-RSS reset that the benchmark tools
share (``tools/benchmark_*.py``). Linux only."""
import ctypes
from typing import Union


def proc_status(key: str, pid: Union[int, str] = 'self') -> int:
    """A byte count of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, ...).

    Raises:
        RuntimeError: If the file has no such field.
    """
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'no {key} in /proc/{pid}/status')


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS
    (``clear_refs`` 5; ``ru_maxrss`` would carry a parent's peak over).

    Raises:
        RuntimeError: Where the kernel does not allow it: a peak measured
            without the reset would be wrong.
    """
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError as e:
        raise RuntimeError(
            'cannot reset the peak RSS through /proc/self/clear_refs '
            f'({e}): run on Linux >= 4.0 with /proc writable, or measure '
            'on CUDA') from e


def trim_heap() -> None:
    """Hand the C heap's free pages back to the kernel (glibc
    ``malloc_trim``), so that a measured call cannot reuse pages already
    resident (a forked child reuses what its parent freed) and read low."""
    ctypes.CDLL('libc.so.6').malloc_trim(0)
