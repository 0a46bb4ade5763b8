"""Models: long-tail losses, normalized predictors, RoI heads with test-time
scoring and the test-time scorers."""
from . import layers, losses, roi_heads, scorers  # noqa: F401
