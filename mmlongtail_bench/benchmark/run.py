"""One benchmark run in its own process
(:mod:`mmlongtail_bench.benchmark.job`), by kind of method:

* ``'train'`` / ``'stage2'``: train the method's config with a seed,
  evaluate it after the last epoch and write ``metrics.json``;
* ``'posthoc'``: no training: another run's checkpoint with the method's
  test-time config; :func:`mmlongtail.apis.calibrate.sweep` (the library's
  one way of choosing a post-hoc parameter) evaluates every candidate value
  on the held-out split (:func:`heldout_file`, images no run trains on) and
  picks the best, then val is evaluated once with it; ``metrics.json``
  records every candidate's held-out numbers and the choice.

The config owns every path: the dataset's location comes from
``$LONGTAIL_BENCH_ROOT`` (the held-out split's file from the config's
``heldout_ann_file``) and a decoupled method's stage-1 checkpoint from
``$LONGTAIL_BENCH_INIT_CHECKPOINT`` and the pretrained backbone every
track starts from (:mod:`.pretrain`) from ``$LONGTAIL_BENCH_PRETRAINED``,
environment variables the configs of ``configs/benchmark/`` read with
mmengine's ``{{$NAME:default}}`` substitution. Nothing here rewrites a
path; the run's own settings (seed,
schedule, image subsets for smoke tests, the checkpoint a post-hoc method
loads, its parameter) are applied as config options.
"""
import copy
import json
import os.path as osp
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MMLogger

#: Where configs/benchmark/* find the benchmark dataset (ends with '/').
DATA_ROOT_VAR = 'LONGTAIL_BENCH_ROOT'
#: Where a decoupled method's config finds its stage-1 checkpoint.
INIT_CHECKPOINT_VAR = 'LONGTAIL_BENCH_INIT_CHECKPOINT'
#: Where the configs find the pretrained backbone (:mod:`.pretrain`); unset
#: or empty: from scratch.
PRETRAINED_VAR = 'LONGTAIL_BENCH_PRETRAINED'


