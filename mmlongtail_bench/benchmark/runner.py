"""The long-tail benchmark on the synthetic dataset.

Every method of ``configs/benchmark/`` (see :mod:`.methods`) runs with every
seed, with the same schedule, on the synthetic long-tailed set, and is
evaluated on its balanced val split (LVIS AP, AP_r, AP_c, AP_f for boxes
and masks, AP^fixed and AP^pool for boxes). Stage-2 methods start from, and
post-hoc methods evaluate, the checkpoint of the same seed of the method
they name; post-hoc parameters are chosen on the held-out split.
``tools/benchmark_longtail.py`` (``make bench``) is the command line.

Each run is its own process (a fresh Runner, registry and RNG state); on a
CPU-only machine two run side by side with one thread each, which trains
about 1.4x faster in total than one run on two threads. The configs say
where the data is (``$LONGTAIL_BENCH_ROOT``, see :mod:`.run`); the runs
inherit this process's environment. A finished run is reused when its
``metrics.json`` records the identity the run would have now
(:mod:`.identity`: hashes of its settings, resolved config, dataset files,
the checkpoint it starts from and the pretrained backbone), so the
benchmark can be built up over several calls, an edited config reruns by
itself (the log says which part changed) and a moved out dir is still
reused; each finished run logs the progress and an estimate of the
time left (:mod:`.cost`). Outputs under ``out_dir``::

    <method>_seed<k>/       the run's work dir: config, log, checkpoint,
                            metrics.json, lvis.per_class.json
    results.json            every run's metrics, per-class AP and timing
    results.md              the tables (mean and spread over the seeds)
    ap_vs_frequency.png     per-class AP against training images
    rare_vs_frequent.png    AP_r against AP_f per method, seeds as error
                            bars
"""
import contextlib
import json
import os
import os.path as osp
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import (IO, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple)

from mmengine.config import Config
from mmengine.logging import MMLogger

from .cost import (estimate_seconds, format_duration, measured_rates,
                   plan_seconds, simulate)
from .methods import Method, default_methods
from .plot import plot_ap_vs_frequency, plot_rare_vs_frequent, rule_of_runs
from .results import (TABLE_KEYS, fmt_percent, paired_markdown, pick_best,
                      results_markdown, summarize)
from .identity import identity_changes
from .pretrain import PretrainSettings, pretrain_backbone
from .questions import questions_section
from .run import (INIT_CHECKPOINT_VAR, PRETRAINED_VAR, RunSpec,
                  dataset_files, heldout_file, identity_of, run_config)


def check_methods(methods: Sequence[Method], seeds: Sequence[int],
                  best_by: str) -> Dict[str, Tuple[str, ...]]:
    """Refuse a benchmark that cannot run, before anything trains.

    Returns:
        dict: Per method key, the ``(train, val)`` annotation files its
        config resolves to in this process's environment, and the held-out
        file third for a post-hoc method.

    Raises:
        ValueError: No seed, repeated seeds or keys, an unknown or unusable
            ``init_from`` (not a trained method of the same track, or after
            the method) or ``best_by``.
        FileNotFoundError: A config or a dataset file is missing (with the
            command that makes the dataset).
    """
    if not seeds:
        raise ValueError('seeds must name at least one seed')
    if len(set(seeds)) != len(seeds):
        raise ValueError(f'seeds repeat: {list(seeds)}')
    if best_by not in TABLE_KEYS:
        raise ValueError(f'best_by must be one of {TABLE_KEYS}, got '
                         f'{best_by!r}')
    keys = [m.key for m in methods]
    if len(set(keys)) != len(keys):
        raise ValueError(f'method keys repeat: {keys}')
    by_key = {m.key: m for m in methods}
    files = {}
    for m in methods:
        if not osp.isfile(m.config):
            raise FileNotFoundError(f'{m.label}: config {m.config} not found')
        if m.init_from is not None:
            base = by_key.get(m.init_from)
            if base is None:
                raise ValueError(f'{m.label} starts from {m.init_from!r}, '
                                 f'which is not among the methods {keys}')
            if base.kind == 'posthoc' or base.track != m.track:
                raise ValueError(
                    f'{m.label} starts from {base.label}, a {base.kind!r} '
                    f'method of the {base.track!r} track: it needs a trained '
                    f'checkpoint of the {m.track!r} track')
        cfg = Config.fromfile(m.config)
        files[m.key] = dataset_files(cfg)
        if m.kind == 'posthoc':
            files[m.key] += (heldout_file(cfg), )
        for ann in files[m.key]:
            if not osp.isfile(ann):
                root = osp.dirname(osp.dirname(ann))
                raise FileNotFoundError(
                    f'{ann} ({m.config}) not found; make the benchmark '
                    'dataset with: python tools/benchmark_longtail.py '
                    f'--data-root {root} --make-data-only')
    return files


