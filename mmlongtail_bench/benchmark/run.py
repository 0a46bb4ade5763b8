"""One benchmark run in its own process
(:mod:`mmlongtail_bench.benchmark.job`), by kind of method:

* ``'train'`` / ``'stage2'``: train the method's config with a seed,
  evaluate it after the last epoch and write ``metrics.json``;
* ``'posthoc'``: no training: evaluate another run's checkpoint with the
  method's test-time config, once per candidate value of its parameter on
  the held-out split (:func:`heldout_file`), then once on val with the value
  that scored best there; ``metrics.json`` records every candidate's
  held-out numbers and the choice.

The config owns every path: the dataset's location comes from
``$LONGTAIL_BENCH_ROOT`` (the held-out split's file from the config's
``heldout_ann_file``) and a decoupled method's stage-1 checkpoint from
``$LONGTAIL_BENCH_INIT_CHECKPOINT``, environment variables the configs of
``configs/benchmark/`` read with mmengine's ``{{$NAME:default}}``
substitution. Nothing here rewrites a path; the run's own settings (seed,
schedule, image subsets for smoke tests, the checkpoint a post-hoc method
loads, its parameter) are applied as config options.
"""
import copy
import json
import os.path as osp
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

from mmengine.config import Config
from mmengine.hooks import Hook

#: Where configs/benchmark/* find the benchmark dataset (ends with '/').
DATA_ROOT_VAR = 'LONGTAIL_BENCH_ROOT'
#: Where a decoupled method's config finds its stage-1 checkpoint.
INIT_CHECKPOINT_VAR = 'LONGTAIL_BENCH_INIT_CHECKPOINT'


@dataclass
class RunSpec:
    """What one benchmark process does.

    ``train_ann_file`` and ``val_ann_file`` (and, for a post-hoc run,
    ``heldout_ann_file``) are the dataset files the config resolves to (see
    :func:`dataset_files`); they are recorded so that a finished run is
    reused only for the same data. ``kind`` is the method's (see
    :mod:`.methods`); ``init_checkpoint`` is the stage-1 checkpoint of a
    ``'stage2'`` run or the checkpoint a ``'posthoc'`` run evaluates, and
    ``param`` / ``values`` / ``select_by`` the post-hoc choice.
    """
    key: str
    seed: int
    config: str
    work_dir: str
    train_ann_file: str
    val_ann_file: str
    init_checkpoint: Optional[str] = None
    epochs: Optional[int] = None
    train_images: Optional[int] = None
    val_images: Optional[int] = None
    threads: Optional[int] = None
    kind: str = 'train'
    track: str = 'two_stage'
    param: Optional[str] = None
    values: Optional[List[float]] = None
    select_by: Optional[str] = None
    heldout_ann_file: Optional[str] = None


def dataset_files(cfg: Config) -> Tuple[str, str]:
    """The training and validation annotation files ``cfg`` uses."""
    train = cfg.train_dataloader.dataset
    return (osp.join(train.get('data_root') or '', train.ann_file),
            cfg.val_evaluator.ann_file)


def heldout_file(cfg: Config) -> str:
    """The held-out split's annotation file of ``cfg`` (its
    ``heldout_ann_file``, which the benchmark's base config derives from the
    data root), where post-hoc methods choose their parameter.

    Raises:
        ValueError: If the config names none.
    """
    path = cfg.get('heldout_ann_file')
    if not path:
        raise ValueError('the config names no held-out split '
                         '(heldout_ann_file); configs/benchmark/'
                         'baseline_ce.py defines it')
    return path


def set_epochs(cfg: Config, epochs: int) -> None:
    """Shorten or lengthen the schedule: the LR drops by 10x for the last
    fifth of the epochs (at least the last epoch when there are two or
    more), as in the 5-epoch demo schedule (milestone 4); a progressively
    balanced sampler reaches its final distribution at the new end."""
    if epochs < 1:
        raise ValueError(f'epochs must be >= 1, got {epochs}')
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = epochs
    for sched in cfg.param_scheduler:
        if sched.get('type') == 'MultiStepLR':
            sched.end = epochs
            drop = min(epochs - 1, int(round(0.8 * epochs)))
            sched.milestones = [drop] if drop > 0 else []
    cfg.default_hooks.checkpoint.interval = epochs
    progressive = cfg.train_dataloader.get('sampler', {}).get('progressive')
    if progressive:
        progressive.end = epochs


