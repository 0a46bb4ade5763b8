"""Timing for the benchmark tools: several contenders measured side by
side in one process."""
import statistics
import time
from typing import Callable, Dict, List

import torch


def time_interleaved(steps: Dict[str, Callable[[], None]],
                     device: torch.device, iters: int,
                     warmup: int) -> Dict[str, float]:
    """Median milliseconds of each step, run round-robin so that a change
    in machine load affects every contender alike (CUDA is synchronized
    around each step)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    samples: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(iters):
        for name, step in steps.items():
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}
