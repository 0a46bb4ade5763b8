"""Data samplers (one epoch-stream machinery, :mod:`.epoch_stream`)."""
from .bbn_pair_sampler import BBNPairSampler
from .class_aware_sampler import ClassAwareSampler, class_probabilities
from .epoch_stream import EpochStreamSampler
from .repeat_factor_sampler import (RepeatFactorSampler,
                                    dataset_repeat_factors)

__all__ = [
    'BBNPairSampler',
    'ClassAwareSampler', 'class_probabilities', 'EpochStreamSampler',
    'RepeatFactorSampler', 'dataset_repeat_factors'
]
