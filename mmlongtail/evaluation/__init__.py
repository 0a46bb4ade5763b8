"""Evaluation: the LVIS metric and its backends; saved predictions."""
from .lvis_metric import LVISMetric
from .streamed_test import SkipPredictedSampler, StreamedLVISMetric

__all__ = ['LVISMetric', 'SkipPredictedSampler', 'StreamedLVISMetric']