#: The pretrained start of ``make bench`` (:class:`.pretrain.
#: PretrainSettings`' defaults).
DEFAULT_PRETRAIN = PretrainSettings()


def _plain(obj):
    """``obj`` as JSON reads it back (tuples as lists)."""
    return json.loads(json.dumps(obj, sort_keys=True))


def _started_backbone(config: str, checkpoint: str) -> Optional[dict]:
    """The backbone of ``config`` when it starts from the pretrained
    ``checkpoint`` (its ``init_cfg`` names it with
    ``$LONGTAIL_BENCH_PRETRAINED`` set to it), else None."""
    with _environment({PRETRAINED_VAR: checkpoint}):
        net = Config.fromfile(config).model.get('backbone')
    if net is None or (net.get('init_cfg') or {}).get(
            'checkpoint') != checkpoint:
        return None
    return net


def pretrain_source(methods: Sequence[Method]) -> str:
    """The config whose backbone the benchmark pretrains: the first of
    ``methods`` whose backbone starts from the pretrained start, else the
    default benchmark's baseline (``configs/benchmark/baseline_ce.py``).
    A part of the benchmark none of whose methods reads it (the query
    track, from scratch) thus offers its runs the full benchmark's start,
    which their identity records (:func:`.run.pretrained_start`), and they
    are reused by a later full call."""
    probe = '/pretrained-start-probe.pth'
    for m in methods:
        if _started_backbone(m.config, probe) is not None:
            return m.config
    return default_methods()[0].config


def check_pretrained_backbones(methods: Sequence[Method], checkpoint: str,
                               backbone: dict) -> None:
    """Refuse a method whose config starts from the pretrained
    ``checkpoint`` (with ``$LONGTAIL_BENCH_PRETRAINED`` set to it) but has
    another backbone than the one pretrained (``backbone``, without
    ``init_cfg``): mmengine's ``Pretrained`` init loads what matches and
    would leave the rest random without an error."""
    for m in methods:
        net = _started_backbone(m.config, checkpoint)
        if net is None:
            continue
        mine = {k: v for k, v in net.to_dict().items() if k != 'init_cfg'}
        if _plain(mine) != _plain(backbone):
            raise ValueError(
                f'{m.label} ({m.config}) starts from the pretrained '
                f'backbone {checkpoint}, but its backbone {mine} is not '
                f'the one pretrained {backbone}')


def parallelism(workers: Optional[int]) -> Tuple[int, Optional[int]]:
    """Runs at a time and threads per run: one run on a GPU, else
    ``min(2, cpus)`` runs sharing the cores (``workers`` overrides)."""
    import torch

    cpus = os.cpu_count() or 1
    cuda = torch.cuda.is_available()
    if workers is None:
        workers = 1 if cuda else max(1, min(2, cpus))
    threads = None if cuda else max(1, cpus // workers)
    return workers, threads


@dataclass
class _Job:
    method: Method
    seed: int
    spec: Optional[RunSpec] = None
    proc: Optional[subprocess.Popen] = None
    log: Optional[IO] = None
    record: Optional[dict] = None
    why: str = ''  # why it runs rather than being reused

    @property
    def name(self) -> str:
        return f'{self.method.key}_seed{self.seed}'

    def launch(self) -> None:
        """Start ``python -m mmlongtail_bench.benchmark.job`` for the spec,
        its output in ``{work_dir}/job.log``."""
        spec = self.spec
        os.makedirs(spec.work_dir, exist_ok=True)
        env = dict(os.environ)
        if spec.threads:
            for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
                env[var] = str(spec.threads)
        env.update(_run_env(spec))
        for var in (INIT_CHECKPOINT_VAR, PRETRAINED_VAR):
            if env[var] is None:
                del env[var]
        self.log = open(osp.join(spec.work_dir, 'job.log'), 'w')
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'mmlongtail_bench.benchmark.job',
             json.dumps(asdict(spec))],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


def _tail(path: str, n: int = 25) -> str:
    with open(path, errors='replace') as f:
        return ''.join(f.readlines()[-n:])


