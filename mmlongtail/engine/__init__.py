"""Runner-side components (hooks, CPU DDP wrapper, checkpoint files)."""
from .checkpoint_io import (CheckpointError, check_checkpoint,
                            choose_resume_checkpoint)
from .hooks import (ClassifierRetrainingHook, CrashSafeCheckpointHook,
                    DRWHook, FeatureDistributionSmoothingHook,
                    LastMetricsHook, LearnableWeightScalingHook,
                    LongTailConsistencyHook, NonFiniteGuardHook,
                    TauNormalizationHook, check_longtail_consistency)
from .hooks import BBNCumulativeLearningHook, check_bbn_setup
from .hooks import NCMClassifierHook  # noqa: F401
from .nonfinite import NonFiniteError
from .wrappers import CPUDistributedDataParallel

__all__ = [
    'CheckpointError', 'check_checkpoint', 'choose_resume_checkpoint',
    'ClassifierRetrainingHook', 'CrashSafeCheckpointHook', 'LastMetricsHook',
    'LongTailConsistencyHook', 'check_longtail_consistency',
    'CPUDistributedDataParallel', 'LearnableWeightScalingHook',
    'TauNormalizationHook', 'NonFiniteGuardHook', 'NonFiniteError',
    'DRWHook', 'FeatureDistributionSmoothingHook',
    'BBNCumulativeLearningHook', 'check_bbn_setup', 'NCMClassifierHook'
]
