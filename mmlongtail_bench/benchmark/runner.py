"""The long-tail benchmark on the synthetic dataset.

Every method of ``configs/benchmark/`` is trained with the same schedule and
seed on the synthetic long-tailed set and evaluated on its balanced val split
(LVIS AP, AP_r, AP_c, AP_f for boxes and masks). The CE baseline and the best
method get a second seed, so the spread between seeds can be set against the
differences between methods. ``tools/benchmark_longtail.py`` (``make bench``)
is the command line.

Each run is its own process (a fresh Runner, registry and RNG state); on a
CPU-only machine two run side by side with one thread each, which trains
about 1.4x faster in total than one run on two threads. Outputs under
``out_dir``::

    <method>_seed<k>/       the run's work dir: config, log, checkpoint,
                            metrics.json, lvis.per_class.json
    results.json            every run's metrics, per-class AP and timing
    results.md              the table (mean and spread where two seeds ran)
    ap_vs_frequency.png     per-class AP against training images, all methods
"""
import json
import os
import os.path as osp
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.logging import MMLogger

#: The eight numbers of the table, in order (keys of LVISMetric's results).
TABLE_KEYS = tuple(f'{task}_{k}' for task in ('bbox', 'segm')
                   for k in ('AP', 'APr', 'APc', 'APf'))


@dataclass(frozen=True)
class Method:
    """One row of the benchmark.

    Attributes:
        key (str): Short name, also the work-dir prefix.
        label (str): Name in the table and the plot.
        config (str): Config file.
        init_from (str, optional): Key of the method whose trained checkpoint
            (same seed) this one starts from (decoupled retraining).
    """
    key: str
    label: str
    config: str
    init_from: Optional[str] = None


def default_methods(config_dir: str = 'configs/benchmark') -> List[Method]:
    """The seven methods of the benchmark, the baseline first."""
    rows = [
        ('baseline_ce', 'CE baseline', None),
        ('rfs', 'RFS', None),
        ('seesaw_normed_mask', 'Seesaw + Norm Mask', None),
        ('eql', 'EQL', None),
        ('eqlv2', 'EQLv2', None),
        ('focal', 'Focal', None),
        ('bags_decoupled', 'BAGS (decoupled)', 'baseline_ce'),
    ]
    return [
        Method(k, label, osp.join(config_dir, f'{k}.py'), init)
        for k, label, init in rows
    ]


@dataclass
class RunSpec:
    """What one benchmark process trains and evaluates."""
    key: str
    seed: int
    config: str
    work_dir: str
    data_root: str
    init_checkpoint: Optional[str] = None
    epochs: Optional[int] = None
    train_images: Optional[int] = None
    val_images: Optional[int] = None
    threads: Optional[int] = None


# --------------------------------------------------------------------------
# One run (in its own process: python -m mmlongtail_bench.benchmark.job)
# --------------------------------------------------------------------------


def set_epochs(cfg, epochs: int) -> None:
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


def run_config(spec: RunSpec):
    """The Runner config of ``spec``: data root, seed, statistics file,
    retraining checkpoint and schedule applied to the method's config."""
    from mmlongtail_bench.demo import demo_config

    cfg = demo_config(spec.config, spec.work_dir, spec.data_root)
    root = spec.data_root.rstrip('/') + '/'
    cfg.randomness = dict(seed=int(spec.seed))
    loss = cfg.model.roi_head.bbox_head.get('loss_cls', {})
    if 'category_stats' in loss:
        loss.category_stats = root + 'annotations/lvis_v1_train.json'
    retrain = [
        h for h in cfg.get('custom_hooks', [])
        if h.get('type') == 'mmlongtail.ClassifierRetrainingHook'
    ]
    if spec.init_checkpoint is not None:
        if not retrain:
            raise ValueError(
                f'{spec.config} has no mmlongtail.ClassifierRetrainingHook '
                'to load the checkpoint it should start from')
        for h in retrain:
            h.checkpoint = spec.init_checkpoint
    elif retrain:
        raise ValueError(f'{spec.config} retrains a classifier: name the '
                         'checkpoint it starts from (init_checkpoint)')
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


# --------------------------------------------------------------------------
# The whole benchmark
# --------------------------------------------------------------------------


@dataclass
class _Job:
    method: Method
    seed: int
    spec: Optional[RunSpec] = None
    proc: Optional[subprocess.Popen] = None
    log: Optional[object] = None
    record: Optional[dict] = None

    @property
    def name(self) -> str:
        return f'{self.method.key}_seed{self.seed}'


def _fmt(v: Optional[float]) -> str:
    return '-' if v is None else f'{100 * v:.1f}'


