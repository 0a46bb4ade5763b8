"""Small shared utilities."""
from .dist import all_reduce_sum_, is_distributed

__all__ = ['all_reduce_sum_', 'is_distributed']
