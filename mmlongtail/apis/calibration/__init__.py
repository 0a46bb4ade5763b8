"""The calibration sweep's parts, one idea per module (the sweep itself is
:func:`mmlongtail.apis.calibrate.sweep`)."""
from .params import SHORT_PARAMS, TARGETS, Target, resolve_param
from .progress import Progress, format_seconds
from .result import BASELINE, CRITERIA, TASKS, SweepResult, choose_best
from .split import SPLITS, SplitInfo, prepare_split

__all__ = [
    'BASELINE', 'CRITERIA', 'Progress', 'SHORT_PARAMS', 'SPLITS',
    'SplitInfo', 'SweepResult', 'TARGETS', 'TASKS', 'Target', 'choose_best',
    'format_seconds', 'prepare_split', 'resolve_param'
]
