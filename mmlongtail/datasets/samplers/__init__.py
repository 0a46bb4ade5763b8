"""Data samplers."""
from .repeat_factor_sampler import (RepeatFactorSampler,
                                    dataset_repeat_factors)

__all__ = ['RepeatFactorSampler', 'dataset_repeat_factors']