def summarize(records: Sequence[dict], methods: Sequence[Method]) -> dict:
    """Per method: the runs' seeds, per-seed values, mean and spread (half
    the range: with two seeds, mean +- spread gives both values)."""
    out = {}
    for m in methods:
        runs = sorted((r for r in records if r['spec']['key'] == m.key),
                      key=lambda r: r['spec']['seed'])
        if not runs:
            continue
        row = dict(label=m.label, seeds=[r['spec']['seed'] for r in runs],
                   values={}, mean={}, spread={})
        for k in TABLE_KEYS:
            vals = [r['metrics'].get(f'lvis/{k}') for r in runs]
            vals = [float(v) for v in vals if v is not None]
            row['values'][k] = vals
            row['mean'][k] = float(np.mean(vals)) if vals else None
            row['spread'][k] = (float((max(vals) - min(vals)) / 2)
                                if len(vals) > 1 else None)
        out[m.key] = row
    return out


def results_markdown(summary: dict) -> str:
    """The table: bbox and segm AP / AP_r / AP_c / AP_f in percent, mean
    +- spread (half the range) over the seeds a method ran."""
    head = ('| method | seeds | ' + ' | '.join(
        f'{k.split("_")[0]} {k.split("_")[1]}' for k in TABLE_KEYS) + ' |')
    lines = [head, '|---|---|' + '---:|' * len(TABLE_KEYS)]
    for row in summary.values():
        cells = []
        for k in TABLE_KEYS:
            mean, spread = row['mean'][k], row['spread'][k]
            cell = _fmt(mean)
            if spread is not None:
                cell += f' ± {100 * spread:.1f}'
            cells.append(cell)
        seeds = ','.join(str(s) for s in row['seeds'])
        lines.append(f'| {row["label"]} | {seeds} | ' + ' | '.join(cells) +
                     ' |')
    return '\n'.join(lines)


def pick_best(summary: dict, baseline: str, by: str) -> str:
    """The non-baseline method with the highest ``by`` (e.g. 'segm_APr') on
    its first seed; ties go to the higher mask AP."""
    if by not in TABLE_KEYS:
        raise ValueError(f'best_by must be one of {TABLE_KEYS}, got {by!r}')
    cands = [(row['values'][by][0], row['values']['segm_AP'][0], key)
             for key, row in summary.items()
             if key != baseline and row['values'][by]]
    if not cands:
        raise ValueError('no method besides the baseline has results')
    return max(cands)[2]


