"""One benchmark run: train a method's config with a seed, evaluate it after
the last epoch and write ``metrics.json``. It runs in its own process
(:mod:`mmlongtail_bench.benchmark.job`).

The config owns every path: the dataset's location comes from
``$LONGTAIL_BENCH_ROOT`` and a decoupled method's stage-1 checkpoint from
``$LONGTAIL_BENCH_INIT_CHECKPOINT``, environment variables the configs of
``configs/benchmark/`` read with mmengine's ``{{$NAME:default}}``
substitution. Nothing here rewrites a path; the run's own settings (seed,
schedule, image subsets for smoke tests) are applied as config options.
"""
import json
import os.path as osp
import time
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

from mmengine.config import Config

#: Where configs/benchmark/* find the benchmark dataset (ends with '/').
DATA_ROOT_VAR = 'LONGTAIL_BENCH_ROOT'
#: Where a decoupled method's config finds its stage-1 checkpoint.
INIT_CHECKPOINT_VAR = 'LONGTAIL_BENCH_INIT_CHECKPOINT'


@dataclass
class RunSpec:
    """What one benchmark process trains and evaluates.

    ``train_ann_file`` and ``val_ann_file`` are the dataset files the config
    resolves to (see :func:`dataset_files`); they are recorded so that a
    finished run is reused only for the same data.
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


def dataset_files(cfg: Config) -> Tuple[str, str]:
    """The training and validation annotation files ``cfg`` uses."""
    train = cfg.train_dataloader.dataset
    return (osp.join(train.get('data_root') or '', train.ann_file),
            cfg.val_evaluator.ann_file)


def set_epochs(cfg: Config, epochs: int) -> None:
    """Shorten or lengthen the schedule: the LR drops by 10x for the last
    fifth of the epochs (at least the last epoch when there are two or
    more), as in the 5-epoch demo schedule (milestone 4)."""
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


def run_config(spec: RunSpec) -> Config:
    """The Runner config of ``spec``: the method's config as it resolves in
    this process's environment, with the run's seed, schedule and image
    subsets.

    Raises:
        ValueError: If ``spec`` names a stage-1 checkpoint that the config
            does not read (from ``$LONGTAIL_BENCH_INIT_CHECKPOINT``), or the
            config resolves to other dataset files than ``spec`` records.
    """
    from mmlongtail_bench.demo import demo_config

    cfg = demo_config(spec.config, spec.work_dir)
    cfg.randomness = dict(seed=int(spec.seed))
    if spec.init_checkpoint is not None and cfg.env_variables.get(
            INIT_CHECKPOINT_VAR) != spec.init_checkpoint:
        raise ValueError(
            f'{spec.config} should start from {spec.init_checkpoint}, but '
            f'does not read ${INIT_CHECKPOINT_VAR} (or it is not set to '
            'that path)')
    files = dataset_files(cfg)
    if files != (spec.train_ann_file, spec.val_ann_file):
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
    return cfg


def train_and_evaluate(spec: RunSpec) -> dict:
    """Train ``spec`` and evaluate it after the last epoch; writes and
    returns ``{work_dir}/metrics.json``."""
    import torch

    from mmlongtail_bench.demo import train_keeping_final_metrics

    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    cfg = run_config(spec)
    start = time.time()
    metrics = train_keeping_final_metrics(cfg)
    record = dict(
        spec=asdict(spec),
        metrics={k: float(v) for k, v in metrics.items()},
        checkpoint=osp.join(spec.work_dir,
                            f'epoch_{cfg.train_cfg.max_epochs}.pth'),
        per_class=osp.join(spec.work_dir, 'lvis.per_class.json'),
        seconds=time.time() - start,
        device='cuda' if torch.cuda.is_available() else 'cpu',
        threads=torch.get_num_threads())
    with open(osp.join(spec.work_dir, 'metrics.json'), 'w') as f:
        json.dump(record, f, indent=1)
    return record
