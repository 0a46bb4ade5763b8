"""What the tools need, kept here so it is tested: Runner setup for
tools/train.py and tools/test.py, and the calibration sweep for
tools/calibrate.py (its held-out split is
:mod:`mmlongtail.datasets.heldout_split`, re-exported here as before)."""
from mmlongtail.datasets.heldout_split import split_heldout, split_info
from .calibrate import sweep
from .calibration import SweepResult, resolve_param
from .runner_setup import (apply_device_defaults, build_runner_config,
                           close_distributed, enable_amp,
                           init_cpu_distributed)

__all__ = [
    'SweepResult', 'apply_device_defaults', 'build_runner_config',
    'close_distributed', 'enable_amp', 'init_cpu_distributed',
    'resolve_param', 'split_heldout', 'split_info', 'sweep'
]
