"""Models: long-tail losses and normalized predictors."""
from . import layers, losses  # noqa: F401
