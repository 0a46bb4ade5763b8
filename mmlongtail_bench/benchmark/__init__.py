"""The long-tail benchmark on the synthetic dataset (``make bench``)."""
from .runner import (TABLE_KEYS, Method, RunSpec, default_methods, pick_best,
                     plot_ap_vs_frequency, results_markdown, run_benchmark,
                     run_config, set_epochs, summarize, train_and_evaluate)

__all__ = [
    'TABLE_KEYS', 'Method', 'RunSpec', 'default_methods', 'pick_best',
    'plot_ap_vs_frequency', 'results_markdown', 'run_benchmark', 'run_config',
    'set_epochs', 'summarize', 'train_and_evaluate'
]
