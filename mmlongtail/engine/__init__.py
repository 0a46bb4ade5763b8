"""Runner-side components (hooks, CPU DDP wrapper)."""
from .hooks import (ClassifierRetrainingHook, LastMetricsHook,
                    LongTailConsistencyHook, check_longtail_consistency)
from .wrappers import CPUDistributedDataParallel

__all__ = [
    'ClassifierRetrainingHook', 'LastMetricsHook', 'LongTailConsistencyHook',
    'check_longtail_consistency', 'CPUDistributedDataParallel'
]
