"""What tools/train.py and tools/test.py need, kept here so it is tested."""
from .runner_setup import (apply_device_defaults, build_runner_config,
                           enable_amp, init_cpu_distributed)

__all__ = [
    'apply_device_defaults', 'build_runner_config', 'enable_amp',
    'init_cpu_distributed'
]
