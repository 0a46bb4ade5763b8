"""Datasets: category statistics, LVIS-format data, repeat-factor sampling."""
from .category_stats import CategoryStats, load_category_stats
from .heldout_split import split_heldout, split_info  # noqa: F401
from .image_categories import ImageCategories, image_categories
from .lvis_format import LVISFormatDataset, LVISV1Dataset
from .v3det_format import V3DetDataset

__all__ = [
    'CategoryStats', 'load_category_stats', 'ImageCategories',
    'image_categories', 'LVISFormatDataset', 'LVISV1Dataset', 'V3DetDataset'
]

# repeat-factor sampling (importing ``samplers`` registers the sampler)
from . import samplers  # noqa: E402,F401
from .repeat_factors import compute_repeat_factors  # noqa: E402
from .samplers import ClassAwareSampler, RepeatFactorSampler  # noqa: E402

__all__ += ['compute_repeat_factors', 'RepeatFactorSampler',
            'ClassAwareSampler']

# image loading that refuses or skips corrupt images (registers the transform)
from .transforms import (BadImageCount, BadImageError,  # noqa: E402
                         LoadImageChecked)

__all__ += ['BadImageCount', 'BadImageError', 'LoadImageChecked']

# BBN's two data streams (a dataset wrapper and its paired sampler)
from .bbn_streams import BBNStreamDataset  # noqa: E402
from .samplers import BBNPairSampler  # noqa: E402

__all__ += ['BBNStreamDataset', 'BBNPairSampler']
