"""Data samplers (one epoch-stream machinery, :mod:`.epoch_stream`)."""
from .class_aware_sampler import ClassAwareSampler, class_probabilities
from .epoch_stream import EpochStreamSampler
from .repeat_factor_sampler import (RepeatFactorSampler,
                                    dataset_repeat_factors)

__all__ = [
    'ClassAwareSampler', 'class_probabilities', 'EpochStreamSampler',
    'RepeatFactorSampler', 'dataset_repeat_factors'
]
