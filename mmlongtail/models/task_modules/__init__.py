"""Task modules of query-based heads: the classification match cost that
asks the loss for its activation."""
from .match_cost import LossActivationCost  # noqa: F401
