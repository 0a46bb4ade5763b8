"""Models: long-tail losses, normalized predictors, RoI heads and query
(DETR-family) heads with test-time scoring and the test-time scorers, the
label-gathered mask head and exact early-stopping NMS."""
from . import (dense_heads, feature_augment, layers, losses,  # noqa
               mask_heads, roi_heads, scorers, utils)
