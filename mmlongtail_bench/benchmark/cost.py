"""What the benchmark costs: per kind of run, seconds of a training epoch,
of an evaluation and of a run's fixed overhead, measured by finished runs
or, before any has finished, the figures recorded here; the time left and
the whole benchmark's expected time follow by simulating the schedule.

The recorded figures (:data:`RECORDED_RATES`) are the means of the full
run (``python tools/benchmark_longtail.py --measure-cost`` measures them
again from one epoch of each kind of run, through
:func:`.runner.measure_cost`): a run of the full schedule is
extrapolated as ``epochs x
epoch + eval + overhead`` (post-hoc: ``values x heldout_eval + eval +
overhead``, ``heldout_eval`` being the held-out sweep's time over its
values).
"""
import os
import os.path as osp
from functools import lru_cache
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from mmengine.config import Config

from .methods import Method
from .run import DATA_ROOT_VAR

#: ``(kind, track) -> {'epoch', 'eval', 'heldout_eval', 'overhead'}``
#: seconds (``epoch``: one pass over the dataset's images), the means of the
#: third edition's full run (``make bench``, 96 runs, on the 2-core CPU
#: machine, two runs at a time with one thread each; docs/benchmark.md,
#: "Budget"): CPU time, which is what a run takes on an otherwise idle
#: machine (the overhead, start-up and file writing, is wall time). A
#: two-stage ``eval`` is both val passes (boxes and masks at 100 per image,
#: then boxes only in the Fixed-AP mode); ``heldout_eval`` one held-out
#: value (boxes only). Used for a kind of run until one of it has finished.
RECORDED_RATES: Dict[Tuple[str, str], Dict[str, float]] = {
    ('train', 'two_stage'): dict(epoch=48.8, eval=32.8, overhead=2.2),
    ('stage2', 'two_stage'): dict(epoch=19.6, eval=30.8, overhead=2.1),
    ('posthoc', 'two_stage'): dict(heldout_eval=1.4, eval=37.4, overhead=1.0),
    ('train', 'one_stage'): dict(epoch=46.0, eval=15.1, overhead=1.2),
    ('train', 'query'): dict(epoch=123.2, eval=32.5, overhead=2.7),
}


def cost_class(method: Method) -> Tuple[str, str]:
    """The kind of run whose rates apply to ``method``: ``(kind, track)``
    (a one-stage or query stage-2 or post-hoc method, none today, costs
    as its two-stage kind)."""
    if method.kind != 'train':
        return method.kind, 'two_stage'
    return method.kind, method.track


def _cls_of_record(rec: dict) -> Tuple[str, str]:
    spec = rec['spec']
    kind = spec.get('kind', 'train')
    track = spec.get('track', 'two_stage')
    return (kind, 'two_stage') if kind != 'train' else (kind, track)


def measured_rates(records: Sequence[dict],
                   clock: str = 'wall') -> Tuple[dict, str]:
    """Rates per kind of run: the mean over ``records`` (finished runs,
    reused ones included) that carry their phase times, else
    :data:`RECORDED_RATES`.

    Args:
        records (Sequence[dict]): Finished runs' ``metrics.json``.
        clock (str): ``'wall'`` (what the runs took) or ``'cpu'`` (their
            process CPU time for training and evaluation: with one thread
            per run and a run per core, what they take on an otherwise idle
            machine; the overhead stays wall time).

    Returns:
        tuple: ``(rates, source)``, ``source`` saying how many runs were
        measured.
    """
    if clock not in ('wall', 'cpu'):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    tag = '_cpu' if clock == 'cpu' else ''
    sums: Dict[Tuple[str, str], Dict[str, List[float]]] = {}
    n = 0
    for rec in records:
        if 'eval_seconds' not in rec:
            continue  # written before runs timed their phases
        n += 1
        acc = sums.setdefault(_cls_of_record(rec), {})
        evals = rec[f'eval{tag}_seconds']
        if rec['spec'].get('kind') == 'posthoc':
            k = len(rec['spec']['values'])
            held = rec[f'heldout_eval{tag}_seconds']
            acc.setdefault('heldout_eval', []).append(held)
            spent = k * rec['heldout_eval_seconds'] + rec['eval_seconds']
        else:
            scale = epoch_scale(rec['spec']['config']) \
                if rec['spec'].get('train_images') is None else 1.0
            acc.setdefault('epoch', []).append(
                rec[f'train{tag}_seconds'] / max(1, rec['epochs']) / scale)
            spent = rec['train_seconds'] + rec['eval_seconds']
        acc.setdefault('eval', []).append(evals)
        acc.setdefault('overhead', []).append(
            max(0.0, rec['seconds'] - spent))
    rates = {c: dict(r) for c, r in RECORDED_RATES.items()}
    for c, acc in sums.items():
        rates.setdefault(c, {}).update(
            {k: sum(v) / len(v) for k, v in acc.items()})
    source = (f'from {n} measured run(s)' if n else
              'recorded estimate, no run measured yet')
    return rates, source


