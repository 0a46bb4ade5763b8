"""The calibration sweep's parts, one idea per module (the sweep itself is
:func:`mmlongtail.apis.calibrate.sweep`)."""
from mmlongtail.utils.progress import Progress, format_seconds
from .params import resolve_param
from .result import BASELINE, CRITERIA, TASKS, SweepResult
from .split import SPLITS, prepare_split

__all__ = [
    'BASELINE', 'CRITERIA', 'Progress', 'SPLITS', 'SweepResult', 'TASKS',
    'format_seconds', 'prepare_split', 'resolve_param'
]
