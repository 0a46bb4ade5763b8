"""Models: long-tail losses, normalized predictors, RoI heads with test-time
scoring and the test-time scorers, the label-gathered mask head and exact
early-stopping NMS, and the match cost of query-based heads."""
from . import (feature_augment, layers, losses, mask_heads,  # noqa
               roi_heads, scorers, task_modules, utils)
