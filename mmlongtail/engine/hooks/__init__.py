"""Runner hooks."""
from .bad_image_report_hook import BadImageReportHook
from .classifier_rebalance_hooks import (LearnableWeightScalingHook,
                                         TauNormalizationHook)
from .classifier_retraining_hook import ClassifierRetrainingHook
from .crash_safe_checkpoint_hook import CrashSafeCheckpointHook
from .eval_progress_hook import EvalProgressHook
from .last_metrics_hook import LastMetricsHook
from .longtail_consistency_hook import (LongTailConsistencyHook,
                                        check_longtail_consistency)
from .ncm_hook import NCMClassifierHook
from .nonfinite_guard_hook import NonFiniteGuardHook

__all__ = [
    'BadImageReportHook',
    'ClassifierRetrainingHook', 'CrashSafeCheckpointHook', 'EvalProgressHook',
    'LastMetricsHook',
    'LongTailConsistencyHook', 'check_longtail_consistency',
    'LearnableWeightScalingHook', 'TauNormalizationHook',
    'NonFiniteGuardHook',
    'NCMClassifierHook',
]