@lru_cache(maxsize=None)
def _config_epochs(config: str) -> int:
    return int(Config.fromfile(config).train_cfg.max_epochs)


def epoch_scale(config: str) -> float:
    """Images per training epoch of ``config``'s sampler over the dataset's
    images: 1 for the default sampler; for repeat-factor sampling its
    epoch's length (about 1.23 on the benchmark set), from the sampler
    built on the dataset the config resolves to (in this environment)."""
    return _epoch_scale(osp.abspath(config), os.environ.get(DATA_ROOT_VAR))


@lru_cache(maxsize=None)
def _epoch_scale(config: str, data_root: Optional[str]) -> float:
    cfg = Config.fromfile(config)
    sampler = cfg.train_dataloader.get('sampler') or {}
    if sampler.get('type', 'DefaultSampler') in ('DefaultSampler',
                                                 'InfiniteSampler'):
        return 1.0
    from mmengine.registry import DATA_SAMPLERS, DefaultScope

    import mmlongtail  # noqa: F401  (registers the samplers and datasets)
    from mmlongtail.registry import DATASETS

    with DefaultScope.overwrite_default_scope('mmdet'):
        from mmdet.utils import register_all_modules
        register_all_modules(init_default_scope=False)
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
        built = DATA_SAMPLERS.build(
            sampler, default_args=dict(dataset=dataset, seed=0))
    # images per epoch over the training set's images (a wrapper that
    # serves each image twice, BBN's two streams, costs two passes)
    images = getattr(dataset, 'dataset', dataset)
    return len(built) / max(1, len(images))


def estimate_seconds(method: Method, epochs: Optional[int],
                     rates: dict) -> float:
    """Expected seconds of one run of ``method`` (``epochs`` overrides the
    config's schedule); an epoch costs the rate's uniform epoch times
    :func:`epoch_scale`."""
    r = rates[cost_class(method)]
    if method.kind == 'posthoc':
        return len(method.values) * r['heldout_eval'] + r['eval'] + \
            r['overhead']
    if epochs is None:
        epochs = _config_epochs(osp.abspath(method.config))
    return epochs * r['epoch'] * epoch_scale(method.config) + r['eval'] + \
        r['overhead']


def simulate(jobs: Sequence[Tuple[str, float, Optional[str]]], workers: int,
             running: Optional[Mapping[str, float]] = None) -> float:
    """Seconds until ``jobs`` have all run on ``workers`` workers, each job
    starting, in list order, on the first free worker once the job it
    depends on has finished (the benchmark's schedule).

    Args:
        jobs: ``(name, seconds, name of the job it waits for or None)``; a
            dependency that is neither a job nor running counts as done.
        workers (int): Runs at a time.
        running (Mapping[str, float], optional): Runs already going: name
            -> seconds left (they hold workers).
    """
    running = dict(running or {})
    if workers < 1 or len(running) > workers:
        raise ValueError(f'{len(running)} runs going on {workers} workers')
    free = sorted(list(running.values()) + [0.0] * (workers - len(running)))
    finish = dict(running)
    names = {name for name, _, _ in jobs}
    pending = list(jobs)
    end = max(running.values(), default=0.0)
    while pending:
        t = free[0]
        ready = [j for j in pending if j[2] is None or (
            j[2] not in names and j[2] not in finish) or (
                j[2] in finish and finish[j[2]] <= t)]
        if not ready:
            later = [finish[j[2]] for j in pending
                     if finish.get(j[2], t) > t]
            if not later:
                raise ValueError('jobs wait on each other: '
                                 f'{[j[0] for j in pending]}')
            free[0] = min(later)
            free.sort()
            continue
        name, secs, _ = ready[0]
        pending.remove(ready[0])
        finish[name] = t + secs
        end = max(end, finish[name])
        free[0] = finish[name]
        free.sort()
    return end


def plan_seconds(methods: Sequence[Method], seeds: Sequence[int],
                 workers: int, rates: dict,
                 epochs: Optional[int] = None) -> float:
    """Expected wall seconds of the benchmark ``methods x seeds`` from
    scratch on ``workers`` workers (:func:`simulate` of the schedule)."""
    jobs = [(f'{m.key}_seed{s}', estimate_seconds(m, epochs, rates),
             None if m.init_from is None else f'{m.init_from}_seed{s}')
            for s in seeds for m in methods]
    return simulate(jobs, workers)


def format_duration(seconds: float) -> str:
    """``3725`` -> ``'1 h 02 min'``; ``95`` -> ``'2 min'``."""
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f'{minutes} min'
    return f'{minutes // 60} h {minutes % 60:02d} min'
