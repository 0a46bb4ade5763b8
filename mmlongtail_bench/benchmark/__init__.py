"""The long-tail benchmark on the synthetic dataset (``make bench``).

* :mod:`.methods`: the rows (one config each in ``configs/benchmark/``);
* :mod:`.run`: one run, trained and evaluated in its own process
  (:mod:`.job`);
* :mod:`.runner`: :func:`run_benchmark`, which schedules the runs and writes
  the results;
* :mod:`.results` and :mod:`.plot`: the table, the best method and the
  per-class AP plot.
"""
from .methods import Method, default_methods
from .plot import frequency_bands, plot_ap_vs_frequency
from .results import TABLE_KEYS, pick_best, results_markdown, summarize
from .run import (DATA_ROOT_VAR, INIT_CHECKPOINT_VAR, RunSpec, dataset_files,
                  run_config, set_epochs, train_and_evaluate)
from .runner import run_benchmark

__all__ = [
    'Method', 'default_methods', 'frequency_bands', 'plot_ap_vs_frequency',
    'TABLE_KEYS', 'pick_best', 'results_markdown', 'summarize',
    'DATA_ROOT_VAR', 'INIT_CHECKPOINT_VAR', 'RunSpec', 'dataset_files',
    'run_config', 'set_epochs', 'train_and_evaluate', 'run_benchmark'
]
