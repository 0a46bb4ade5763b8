"""Small shared utilities."""
from .atomic_io import atomic_write
from .dist import all_reduce_sum_, is_distributed
from .model import unwrap_model
from .progress import Progress, format_seconds, time_left
from .rng_state import get_rng_state, set_rng_state

__all__ = [
    'all_reduce_sum_', 'atomic_write', 'get_rng_state', 'is_distributed',
    'set_rng_state', 'unwrap_model', 'Progress', 'format_seconds',
    'time_left'
]
