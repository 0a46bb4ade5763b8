"""What the tools need, kept here so it is tested: Runner setup for
tools/train.py and tools/test.py, and the calibration sweep with its held-out
split for tools/calibrate.py."""
from .calibrate import SweepResult, resolve_param, sweep
from .heldout_split import split_heldout, split_info
from .runner_setup import (apply_device_defaults, build_runner_config,
                           enable_amp, init_cpu_distributed)

__all__ = [
    'SweepResult', 'apply_device_defaults', 'build_runner_config',
    'enable_amp', 'init_cpu_distributed', 'resolve_param', 'split_heldout',
    'split_info', 'sweep'
]
