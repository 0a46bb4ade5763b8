"""Runner-side components (hooks)."""
from .hooks import ClassifierRetrainingHook

__all__ = ['ClassifierRetrainingHook']