def plot_ap_vs_frequency(records: Sequence[dict], methods: Sequence[Method],
                         path: str, seed: int = 0) -> str:
    """Per-class AP (boxes and masks) against training images for every
    method's ``seed`` run: points per class and a line through the mean AP
    of each frequency band."""
    from mmlongtail.analysis.per_class import load_per_class
    from mmlongtail.analysis.report import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    cmap = plt.get_cmap('tab10')
    # bands: 1-2, 3-5, 6-10 (rare), 11-20, 21-30 (common), 31-60, 61-120,
    # >120 (frequent) training images
    edges = np.array([0, 2.5, 5.5, 10.5, 20.5, 30.5, 60.5, 120.5, np.inf])
    try:
        top = 0.0
        for i, m in enumerate(methods):
            rec = next((r for r in records if r['spec']['key'] == m.key
                        and r['spec']['seed'] == seed), None)
            if rec is None:
                continue
            res = load_per_class(rec['per_class'])
            counts = np.maximum(res.image_count.astype(np.float64), 0.8)
            band = np.digitize(counts, edges) - 1
            for ax, task in zip(axes, ('bbox', 'segm')):
                ap = res.per_class(task)
                ok = np.isfinite(ap)
                jitter = 1 + 0.06 * (i - len(methods) / 2) / len(methods)
                ax.scatter(counts[ok] * jitter, ap[ok], s=9, alpha=0.35,
                           color=cmap(i))
                top = max(top, float(ap[ok].max(initial=0.0)))
                xs, ys = [], []
                for b in range(len(edges) - 1):
                    sel = ok & (band == b)
                    if sel.any():
                        xs.append(np.exp(np.log(counts[sel]).mean()))
                        ys.append(ap[sel].mean())
                ax.plot(xs, ys, '-o', ms=3.5, lw=1.6, color=cmap(i),
                        label=m.label)
        for ax, task in zip(axes, ('bbox', 'segm')):
            ax.set_xscale('log')
            ax.axvspan(0.7, 10.5, color='#d62728', alpha=0.06)
            ax.axvspan(10.5, 30.5, color='#ff7f0e', alpha=0.06)
            ax.set_xlabel('training images containing the class '
                          '(shaded: rare, common)')
            ax.set_title(f'{task} AP per class (lines: band means), '
                         f'seed {seed}')
            ax.grid(True, which='both', alpha=0.3)
        axes[0].set_ylabel('AP')
        axes[0].set_ylim(-0.02, min(1.02, top + 0.08))
        axes[0].legend(loc='upper left', fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def _launch(job: _Job) -> None:
    os.makedirs(job.spec.work_dir, exist_ok=True)
    env = dict(os.environ)
    if job.spec.threads:
        for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
            env[var] = str(job.spec.threads)
    job.log = open(osp.join(job.spec.work_dir, 'job.log'), 'w')
    job.proc = subprocess.Popen(
        [sys.executable, '-m', 'mmlongtail_bench.benchmark.job',
         json.dumps(asdict(job.spec))],
        stdout=job.log, stderr=subprocess.STDOUT, env=env)


def _tail(path: str, n: int = 25) -> str:
    with open(path, errors='replace') as f:
        return ''.join(f.readlines()[-n:])


def _reusable(spec: RunSpec) -> Optional[dict]:
    path = osp.join(spec.work_dir, 'metrics.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        rec = json.load(f)
    if rec.get('spec') != asdict(spec) or not osp.isfile(rec['per_class']):
        return None
    return rec


def run_benchmark(out_dir: str = 'work_dirs/benchmark_longtail',
                  data_root: str = 'data/synthetic_lvis_bench',
                  methods: Optional[Sequence[Method]] = None,
                  seeds: Sequence[int] = (0, 1),
                  best_by: str = 'segm_APr',
                  workers: Optional[int] = None,
                  epochs: Optional[int] = None,
                  train_images: Optional[int] = None,
                  val_images: Optional[int] = None,
                  reuse: bool = True) -> dict:
    """Train and evaluate every method, then write the table and the plot.

    Args:
        out_dir (str): Where runs and results go.
        data_root (str): The synthetic dataset (LVIS v1 layout).
        methods (list[Method], optional): Defaults to
            :func:`default_methods`; the first is the baseline.
        seeds (Sequence[int]): The first seed runs every method; the second
            (if given) runs the baseline and the best method.
        best_by (str): Which number picks the best method, one of
            :data:`TABLE_KEYS`. Defaults to mask AP_r.
        workers (int, optional): Runs at a time. Defaults to 1 with CUDA,
            else ``min(2, cpus)`` (each gets ``cpus // workers`` threads).
        epochs (int, optional): Override the configs' schedule.
        train_images / val_images (int, optional): Use only the first N
            images (smoke tests).
        reuse (bool): Keep a finished run whose ``metrics.json`` has the same
            spec instead of training it again.

    Returns:
        dict: ``{'summary', 'best', 'table', 'files', 'seconds'}``.
    """
    import torch

    logger = MMLogger.get_current_instance()
    methods = list(methods or default_methods())
    if not seeds:
        raise ValueError('seeds must name at least one seed')
    keys = [m.key for m in methods]
    if len(set(keys)) != len(keys):
        raise ValueError(f'method keys repeat: {keys}')
    for m in methods:
        if not osp.isfile(m.config):
            raise FileNotFoundError(f'{m.label}: config {m.config} not found')
        if m.init_from is not None and m.init_from not in keys:
            raise ValueError(f'{m.label} starts from {m.init_from!r}, which '
                             f'is not among the methods {keys}')
    for split in ('train', 'val'):
        ann = osp.join(data_root, 'annotations', f'lvis_v1_{split}.json')
        if not osp.isfile(ann):
            raise FileNotFoundError(
                f'{ann} not found; make the benchmark dataset with: python '
                f'tools/make_synthetic_lvis.py {data_root} '
                '--val-images-per-class 20')
    cpus = os.cpu_count() or 1
    cuda = torch.cuda.is_available()
    if workers is None:
        workers = 1 if cuda else max(1, min(2, cpus))
    threads = None if cuda else max(1, cpus // workers)
    os.makedirs(out_dir, exist_ok=True)
    baseline = methods[0].key

    pending: List[_Job] = [_Job(m, seeds[0]) for m in methods]
    for s in seeds[1:2]:
        pending.insert(1, _Job(methods[0], s))
    best_job_added = len(seeds) < 2
    running: List[_Job] = []
    done: Dict[str, _Job] = {}
    start = time.time()
    total = len(pending) + (0 if best_job_added else 1)
    logger.info(f'benchmark: {total} runs, {workers} at a time'
                f'{"" if threads is None else f", {threads} thread(s) each"}'
                f', device {"cuda" if cuda else "cpu"}; out_dir={out_dir}')

    def ready(job: _Job) -> bool:
        dep = job.method.init_from
        return dep is None or f'{dep}_seed{job.seed}' in done

    def make_spec(job: _Job) -> RunSpec:
        init = None
        if job.method.init_from is not None:
            init = done[f'{job.method.init_from}_seed{job.seed}'].record[
                'checkpoint']
        return RunSpec(
            key=job.method.key, seed=job.seed, config=job.method.config,
            work_dir=osp.join(out_dir, job.name), data_root=data_root,
            init_checkpoint=init, epochs=epochs, train_images=train_images,
            val_images=val_images, threads=threads)

    reused_runs: List[str] = []

    def add_best_when_known() -> None:
        # once every method has its first seed, the best one gets the second
        nonlocal best_job_added
        if best_job_added or not all(f'{m.key}_seed{seeds[0]}' in done
                                     for m in methods):
            return
        summary = summarize([j.record for j in done.values()], methods)
        best_m = next(m for m in methods
                      if m.key == pick_best(summary, baseline, best_by))
        logger.info(f'best method by {best_by} on seed {seeds[0]}: '
                    f'{best_m.label}; adding seed {seeds[1]}')
        pending.append(_Job(best_m, seeds[1]))
        best_job_added = True

    def finish(job: _Job, record: dict, reused: bool) -> None:
        job.record = record
        if reused:
            reused_runs.append(job.name)
        done[job.name] = job
        m = record['metrics']
        how = 'reused' if reused else f'{record["seconds"] / 60:.1f} min'
        logger.info(
            f'[{len(done)}/{total}] {job.method.label}, seed {job.seed} '
            f'({how}): bbox AP {_fmt(m.get("lvis/bbox_AP"))} '
            f'(r {_fmt(m.get("lvis/bbox_APr"))}), segm AP '
            f'{_fmt(m.get("lvis/segm_AP"))} '
            f'(r {_fmt(m.get("lvis/segm_APr"))})')
        add_best_when_known()

    try:
        while pending or running:
            for job in list(running):
                rc = job.proc.poll()
                if rc is None:
                    continue
                job.log.close()
                running.remove(job)
                log = osp.join(job.spec.work_dir, 'job.log')
                if rc != 0:
                    raise RuntimeError(
                        f'benchmark run {job.name} failed (exit {rc}); the '
                        f'end of {log}:\n{_tail(log)}')
                with open(osp.join(job.spec.work_dir, 'metrics.json')) as f:
                    finish(job, json.load(f), reused=False)
            for job in list(pending):
                if len(running) >= workers:
                    break
                if not ready(job):
                    continue
                pending.remove(job)
                job.spec = make_spec(job)
                record = _reusable(job.spec) if reuse else None
                if record is not None:
                    finish(job, record, reused=True)
                    continue
                _launch(job)
                running.append(job)
                logger.info(f'started {job.method.label}, seed {job.seed} '
                            f'-> {job.spec.work_dir}/job.log')
            if running:
                time.sleep(2.0)
            elif pending and not any(ready(j) for j in pending):
                raise RuntimeError('benchmark runs wait on each other: '
                                   f'{[j.name for j in pending]}')
    finally:
        for job in running:
            job.proc.terminate()
            job.proc.wait()
            job.log.close()

    seconds = time.time() - start
    records = [j.record for j in done.values()]
    summary = summarize(records, methods)
    best = None if len(seeds) < 2 else pick_best(summary, baseline, best_by)
    table = results_markdown(summary)
    files = dict(
        json=osp.join(out_dir, 'results.json'),
        markdown=osp.join(out_dir, 'results.md'),
        plot=osp.join(out_dir, 'ap_vs_frequency.png'))
    with open(files['json'], 'w') as f:
        json.dump(
            dict(summary=summary, best=best, best_by=best_by,
                 seconds=seconds, workers=workers, threads=threads,
                 reused=reused_runs, runs=records), f, indent=1)
    trained = len(records) - len(reused_runs)
    with open(files['markdown'], 'w') as f:
        f.write(table + '\n\nPercent; mean ± half the range over the seeds '
                f'listed. Best method by {best_by}: {best}. This call: '
                f'{seconds / 60:.1f} min wall, {trained} run(s) trained '
                f'({workers} at a time), {len(reused_runs)} reused.\n')
    plot_ap_vs_frequency(records, methods, files['plot'], seed=seeds[0])
    logger.info(f'benchmark done in {seconds / 60:.1f} min\n{table}')
    return dict(summary=summary, best=best, table=table, files=files,
                seconds=seconds)