def _run_env(spec: RunSpec) -> Dict[str, Optional[str]]:
    """The variables a run's config reads that the runner sets (None:
    unset): its stage-1 checkpoint and the pretrained backbone."""
    return {INIT_CHECKPOINT_VAR: spec.init_checkpoint,
            PRETRAINED_VAR: spec.pretrained}


@contextlib.contextmanager
def _environment(values: Dict[str, Optional[str]]) -> Iterator[None]:
    """This process's environment with ``values`` (None: unset) while the
    block runs, so a config resolves here as in the run's process."""
    old = {k: os.environ.get(k) for k in values}

    def put(items):
        for k, v in items.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    put(values)
    try:
        yield
    finally:
        put(old)


def expected_identity(spec: RunSpec) -> dict:
    """The identity ``spec`` has now (:func:`.run.identity_of` of its
    config resolved as its process will resolve it)."""
    with _environment(_run_env(spec)):
        return identity_of(spec, run_config(spec))


def _rebase(obj, old: str, new: str):
    """``obj`` (a record) with every string path under ``old`` moved under
    ``new``."""
    if isinstance(obj, str):
        if obj == old or obj.startswith(old.rstrip('/') + '/'):
            return new.rstrip('/') + obj[len(old.rstrip('/')):]
        return obj
    if isinstance(obj, dict):
        return {k: _rebase(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rebase(v, old, new) for v in obj]
    return obj


def _reusable(spec: RunSpec) -> Tuple[Optional[dict], str]:
    """The finished run's record if ``metrics.json`` records the identity
    ``spec`` has now (:func:`expected_identity`), with its paths moved to
    ``spec``'s out dir when the out dir moved; else None and why it runs
    (which parts of the identity changed)."""
    path = osp.join(spec.work_dir, 'metrics.json')
    if not osp.isfile(path):
        return None, 'not run yet'
    with open(path) as f:
        rec = json.load(f)
    try:
        old = RunSpec(**rec.get('spec', {}))
    except TypeError:  # fields this version does not know: not the same
        return None, 'recorded by another version of the benchmark'
    changed = identity_changes(rec.get('identity'), expected_identity(spec))
    if changed:
        return None, 'changed: ' + ', '.join(changed)
    old_out, new_out = osp.dirname(old.work_dir), osp.dirname(spec.work_dir)
    if osp.abspath(old_out) != osp.abspath(new_out):
        rec = _rebase(rec, old_out, new_out)
    if not osp.isfile(rec['per_class']):
        return None, f'its per-class file {rec["per_class"]} is missing'
    rec['spec'] = asdict(spec)
    return rec, 'same identity'


class _Schedule:
    """Which runs go when: every method with every seed, seed by seed in
    the methods' order. A run starts when a worker is free and the run it
    starts from or evaluates (``init_from``, same seed) has finished."""

    def __init__(self, methods: Sequence[Method], seeds: Sequence[int],
                 workers: int,
                 make_spec: Callable[[Method, int, Optional[str]], RunSpec],
                 reuse: bool, epochs: Optional[int] = None,
                 poll_seconds: float = 2.0) -> None:
        self.methods, self.seeds = list(methods), list(seeds)
        self.epochs = epochs
        self.workers, self.make_spec, self.reuse = workers, make_spec, reuse
        self.poll_seconds = poll_seconds
        self.pending = [_Job(m, s) for s in seeds for m in methods]
        self.total = len(self.pending)
        self.running: List[_Job] = []
        self.started: Dict[str, float] = {}
        self.done: Dict[str, _Job] = {}
        self.reused: List[str] = []
        self.logger = MMLogger.get_current_instance()

    def run(self) -> List[dict]:
        """Run everything; return the records in the order they finished."""
        try:
            while self.pending or self.running:
                self._collect_finished()
                self._start_ready()
                if self.running:
                    time.sleep(self.poll_seconds)
                elif self.pending and not any(map(self._ready,
                                                  self.pending)):
                    raise RuntimeError(
                        'benchmark runs wait on each other: '
                        f'{[j.name for j in self.pending]}')
        finally:
            for job in self.running:
                job.stop()
        return [j.record for j in self.done.values()]

    def _ready(self, job: _Job) -> bool:
        dep = job.method.init_from
        return dep is None or f'{dep}_seed{job.seed}' in self.done

    def _collect_finished(self) -> None:
        for job in list(self.running):
            rc = job.proc.poll()
            if rc is None:
                continue
            job.log.close()
            self.running.remove(job)
            if rc != 0:
                log = osp.join(job.spec.work_dir, 'job.log')
                raise RuntimeError(
                    f'benchmark run {job.name} failed (exit {rc}); the '
                    f'end of {log}:\n{_tail(log)}')
            with open(osp.join(job.spec.work_dir, 'metrics.json')) as f:
                self._finish(job, json.load(f), reused=False)

    def _start_ready(self) -> None:
        """Settle every ready run: a reusable one finishes now (so the
        progress line's count and time left see it at once, not when a
        worker frees up); another starts when a worker is free. Each run's
        reuse is checked once."""
        for job in list(self.pending):
            if not self._ready(job):
                continue
            if job.spec is None:
                init = None
                if job.method.init_from is not None:
                    init = self.done[f'{job.method.init_from}_seed'
                                     f'{job.seed}'].record['checkpoint']
                job.spec = self.make_spec(job.method, job.seed, init)
                record, job.why = _reusable(job.spec) if self.reuse else (
                    None, 'reuse is off')
                if record is not None:
                    self.pending.remove(job)
                    self._finish(job, record, reused=True)
                    continue
            if len(self.running) >= self.workers:
                continue
            self.pending.remove(job)
            job.launch()
            self.running.append(job)
            self.started[job.name] = time.time()
            self.logger.info(f'started {job.method.label}, seed {job.seed} '
                             f'({job.why}) -> {job.spec.work_dir}/job.log')

    def time_left(self) -> Tuple[float, str]:
        """Estimated seconds until every run has finished (the schedule of
        the runs left simulated with :mod:`.cost`'s per-run estimates), and
        where those come from."""
        rates, source = measured_rates(
            [j.record for j in self.done.values()])
        now = time.time()
        running = {
            j.name: max(0.0, estimate_seconds(j.method, self.epochs, rates) -
                        (now - self.started[j.name]))
            for j in self.running
        }
        jobs = [(j.name, estimate_seconds(j.method, self.epochs, rates),
                 None if j.method.init_from is None else
                 f'{j.method.init_from}_seed{j.seed}') for j in self.pending]
        return simulate(jobs, self.workers, running), source

    def _finish(self, job: _Job, record: dict, reused: bool) -> None:
        job.record = record
        if reused:
            self.reused.append(job.name)
        self.done[job.name] = job
        m = record['metrics']
        how = 'reused' if reused else f'{record["seconds"] / 60:.1f} min'
        chosen = record.get('selection', {}).get('chosen')
        chosen = '' if chosen is None else \
            f', {record["selection"]["param"].split(".")[-1]} = {chosen:g}'
        left, source = self.time_left()
        self.logger.info(
            f'[{len(self.done)}/{self.total}] {job.method.label}, seed '
            f'{job.seed} ({how}{chosen}): bbox AP '
            f'{fmt_percent(m.get("lvis/bbox_AP"))} (r '
            f'{fmt_percent(m.get("lvis/bbox_APr"))}), segm AP '
            f'{fmt_percent(m.get("lvis/segm_AP"))} (r '
            f'{fmt_percent(m.get("lvis/segm_APr"))}); about '
            f'{format_duration(left)} left ({source})')


def write_results(out_dir: str, records: Sequence[dict],
                  methods: Sequence[Method], seeds: Sequence[int],
                  best_by: str, run_info: dict) -> dict:
    """Write ``results.json``, ``results.md``, ``ap_vs_frequency.png`` and
    ``rare_vs_frequent.png``, and, when the rows it reads ran,
    ``questions.png`` with the section of ``results.md`` that answers the
    second edition's questions (:mod:`.questions`).

    Args:
        run_info (dict): ``seconds``, ``workers``, ``threads`` and
            ``reused`` (names of the runs not run by this call).

    Returns:
        dict: ``{'summary', 'best', 'table', 'files', 'seconds'}``.
    """
    summary = summarize(records, methods)
    best = pick_best(summary, methods, best_by)
    table = results_markdown(summary)
    paired = paired_markdown(records, methods)
    if paired:
        table += ('\n\n**Each method against the row it is built on** (seed '
                  'means, that row → the method (difference in points); '
                  'final loss_bbox: the last epoch\'s mean)\n\n' + paired)
    files = dict(
        json=osp.join(out_dir, 'results.json'),
        markdown=osp.join(out_dir, 'results.md'),
        plot=osp.join(out_dir, 'ap_vs_frequency.png'),
        summary_plot=osp.join(out_dir, 'rare_vs_frequent.png'))
    answers, answers_plot = questions_section(
        records, methods, osp.join(out_dir, 'questions.png'))
    if answers:
        table += ('\n\n### The second edition\'s questions, from these '
                  'runs\n\n' + answers)
        files['questions_plot'] = answers_plot
    with open(files['json'], 'w') as f:
        json.dump(dict(summary=summary, best=best, best_by=best_by,
                       seeds=list(seeds), **run_info, runs=list(records)),
                  f, indent=1)
    reused = len(run_info['reused'])
    best_text = ', '.join(
        f'{summary[k]["label"]}' for k in best.values()) or 'none'
    with open(files['markdown'], 'w') as f:
        f.write(table + '\n\nPercent; mean ± half the range over the seeds '
                'listed; ▲ / ▼: every seed above / below every seed of the '
                "track's baseline (the first row). Post-hoc rows: the "
                'parameter chosen on the held-out split, per seed. Best by '
                f'mean {best_by} per track: {best_text}. This call: '
                f'{run_info["seconds"] / 60:.1f} min wall, '
                f'{len(records) - reused} run(s) done '
                f'({run_info["workers"]} at a time), {reused} reused.'
                f'{_pretrained_note(run_info.get("pretrained"))}\n')
    plot_ap_vs_frequency(records, methods, files['plot'],
                         rule=rule_of_runs(records), seed=seeds[0])
    plot_rare_vs_frequent(summary, files['summary_plot'])
    return dict(summary=summary, best=best, table=table, files=files,
                seconds=run_info['seconds'])


def _pretrained_note(rec: Optional[dict]) -> str:
    if not rec:
        return ' Every run from scratch (no pretrained start).'
    return (f' Pretrained start: {rec["checkpoint"]} (SHA-256 '
            f'{rec["sha256"][:12]}, accuracy {100 * rec["accuracy"]:.1f}% '
            f'on fresh balanced crops, chance {100 * rec["chance"]:.1f}%); '
            'rows whose config reads it start from it.')


def run_benchmark(out_dir: str = 'work_dirs/benchmark_longtail',
                  methods: Optional[Sequence[Method]] = None,
                  seeds: Sequence[int] = (0, 1),
                  best_by: str = 'segm_APr',
                  workers: Optional[int] = None,
                  epochs: Optional[int] = None,
                  train_images: Optional[int] = None,
                  val_images: Optional[int] = None,
                  reuse: bool = True,
                  pretrain: Optional[PretrainSettings] = DEFAULT_PRETRAIN,
                  pretrain_dir: Optional[str] = None) -> dict:
    """Run every method with every seed, then write the tables and plots.

    The dataset is the one the configs resolve to in this process's
    environment (``$LONGTAIL_BENCH_ROOT``, default
    ``data/synthetic_lvis_bench/``); the runs inherit the environment.

    Args:
        out_dir (str): Where runs and results go.
        methods (list[Method], optional): Defaults to
            :func:`default_methods`; each track's first is its baseline.
        seeds (Sequence[int]): Every method runs every seed.
        best_by (str): Which number names the best method of each track in
            ``results.md``, one of :data:`TABLE_KEYS`. Defaults to mask
            AP_r.
        workers (int, optional): Runs at a time. Defaults to 1 with CUDA,
            else ``min(2, cpus)`` (each gets ``cpus // workers`` threads).
        epochs (int, optional): Override the configs' schedule.
        train_images / val_images (int, optional): Use only the first N
            images (smoke tests).
        reuse (bool): Keep a finished run whose ``metrics.json`` records
            the identity it has now (:mod:`.identity`) instead of running
            it again; the log says why a run runs.
        pretrain (PretrainSettings, optional): The pretrained start every
            config that reads ``$LONGTAIL_BENCH_PRETRAINED`` begins from
            (:mod:`.pretrain`; made once, then found in its cache); None:
            every run from scratch, as the first two editions.
        pretrain_dir (str, optional): The pretraining cache. Defaults to
            ``{out_dir}/pretrain``.

    Returns:
        dict: ``{'summary', 'best', 'table', 'files', 'seconds'}``.
    """
    logger = MMLogger.get_current_instance()
    methods = list(methods or default_methods())
    data = check_methods(methods, seeds, best_by)
    workers, threads = parallelism(workers)
    os.makedirs(out_dir, exist_ok=True)
    pretrained = None
    if pretrain is not None:
        pretrained = pretrain_backbone(
            pretrain, pretrain_source(methods), data[methods[0].key][0],
            pretrain_dir or osp.join(out_dir, 'pretrain'), logger)
        check_pretrained_backbones(methods, pretrained['checkpoint'],
                                   pretrained['backbone'])

    def make_spec(method: Method, seed: int,
                  init_checkpoint: Optional[str]) -> RunSpec:
        files = data[method.key]
        posthoc = method.kind == 'posthoc'
        return RunSpec(
            key=method.key, seed=seed, config=method.config,
            work_dir=osp.join(out_dir, f'{method.key}_seed{seed}'),
            train_ann_file=files[0], val_ann_file=files[1],
            init_checkpoint=init_checkpoint,
            epochs=None if posthoc else epochs,
            train_images=None if posthoc else train_images,
            val_images=val_images, threads=threads, kind=method.kind,
            track=method.track,
            param=method.param,
            values=None if method.values is None else list(method.values),
            criterion=method.criterion if posthoc else None,
            heldout_ann_file=files[2] if posthoc else None,
            pretrained=None if pretrained is None else
            pretrained['checkpoint'])

    schedule = _Schedule(methods, seeds, workers, make_spec, reuse, epochs)
    left, source = schedule.time_left()
    logger.info(f'benchmark: {schedule.total} runs, {workers} at a time'
                f'{"" if threads is None else f", {threads} thread(s) each"}'
                f'; out_dir={out_dir}; about {format_duration(left)} if none '
                f'is reused ({source})')
    start = time.time()
    records = schedule.run()
    out = write_results(
        out_dir, records, methods, seeds, best_by,
        dict(seconds=time.time() - start, workers=workers, threads=threads,
             reused=schedule.reused,
             pretrained=None if pretrained is None else {
                 k: pretrained[k] for k in (
                     'checkpoint', 'sha256', 'identity', 'settings',
                     'accuracy', 'chance', 'seconds', 'cpu_seconds')}))
    logger.info(f'benchmark done in {out["seconds"] / 60:.1f} min\n'
                f'{out["table"]}')
    return out


def measure_cost(out_dir: str, config_dir: str = 'configs/benchmark',
                 seeds: Sequence[int] = (0, 1),
                 workers: Optional[int] = None) -> dict:
    """Measure one run of each kind and extrapolate the whole benchmark.

    Runs, for one epoch on the full benchmark dataset with the benchmark's
    parallelism: the CE baseline (trained, two-stage), BAGS from it
    (stage 2), the RetinaNet focal baseline (trained, one-stage), the DINO
    focal baseline (trained, query), and
    NorCal (a scorer) and τ-norm (a hook) on the baseline (post-hoc: their
    held-out evaluations and one val evaluation each); then
    :func:`plan_seconds` of :func:`.methods.default_methods` with ``seeds``
    at the configs' schedule.

    Returns:
        dict: ``rates_wall`` / ``rates_cpu`` (per kind, as
        :data:`RECORDED_RATES`, from wall or CPU time, see
        :func:`measured_rates`), ``plan_seconds_wall`` /
        ``plan_seconds_cpu``, ``runs`` (name -> seconds, phases),
        ``plan_runs``, ``workers``, ``results`` (the measuring call's output
        files).
    """
    os.makedirs(out_dir, exist_ok=True)
    all_methods = default_methods(config_dir)
    by_key = {m.key: m for m in all_methods}
    ms = [by_key[k] for k in ('baseline_ce', 'retinanet_focal',
                              'dino_focal', 'bags_decoupled', 'norcal',
                              'tau_norm')]
    out = run_benchmark(out_dir=out_dir, methods=ms, seeds=(0, ), epochs=1,
                        workers=workers)
    with open(out['files']['json']) as f:
        records = json.load(f)['runs']
    workers, _ = parallelism(workers)
    keys = ('seconds', 'train_seconds', 'train_cpu_seconds', 'eval_seconds',
            'eval_cpu_seconds', 'heldout_eval_seconds',
            'heldout_eval_cpu_seconds', 'train_iters')
    out = dict(runs={r['spec']['key']: {k: r[k] for k in keys if k in r}
                     for r in records},
               workers=workers, plan_runs=len(all_methods) * len(seeds),
               results=out['files'])
    for clock in ('wall', 'cpu'):
        rates, _ = measured_rates(records, clock)
        out[f'rates_{clock}'] = {f'{k}/{t}': v for (k, t), v in rates.items()}
        out[f'plan_seconds_{clock}'] = plan_seconds(all_methods, seeds,
                                                    workers, rates)
    return out
