"""Runner hooks."""
from .classifier_retraining_hook import ClassifierRetrainingHook

__all__ = ['ClassifierRetrainingHook']
