"""Evaluation: the LVIS metric and its backends."""
from .lvis_metric import LVISMetric

__all__ = ['LVISMetric']
