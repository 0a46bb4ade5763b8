"""Which classes are "tail" (augmented) for the feature cloud and SMOTE."""
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from mmlongtail.datasets.category_stats import (FREQUENCY_GROUPS,
                                                StatsSource,
                                                load_category_stats)


def tail_mask(category_stats: StatsSource, num_classes: int, owner: str,
              tail_groups: Optional[Sequence[str]] = None,
              head_min_instances: Optional[int] = None) -> Tensor:
    """``(C,)`` bool, True for the tail classes.

    Exactly one of the two splits:

    * ``tail_groups``: the LVIS frequency groups that are tail, e.g.
      ``('r', 'c')``;
    * ``head_min_instances``: classes with fewer training instances are
      tail.
    """
    if (tail_groups is None) == (head_min_instances is None):
        raise ValueError(f'{owner}: give exactly one head/tail split, '
                         'tail_groups (LVIS frequency groups) or '
                         'head_min_instances (a training instance count), '
                         f'got tail_groups={tail_groups} and '
                         f'head_min_instances={head_min_instances}')
    stats = load_category_stats(category_stats, num_classes, owner)
    if tail_groups is not None:
        bad = [g for g in tail_groups if g not in FREQUENCY_GROUPS]
        if bad or not tail_groups:
            raise ValueError(f'{owner}: tail_groups must be a non-empty '
                             f'subset of {FREQUENCY_GROUPS}, got '
                             f'{tail_groups}')
        mask = np.isin(np.asarray(stats.frequency), list(tail_groups))
    else:
        if head_min_instances < 1:
            raise ValueError(f'{owner}: head_min_instances must be >= 1, '
                             f'got {head_min_instances}')
        mask = stats.instance_count < head_min_instances
    return torch.as_tensor(mask, dtype=torch.bool)
