"""Runner hooks."""
from .classifier_retraining_hook import ClassifierRetrainingHook
from .longtail_consistency_hook import (LongTailConsistencyHook,
                                        check_longtail_consistency)

__all__ = [
    'ClassifierRetrainingHook', 'LongTailConsistencyHook',
    'check_longtail_consistency'
]