def config_value(cfg: Config, key: str) -> Any:
    """The value at the dotted ``key`` of ``cfg`` (list items by index:
    ``'model.test_cfg.rcnn.score_calibration.0.gamma'``).

    Raises:
        KeyError: If the key does not exist (a post-hoc parameter that would
            otherwise be added beside the real one, changing nothing).
    """
    node: Any = cfg.to_dict() if isinstance(cfg, Config) else cfg
    for i, part in enumerate(key.split('.')):
        where = '.'.join(key.split('.')[:i]) or 'the config'
        if isinstance(node, (list, tuple)):
            if not part.isdigit() or int(part) >= len(node):
                raise KeyError(f'{key!r}: {where} is a list of {len(node)}, '
                               f'no item {part!r}')
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                raise KeyError(f'{key!r}: {where} has no {part!r} (it has '
                               f'{sorted(node)})')
            node = node[part]
        else:
            raise KeyError(f'{key!r}: {where} is not a dict or list')
    return node


def set_config_value(cfg: Config, key: str, value: Any) -> None:
    """Set the existing dotted ``key`` of ``cfg`` (as :func:`config_value`
    reads it; list items, scalars included, by index) to ``value``.

    Raises:
        KeyError: If the key does not exist.
    """
    config_value(cfg, key)
    parts = key.split('.')
    node: Any = cfg
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    node[int(last) if isinstance(node, list) else last] = value


def run_config(spec: RunSpec) -> Config:
    """The Runner config of ``spec``: the method's config as it resolves in
    this process's environment, with the run's seed, schedule and image
    subsets (and, post-hoc, the checkpoint it loads).

    Raises:
        ValueError: If ``spec`` names a stage-1 checkpoint that the config
            does not read (from ``$LONGTAIL_BENCH_INIT_CHECKPOINT``), or the
            config resolves to other dataset files than ``spec`` records.
        KeyError: If a post-hoc ``param`` is not a key of the config.
    """
    from mmlongtail_bench.demo import demo_config

    cfg = demo_config(spec.config, spec.work_dir)
    cfg.randomness = dict(seed=int(spec.seed))
    posthoc = spec.kind == 'posthoc'
    if posthoc:
        if spec.init_checkpoint is None:
            raise ValueError(f'post-hoc run {spec.key} names no checkpoint')
        cfg.load_from = spec.init_checkpoint
        config_value(cfg, spec.param)
    elif spec.init_checkpoint is not None and cfg.env_variables.get(
            INIT_CHECKPOINT_VAR) != spec.init_checkpoint:
        raise ValueError(
            f'{spec.config} should start from {spec.init_checkpoint}, but '
            f'does not read ${INIT_CHECKPOINT_VAR} (or it is not set to '
            'that path)')
    files = dataset_files(cfg)
    if files != (spec.train_ann_file, spec.val_ann_file) or (
            posthoc and heldout_file(cfg) != spec.heldout_ann_file):
        raise ValueError(
            f'{spec.config} resolves to the dataset files {files}, not '
            f'{(spec.train_ann_file, spec.val_ann_file)}: is '
            f'${DATA_ROOT_VAR} the same as when the run was planned?')
    if spec.epochs is not None:
        set_epochs(cfg, spec.epochs)
    if spec.train_images is not None:
        cfg.train_dataloader.dataset.indices = int(spec.train_images)
    if spec.val_images is not None:
        cfg.val_dataloader.dataset.indices = int(spec.val_images)
    # the test loop evaluates val (post-hoc runs) with the per-class file
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    cfg.test_evaluator = copy.deepcopy(cfg.val_evaluator)
    return cfg


def posthoc_config(cfg: Config, spec: RunSpec, value: float,
                   split: str) -> Config:
    """``cfg`` (from :func:`run_config`) with ``spec.param = value``, its
    test loop on ``split``: ``'heldout'`` (standard protocol only, no result
    files, for the choice) or ``'val'``."""
    if split not in ('heldout', 'val'):
        raise ValueError(f"split must be 'heldout' or 'val', got {split!r}")
    cfg = copy.deepcopy(cfg)
    set_config_value(cfg, spec.param, value)
    cfg.experiment_name = f'{spec.key}_seed{spec.seed}_{split}_{value:g}'
    if split == 'heldout':
        # absolute: the dataset would join a relative one to its data_root
        cfg.test_dataloader.dataset.ann_file = osp.abspath(
            spec.heldout_ann_file)
        cfg.test_dataloader.dataset.pop('indices', None)
        cfg.test_evaluator.ann_file = spec.heldout_ann_file
        cfg.test_evaluator.protocol = ['standard']
        cfg.test_evaluator.outfile_prefix = None
    return cfg


