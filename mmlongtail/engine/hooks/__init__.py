"""Runner hooks."""
from .bad_image_report_hook import BadImageReportHook
from .bbn_hook import BBNCumulativeLearningHook, check_bbn_setup
from .classifier_rebalance_hooks import (LearnableWeightScalingHook,
                                         TauNormalizationHook)
from .classifier_retraining_hook import ClassifierRetrainingHook
from .crash_safe_checkpoint_hook import CrashSafeCheckpointHook
from .drw_hook import DRWHook
from .eval_progress_hook import EvalProgressHook
from .fds_hook import FeatureDistributionSmoothingHook
from .fasa_sampling_hook import FASASamplingHook
from .last_metrics_hook import LastMetricsHook
from .longtail_consistency_hook import (LongTailConsistencyHook,
                                        check_longtail_consistency)
from .ncm_hook import NCMClassifierHook
from .nonfinite_guard_hook import NonFiniteGuardHook

__all__ = [
    'BadImageReportHook', 'BBNCumulativeLearningHook', 'check_bbn_setup',
    'ClassifierRetrainingHook', 'CrashSafeCheckpointHook', 'EvalProgressHook',
    'FASASamplingHook',
    'LastMetricsHook',
    'LongTailConsistencyHook', 'check_longtail_consistency',
    'LearnableWeightScalingHook', 'TauNormalizationHook',
    'NonFiniteGuardHook', 'DRWHook', 'FeatureDistributionSmoothingHook',
    'NCMClassifierHook',
]
