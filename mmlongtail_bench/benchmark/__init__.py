"""The long-tail benchmark on the synthetic dataset (``make bench``).

* :mod:`.methods`: the rows (one config each in ``configs/benchmark/``),
  their kind (trained, stage 2, post-hoc) and track (two-stage, one-stage,
  query-based);
* :mod:`.run`: one run, trained and evaluated (or, post-hoc, its parameter
  chosen on the held-out split by :func:`mmlongtail.apis.calibrate.sweep`
  and evaluated) in its own process
  (:mod:`.job`);
* :mod:`.runner`: :func:`run_benchmark`, which schedules the runs and writes
  the results, and :func:`.runner.measure_cost`, which runs one of each kind
  to measure the costs;
* :mod:`.identity`: what a run is by content (hashes of its settings,
  resolved config, dataset, start checkpoint and pretrained backbone), on
  which a finished run is reused;
* :mod:`.pretrain`: the pretrained start every track begins from (the
  backbone pretrained once on balanced crops of the synthetic world,
  cached by content);
* :mod:`.cost`: per-run costs, the time left and the whole benchmark's
  expected time;
* :mod:`.results` and :mod:`.plot`: the tables, the best methods, the
  per-class AP plot and the AP_r-against-AP_f summary.
"""
from .cost import (RECORDED_RATES, estimate_seconds, format_duration,
                   measured_rates, plan_seconds, simulate)
from .identity import (config_digest, dataset_digest, file_sha256,
                       identity_changes, run_identity)
from .methods import KINDS, TRACKS, Method, default_methods, track_baselines
from .plot import (frequency_bands, plot_ap_vs_frequency,
                   plot_rare_vs_frequent)
from .results import (TABLE_KEYS, beyond_seed_range, pick_best,
                      results_markdown, summarize)
from .pretrain import (PretrainSettings, pretrain_backbone,
                       read_pretrain_record)
from .run import (DATA_ROOT_VAR, INIT_CHECKPOINT_VAR, PRETRAINED_VAR,
                  RunSpec, boxes_only, dataset_files, fixed_ap_config,
                  heldout_file, identity_of, run_config, set_epochs,
                  train_and_evaluate)
from .runner import run_benchmark

__all__ = [
    'RECORDED_RATES', 'estimate_seconds', 'format_duration',
    'measured_rates', 'plan_seconds', 'simulate', 'KINDS', 'TRACKS',
    'Method', 'default_methods', 'track_baselines', 'frequency_bands',
    'plot_ap_vs_frequency', 'plot_rare_vs_frequent', 'TABLE_KEYS',
    'beyond_seed_range', 'pick_best', 'results_markdown', 'summarize',
    'DATA_ROOT_VAR', 'INIT_CHECKPOINT_VAR', 'PRETRAINED_VAR', 'RunSpec',
    'boxes_only', 'dataset_files', 'fixed_ap_config', 'heldout_file',
    'identity_of', 'run_config', 'set_epochs', 'train_and_evaluate',
    'run_benchmark', 'config_digest', 'dataset_digest', 'file_sha256',
    'identity_changes', 'run_identity', 'PretrainSettings',
    'pretrain_backbone', 'read_pretrain_record'
]