class PhaseTimer(Hook):
    """Wall and CPU seconds of a run's training and of its evaluations, and
    the training iterations (what the benchmark's cost estimate scales)."""
    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self.times: Dict[str, float] = dict(
            train_seconds=0.0, train_cpu_seconds=0.0, eval_seconds=0.0,
            eval_cpu_seconds=0.0, train_iters=0)
        self._mark: Tuple[float, float] = (0.0, 0.0)

    def _start(self) -> None:
        self._mark = (time.time(), time.process_time())

    def _stop(self, phase: str) -> None:
        wall, cpu = self._mark
        self.times[f'{phase}_seconds'] += time.time() - wall
        self.times[f'{phase}_cpu_seconds'] += time.process_time() - cpu

    def before_train(self, runner) -> None:
        self._start()

    def before_val(self, runner) -> None:
        if runner.train_loop is not None and self.times['train_iters'] == 0:
            self._stop('train')
            self.times['train_iters'] = int(runner.iter)
        self._start()

    def after_val(self, runner) -> None:
        self._stop('eval')

    def before_test(self, runner) -> None:
        self._start()

    def after_test(self, runner) -> None:
        self._stop('eval')


def _train(spec: RunSpec, cfg: Config) -> Tuple[dict, dict]:
    from mmengine.runner import Runner

    from mmlongtail.engine import LastMetricsHook

    runner = Runner.from_cfg(cfg)
    keep, timer = LastMetricsHook(), PhaseTimer()
    runner.register_hook(keep)
    runner.register_hook(timer)
    runner.train()  # validates after the last epoch
    metrics = keep.metrics or runner.val()
    epochs = int(cfg.train_cfg.max_epochs)
    extra = dict(checkpoint=osp.join(spec.work_dir, f'epoch_{epochs}.pth'),
                 epochs=epochs)
    return metrics, dict(extra, **timer.times)


def _evaluate(cfg: Config, timer: PhaseTimer) -> Dict[str, float]:
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    runner.register_hook(timer)
    return runner.test()


def choose_value(values: List[float], heldout: List[Dict[str, float]],
                 select_by: str) -> int:
    """Index of the value whose held-out ``lvis/{select_by}`` is highest
    (ties to the earlier value).

    Raises:
        KeyError: If a result lacks the key.
    """
    scores = []
    for v, m in zip(values, heldout):
        if f'lvis/{select_by}' not in m:
            raise KeyError(f'select_by={select_by!r}: the held-out results '
                           f'for {v} have no lvis/{select_by} (they have '
                           f'{sorted(m)})')
        scores.append(float(m[f'lvis/{select_by}']))
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def _posthoc(spec: RunSpec, cfg: Config) -> Tuple[dict, dict]:
    timer = PhaseTimer()
    heldout = [
        _evaluate(posthoc_config(cfg, spec, v, 'heldout'), timer)
        for v in spec.values
    ]
    best = choose_value(spec.values, heldout, spec.select_by)
    n = len(spec.values)
    held = dict(seconds=timer.times['eval_seconds'],
                cpu=timer.times['eval_cpu_seconds'])
    metrics = _evaluate(
        posthoc_config(cfg, spec, spec.values[best], 'val'), timer)
    times = dict(timer.times, heldout_eval_seconds=held['seconds'] / n,
                 heldout_eval_cpu_seconds=held['cpu'] / n)
    times['eval_seconds'] -= held['seconds']
    times['eval_cpu_seconds'] -= held['cpu']
    selection = dict(
        param=spec.param, values=list(spec.values), select_by=spec.select_by,
        heldout=[{k: float(v) for k, v in m.items()} for m in heldout],
        chosen=spec.values[best])
    return metrics, dict(times, checkpoint=spec.init_checkpoint,
                         selection=selection)


def train_and_evaluate(spec: RunSpec) -> dict:
    """Do ``spec`` (train and evaluate, or post-hoc: choose and evaluate);
    writes and returns ``{work_dir}/metrics.json``."""
    import torch

    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    cfg = run_config(spec)
    start = time.time()
    do = _posthoc if spec.kind == 'posthoc' else _train
    metrics, extra = do(spec, cfg)
    record = dict(
        spec=asdict(spec),
        metrics={k: float(v) for k, v in metrics.items()},
        per_class=osp.join(spec.work_dir, 'lvis.per_class.json'),
        seconds=time.time() - start,
        device='cuda' if torch.cuda.is_available() else 'cpu',
        threads=torch.get_num_threads(),
        **extra)
    with open(osp.join(spec.work_dir, 'metrics.json'), 'w') as f:
        json.dump(record, f, indent=1)
    return record