@dataclass
class RunSpec:
    """What one benchmark process does.

    ``train_ann_file`` and ``val_ann_file`` (and, for a post-hoc run,
    ``heldout_ann_file``) are the dataset files the config resolves to (see
    :func:`dataset_files`); they are recorded so that a finished run is
    reused only for the same data. ``kind`` is the method's (see
    :mod:`.methods`); ``init_checkpoint`` is the stage-1 checkpoint of a
    ``'stage2'`` run or the checkpoint a ``'posthoc'`` run evaluates, and
    ``param`` / ``values`` / ``criterion`` the post-hoc choice (see
    :class:`.methods.Method`). ``pretrained`` is the pretrained backbone the
    runner offers (``$LONGTAIL_BENCH_PRETRAINED``); a config that reads it
    starts from it, and the run's identity (:func:`identity_of`) then holds
    its hash.
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
    criterion: Optional[str] = None
    heldout_ann_file: Optional[str] = None
    pretrained: Optional[str] = None


def base_dataset(dataset_cfg):
    """The dataset config that names the annotation file: ``dataset_cfg``
    itself, or the one a wrapper holds (``dataset=``, e.g. BBN's
    two-stream ``BBNStreamDataset``)."""
    while 'ann_file' not in dataset_cfg and 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def dataset_files(cfg: Config) -> Tuple[str, str]:
    """The training and validation annotation files ``cfg`` uses."""
    train = base_dataset(cfg.train_dataloader.dataset)
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


def run_config(spec: RunSpec) -> Config:
    """The Runner config of ``spec``: the method's config as it resolves in
    this process's environment, with the run's seed, schedule and image
    subsets (and, post-hoc, the checkpoint it loads).

    Raises:
        ValueError: If ``spec`` names a stage-1 checkpoint that the config
            does not read (from ``$LONGTAIL_BENCH_INIT_CHECKPOINT``), or the
            config resolves to other dataset files than ``spec`` records.
            A post-hoc ``param`` that names no component of the config (or
            several; :func:`mmlongtail.apis.calibration.resolve_param`).
    """
    from mmlongtail.apis.calibration import resolve_param
    from mmlongtail_bench.demo import demo_config

    cfg = demo_config(spec.config, spec.work_dir)
    cfg.randomness = dict(seed=int(spec.seed))
    posthoc = spec.kind == 'posthoc'
    if posthoc:
        if spec.init_checkpoint is None:
            raise ValueError(f'post-hoc run {spec.key} names no checkpoint')
        cfg.load_from = spec.init_checkpoint
        resolve_param(cfg, spec.param)  # the config uses the component
    elif spec.init_checkpoint is not None and cfg.env_variables.get(
            INIT_CHECKPOINT_VAR) != spec.init_checkpoint:
        raise ValueError(
            f'{spec.config} should start from {spec.init_checkpoint}, but '
            f'does not read ${INIT_CHECKPOINT_VAR} (or it is not set to '
            'that path)')
    read = cfg.env_variables.get(PRETRAINED_VAR)
    if read and read != (spec.pretrained or ''):
        raise ValueError(
            f'{spec.config} starts from the pretrained backbone {read} '
            f'(${PRETRAINED_VAR}), but the run offers '
            f'{spec.pretrained or "none"}')
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
        base_dataset(cfg.train_dataloader.dataset).indices = int(
            spec.train_images)
    if spec.val_images is not None:
        cfg.val_dataloader.dataset.indices = int(spec.val_images)
    # the test loop evaluates val (post-hoc runs) with the per-class file
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    cfg.test_evaluator = copy.deepcopy(cfg.val_evaluator)
    return cfg


def pretrained_start(spec: RunSpec, cfg: Config) -> Optional[str]:
    """The pretrained backbone ``cfg`` (``spec``'s resolved config) starts
    from: ``spec.pretrained`` when its model names it (it reads
    ``$LONGTAIL_BENCH_PRETRAINED`` into an ``init_cfg``), None for a run
    from scratch. Only the model is read: a from-scratch config that
    inherits the helper keys of ``baseline_ce.py`` resets them, so the start
    offered is nowhere in its resolved config (tests check both)."""
    if not spec.pretrained:
        return None
    text = json.dumps(cfg.model.to_dict(), default=repr)
    return spec.pretrained if spec.pretrained in text else None


def identity_of(spec: RunSpec, cfg: Config) -> dict:
    """The identity of ``spec`` run with its resolved config ``cfg``
    (:func:`run_config`), as :func:`.identity.run_identity` defines it: the
    run's settings, the config, the dataset (training, val and, where the
    config names one that exists, held-out annotation files and the images
    they name), the checkpoint it starts from and the pretrained backbone.
    The runner computes it before a run to decide on reuse; the run
    records the one it computed itself."""
    from .identity import run_identity

    train = base_dataset(cfg.train_dataloader.dataset)
    root = train.get('data_root') or ''
    image_root = osp.join(root, (train.get('data_prefix') or {}).get(
        'img', '') or '')
    files = list(dataset_files(cfg))
    held = cfg.get('heldout_ann_file')
    if held and osp.isfile(held):
        files.append(held)
    return run_identity(spec, cfg, root, image_root, files,
                        pretrained_start(spec, cfg))


def boxes_only(cfg: Config) -> Config:
    """A copy of ``cfg`` evaluated on boxes only: the RoI head without its
    mask branch (the checkpoint's mask weights are then not loaded) and the
    evaluator's ``metric=['bbox']``. Masks are most of a two-stage
    evaluation's cost; the held-out choice and AP^fixed / AP^pool use boxes
    only."""
    out = copy.deepcopy(cfg)
    roi = out.model.get('roi_head')
    if roi is not None and roi.get('mask_head') is not None:
        roi.mask_head = None
        roi.mask_roi_extractor = None
    out.test_evaluator.metric = ['bbox']
    return out


#: The heads whose own ``test_cfg`` holds the Fixed-AP mode's keys
#: (``max_per_img``, ``topk_per_class``: mmlongtail's query heads, see
#: :mod:`mmlongtail.models.dense_heads.query_heads`); ``fixed_ap_eval``'s
#: ``test_cfg`` is refused for another head (mmdet's dense heads would
#: ignore ``topk_per_class`` and measure the capped mode again).
QUERY_HEADS = ('mmlongtail.LongTailDINOHead',
               'mmlongtail.LongTailDeformableDETRHead')


def fixed_ap_config(cfg: Config, out_dir: str) -> Optional[Config]:
    """The second val pass of ``cfg`` (its ``fixed_ap_eval``, see
    ``configs/benchmark/baseline_ce.py`` and ``dino_focal.py``): boxes
    only, the Fixed-AP test-time mode put in the model's test config and
    the evaluator's protocols set to ``fixed_ap_eval['protocol']`` (result
    files under ``out_dir``); None when the config has no such pass (the
    one-stage track).

    Where the mode goes is named by ``fixed_ap_eval``'s one other key:
    ``rcnn`` updates the R-CNN heads' ``model.test_cfg.rcnn`` (two-stage
    track); ``test_cfg`` updates ``model.test_cfg`` itself, the test config
    of a query head (:data:`QUERY_HEADS`; query track), whose Fixed-AP mode
    is ``max_per_img=-1, topk_per_class=k``.

    Raises:
        ValueError: If ``fixed_ap_eval`` lacks ``protocol`` or does not
            name exactly one of ``rcnn`` / ``test_cfg``; if the model has
            no R-CNN test config (``rcnn``), or its head is not a query
            head or it has no test config (``test_cfg``).
    """
    spec = cfg.get('fixed_ap_eval')
    if spec is None:
        return None
    where = [k for k in ('rcnn', 'test_cfg') if k in spec]
    if 'protocol' not in spec or len(where) != 1:
        raise ValueError('fixed_ap_eval needs protocol and one of rcnn (an '
                         'R-CNN test config) or test_cfg (a query head\'s), '
                         f'got {dict(spec)}')
    out = boxes_only(cfg)
    test_cfg = out.model.get('test_cfg')
    if where[0] == 'rcnn':
        target = (test_cfg or {}).get('rcnn')
        if target is None:
            raise ValueError('fixed_ap_eval is set, but the model has no '
                             'test_cfg.rcnn to put the Fixed-AP mode in')
    else:
        head = (out.model.get('bbox_head') or {}).get('type')
        if head not in QUERY_HEADS or test_cfg is None or \
                'rcnn' in test_cfg:
            raise ValueError(
                'fixed_ap_eval.test_cfg puts the Fixed-AP mode in the test '
                f'config of a query head ({", ".join(QUERY_HEADS)}); the '
                f'model\'s bbox_head is {head!r} with test_cfg '
                f'{None if test_cfg is None else dict(test_cfg)}')
        target = test_cfg
    target.update(spec[where[0]])
    out.test_evaluator.protocol = list(spec['protocol'])
    out.test_evaluator.outfile_prefix = osp.join(out_dir, 'lvis')
    return out


def merge_fixed_ap(metrics: Dict[str, float], fixed: Dict[str, float],
                   run: str) -> Dict[str, float]:
    """``metrics`` (val's first pass) with the large-vocabulary protocols'
    results of the Fixed-AP pass ``fixed`` added. Both passes give the
    standard protocol's box AP (the first with the model keeping each
    image's best 100, the second with the metric keeping them): they agree
    but for the order of equal scores; a difference is logged.
    """
    out = dict(metrics)
    for k, v in fixed.items():
        out.setdefault(k, v)
    a, b = metrics.get('lvis/bbox_AP'), fixed.get('lvis/bbox_AP')
    if a is not None and b is not None and abs(a - b) > 1e-9:
        MMLogger.get_current_instance().warning(
            f'{run}: box AP {a:.6f} in the first val pass, {b:.6f} in the '
            'Fixed-AP pass (equal scores ordered differently?)')
    return out


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
    from mmlongtail_bench.demo import trained_checkpoint

    runner = Runner.from_cfg(cfg)
    keep, timer = LastMetricsHook(), PhaseTimer()
    runner.register_hook(keep)
    runner.register_hook(timer)
    runner.train()  # validates after the last epoch
    metrics = dict(keep.metrics or runner.val())
    epochs = int(cfg.train_cfg.max_epochs)
    checkpoint = trained_checkpoint(cfg.work_dir)  # the hook names it
    times = dict(timer.times)
    fixed = fixed_ap_config(cfg, osp.join(spec.work_dir, 'fixed_ap'))
    if fixed is not None:
        mark = _clock()
        fixed.work_dir = osp.join(spec.work_dir, 'fixed_ap')
        fixed.load_from = checkpoint
        fixed.resume = False
        second = Runner.from_cfg(fixed).test()
        metrics = merge_fixed_ap(metrics, second, spec.key)
        wall, cpu = _since(mark)
        times.update(eval_seconds=times['eval_seconds'] + wall,
                     eval_cpu_seconds=times['eval_cpu_seconds'] + cpu,
                     fixed_ap_eval_seconds=wall,
                     fixed_ap_eval_cpu_seconds=cpu,
                     fixed_ap_pass_bbox_AP=second.get('lvis/bbox_AP'))
    extra = dict(checkpoint=checkpoint, epochs=epochs)
    return metrics, dict(extra, **times)


def _clock() -> Tuple[float, float]:
    return time.time(), time.process_time()


def _since(mark: Tuple[float, float]) -> Tuple[float, float]:
    return time.time() - mark[0], time.process_time() - mark[1]


def _posthoc(spec: RunSpec, cfg: Config) -> Tuple[dict, dict]:
    """Choose ``spec.param`` among ``spec.values`` with
    :func:`mmlongtail.apis.calibrate.sweep` on the benchmark's held-out file
    (box AP by ``spec.criterion``; standard protocol only, its table in
    ``{work_dir}/heldout``; boxes only, see :func:`boxes_only`), then
    evaluate val with the chosen value (the same sweep, one value, the run's
    per-class file), and again in the config's Fixed-AP pass
    (:func:`fixed_ap_config`)."""
    from mmlongtail.apis.calibrate import sweep

    held_cfg = boxes_only(cfg)
    held_cfg.test_evaluator.protocol = ['standard']
    held_cfg.test_evaluator.outfile_prefix = None
    held_path = osp.join(spec.work_dir, 'posthoc_heldout_config.py')
    val_path = osp.join(spec.work_dir, 'posthoc_val_config.py')
    held_cfg.dump(held_path)
    cfg.dump(val_path)
    fixed = fixed_ap_config(cfg, osp.join(spec.work_dir, 'fixed_ap'))
    fixed_path = osp.join(spec.work_dir, 'posthoc_fixed_ap_config.py')
    if fixed is not None:
        fixed.dump(fixed_path)
    mark = _clock()
    held = sweep(held_path, spec.init_checkpoint, spec.param, spec.values,
                 'heldout', work_dir=osp.join(spec.work_dir, 'heldout'),
                 heldout_ann_file=spec.heldout_ann_file,
                 criterion=spec.criterion, task='bbox', baseline=False)
    held_wall, held_cpu = _since(mark)
    mark = _clock()
    on_val = sweep(val_path, spec.init_checkpoint, spec.param, [held.best],
                   'val', work_dir=spec.work_dir, task='bbox',
                   baseline=False, write=False)
    metrics = dict(on_val.rows[0]['metrics'])
    if fixed is not None:
        second = sweep(fixed_path, spec.init_checkpoint, spec.param,
                       [held.best], 'val',
                       work_dir=osp.join(spec.work_dir, 'fixed_ap'),
                       task='bbox', baseline=False,
                       write=False).rows[0]['metrics']
        metrics = merge_fixed_ap(metrics, second, spec.key)
    val_wall, val_cpu = _since(mark)
    # the sweep returns the files each value's evaluation wrote
    per_class = on_val.rows[0]['files'].get('per_class')
    if per_class is None or not osp.isfile(per_class):
        raise FileNotFoundError(
            f'post-hoc run {spec.key}: the val evaluation wrote no '
            f'per-class file (it wrote {on_val.rows[0]["files"]})')
    n = len(spec.values)
    times = dict(eval_seconds=val_wall, eval_cpu_seconds=val_cpu,
                 fixed_ap_pass_bbox_AP=None if fixed is None else
                 second.get('lvis/bbox_AP'),
                 heldout_eval_seconds=held_wall / n,
                 heldout_eval_cpu_seconds=held_cpu / n)
    selection = dict(
        param=held.param, where=held.where, values=list(held.values),
        criterion=f'{held.task}_{held.criterion}',
        heldout=[{k: float(v) for k, v in r['metrics'].items()}
                 for r in held.rows],
        heldout_split=asdict(held.split), chosen=held.best,
        files=dict(held.files))
    return metrics, dict(
        times, checkpoint=spec.init_checkpoint, selection=selection,
        per_class=per_class)


def _pretrained_record(spec: RunSpec, cfg: Config) -> Optional[dict]:
    """``{'path', 'sha256', 'settings'}`` of the pretrained backbone the
    run started from (its record beside it, see :mod:`.pretrain`), or None
    from scratch."""
    from .identity import file_sha256
    from .pretrain import read_pretrain_record

    path = pretrained_start(spec, cfg)
    if path is None:
        return None
    rec = read_pretrain_record(path) or {}
    return dict(path=path, sha256=file_sha256(path),
                settings=rec.get('settings'), identity=rec.get('identity'))


def train_and_evaluate(spec: RunSpec) -> dict:
    """Do ``spec`` (train and evaluate, or post-hoc: choose and evaluate);
    writes and returns ``{work_dir}/metrics.json``."""
    import torch

    from mmlongtail_bench.demo import per_class_path

    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    cfg = run_config(spec)
    identity = identity_of(spec, cfg)
    start = time.time()
    do = _posthoc if spec.kind == 'posthoc' else _train
    metrics, extra = do(spec, cfg)
    extra.setdefault('per_class', per_class_path(cfg))  # the metric's name
    record = dict(
        spec=asdict(spec),
        metrics={k: float(v) for k, v in metrics.items()},
        seconds=time.time() - start,
        device='cuda' if torch.cuda.is_available() else 'cpu',
        threads=torch.get_num_threads(),
        identity=identity,
        pretrained=_pretrained_record(spec, cfg),
        **extra)
    with open(osp.join(spec.work_dir, 'metrics.json'), 'w') as f:
        json.dump(record, f, indent=1)
    return record
