"""Models: long-tail losses, normalized predictors, RoI heads and query
(DETR-family) heads with test-time scoring and the test-time scorers, the
label-gathered mask head, exact early-stopping NMS, and the match cost of
query-based heads."""
from . import (dense_heads, feature_augment, layers, losses,  # noqa
               mask_heads, roi_heads, scorers, task_modules, utils)
