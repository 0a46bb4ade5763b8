"""What tools/train.py and tools/test.py need, kept here so it is tested."""
from .demo import (LastMetricsHook, demo_config, format_metrics, run_demo,
                   train_keeping_final_metrics)
from .runner_setup import (apply_device_defaults, build_runner_config,
                           enable_amp, init_cpu_distributed)

__all__ = [
    'apply_device_defaults', 'build_runner_config', 'enable_amp',
    'init_cpu_distributed',
    'LastMetricsHook', 'demo_config', 'format_metrics', 'run_demo',
    'train_keeping_final_metrics'
]
