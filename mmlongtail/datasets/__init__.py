"""Datasets: category statistics, repeat-factor sampling, synthetic LVIS data."""
from .category_stats import CategoryStats, load_category_stats

__all__ = ['CategoryStats', 'load_category_stats']
