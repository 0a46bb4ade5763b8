"""Choose a post-hoc parameter (NorCal's γ, logit adjustment's τ,
τ-normalization's τ) on a grid, with the LVIS metric, on a named split.

:func:`sweep` is what ``tools/calibrate.py`` runs::

    result = sweep('configs/norcal_mask_rcnn_r50_fpn_ms_1x_lvis.py', ckpt,
                   param='gamma', values=[0.2, 0.4, 0.6], split='heldout')
    result.best          # the chosen value, by result.criterion
    result.rows          # one row per value (and 'none'), metrics in [0, 1]

**Which component a parameter is.** The config must already use it; the
sweep only varies its value. ``gamma`` is :class:`~mmlongtail.models.
scorers.NorCal`'s ``gamma`` and ``beta`` its class-balanced ``beta`` (in
``model.test_cfg.rcnn.score_calibration`` or a Cascade's
``stage_score_calibration``); ``tau`` is :class:`~mmlongtail.models.scorers.
LogitAdjustment`'s ``tau`` there, or :class:`~mmlongtail.engine.
TauNormalizationHook`'s in ``custom_hooks``. A name matching nothing, or
several places, is refused naming what was found; the qualified names
(``NorCal.gamma``, ``LogitAdjustment.tau``, ``TauNormalizationHook.tau``)
pick one kind.

**How it runs.** The Runner is built once and the checkpoint loaded once.
Each test batch goes through the data preprocessor, the backbone, the neck
and the RPN *once*; the RoI head (box head, scorers, NMS, mask head) then
runs once per value, with that value in the RoI head's test config (a
scorer) or with the box classifiers τ-normalized (the hook's functions,
undone after each value), and each value has its own evaluator. Outputs are
those of ``tools/test.py`` with the value written in the config (tested).
Row ``'none'`` (``baseline=True``) is the same model with the component
removed. Memory: each row's evaluator keeps its detections until the end.
The Runner's hooks run as in a test epoch; their per-batch calls see the
last row's outputs.

**Splits.** ``'val'``: the config's test dataloader and evaluator (tuning on
the split you report inflates it; the table says so). ``'heldout'``
(default): a part of the training set (:mod:`.heldout_split`): when the
config trains on the remaining part of a split, its held-out twin (truly
unseen by the model); otherwise a split of the config's training file is
made in ``{work_dir}/splits`` and the table states that the checkpoint has
seen those images. A path to an LVIS-format file whose images live where
the training images do is also accepted (``heldout_ann_file``).
"""
import copy
import json
import math
import os.path as osp
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner, TestLoop

from mmlongtail.utils import atomic_write
from .heldout_split import heldout_of_remaining, split_heldout, split_info
from .runner_setup import build_runner_config

#: Qualified parameter -> (kind, component class name, config key).
TARGETS: Dict[str, Tuple[str, str, str]] = {
    'NorCal.gamma': ('scorer', 'NorCal', 'gamma'),
    'NorCal.beta': ('scorer', 'NorCal', 'beta'),
    'LogitAdjustment.tau': ('scorer', 'LogitAdjustment', 'tau'),
    'TauNormalizationHook.tau': ('hook', 'TauNormalizationHook', 'tau'),
}
#: Short names and the qualified ones each may mean.
SHORT_PARAMS: Dict[str, Tuple[str, ...]] = {
    'gamma': ('NorCal.gamma', ),
    'beta': ('NorCal.beta', ),
    'tau': ('LogitAdjustment.tau', 'TauNormalizationHook.tau'),
}
SPLITS = ('heldout', 'val')
#: The metrics in the table and the plot, and the criteria for the best.
TABLE_KEYS = ('AP', 'APr', 'APc', 'APf')
CRITERIA = TABLE_KEYS
TASKS = ('bbox', 'segm')
#: Label of the row without the swept component.
BASELINE = 'none'
#: NorCal refuses the other of gamma / beta.
_EXCLUSIVE = {'gamma': 'beta', 'beta': 'gamma'}


# ------------------------------------------------------------ the target --
@dataclass(frozen=True)
class Target:
    """Where a swept parameter lives in the config.

    Attributes:
        name (str): Qualified name, e.g. ``'NorCal.gamma'``.
        kind (str): ``'scorer'`` or ``'hook'``.
        key (str): The parameter's key in the component's config.
        path (tuple): Scorer: ``('score_calibration', i)`` or
            ``('stage_score_calibration', stage, i)`` within
            ``model.test_cfg.rcnn``; hook: ``('custom_hooks', i)``.
        component (dict): The component's config as the config gives it.
    """
    name: str
    kind: str
    key: str
    path: tuple
    component: dict

    @property
    def where(self) -> str:
        head = 'model.test_cfg.rcnn.' if self.kind == 'scorer' else ''
        return head + self.path[0] + ''.join(f'[{i}]' for i in self.path[1:])


def _type_name(cfg: Any) -> str:
    t = cfg.get('type', '') if isinstance(cfg, dict) else ''
    return (t if isinstance(t, str) else getattr(t, '__name__', '')).split(
        '.')[-1]


def _candidates(cfg: Config) -> List[Tuple[str, tuple, dict]]:
    """Every scorer / hook config: ``(kind, path, component)``."""
    found = []
    rcnn = ((cfg.get('model') or {}).get('test_cfg') or {}).get('rcnn') or {}
    for i, c in enumerate(rcnn.get('score_calibration') or []):
        found.append(('scorer', ('score_calibration', i), c))
    for s, stage in enumerate(rcnn.get('stage_score_calibration') or []):
        for i, c in enumerate(stage or []):
            found.append(('scorer', ('stage_score_calibration', s, i), c))
    for i, c in enumerate(cfg.get('custom_hooks') or []):
        found.append(('hook', ('custom_hooks', i), c))
    return found


def resolve_param(cfg: Config, param: str) -> Target:
    """The one place of ``cfg`` that ``param`` names (see the module
    docstring).

    Raises:
        ValueError: An unknown name, no such component in the config, or
            several.
    """
    if param in SHORT_PARAMS:
        names = SHORT_PARAMS[param]
    elif param in TARGETS:
        names = (param, )
    else:
        raise ValueError(
            f'unknown calibration parameter {param!r}: choose one of '
            f'{sorted(SHORT_PARAMS)} or {sorted(TARGETS)}')
    matches = []
    for name in names:
        kind, cls, key = TARGETS[name]
        for k, path, comp in _candidates(cfg):
            if k != kind or _type_name(comp) != cls:
                continue
            if comp.get(_EXCLUSIVE.get(key, ''), None) is not None:
                continue  # NorCal configured with the other weighting
            matches.append(Target(name, kind, key, path, dict(comp)))
    if not matches:
        present = [f'{_type_name(c)} at {Target("", k, "", p, c).where}'
                   for k, p, c in _candidates(cfg)]
        raise ValueError(
            f'--param {param}: the config has no {" or ".join(names)} to '
            'vary (the sweep varies a component the config already uses; '
            'start from a config that sets it, e.g. configs/norcal_*.py, '
            'logit_adjustment_*.py, tau_norm_*.py). Found: '
            f'{present or "no scorer and no custom hook"}')
    if len(matches) > 1:
        raise ValueError(
            f'--param {param} is ambiguous: the config has '
            f'{[f"{m.name} at {m.where}" for m in matches]}; keep one, or '
            'name one kind with a qualified parameter '
            f'({", ".join(sorted(TARGETS))})')
    return matches[0]


def _check_values(target: Target, values: Sequence[float]) -> List[float]:
    """The grid as floats, each built once so a refused value fails before
    any image is evaluated (with the component's own message)."""
    from mmlongtail.registry import HOOKS, MODELS
    if not values:
        raise ValueError('calibration sweep: give at least one value')
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                not math.isfinite(v):
            raise ValueError(f'calibration sweep: values must be finite '
                             f'numbers, got {v!r}')
        out.append(float(v))
    if len(set(out)) != len(out):
        raise ValueError(f'calibration sweep: repeated values in {out}')
    registry = MODELS if target.kind == 'scorer' else HOOKS
    for v in out:
        registry.build(dict(copy.deepcopy(target.component), **{
            target.key: v}))
    return out


# ------------------------------------------------------------- the split --
@dataclass
class SplitInfo:
    """The images a sweep evaluated.

    Attributes:
        name (str): ``'heldout'`` or ``'val'``.
        ann_file (str): Their LVIS-format annotation file.
        num_images (int): Images in it.
        seen_in_training (bool, optional): Whether the checkpoint's training
            set (the config's) contains them: True for a held-out part of
            the file the config trains on, False for the held-out twin of a
            remaining part the config trains on, None for val.
        note (str): One sentence for the table.
    """
    name: str
    ann_file: str
    num_images: int
    seen_in_training: Optional[bool]
    note: str
    remaining_ann_file: Optional[str] = None


def _innermost(dataset_cfg: dict, what: str) -> dict:
    while 'ann_file' not in dataset_cfg and 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    if 'ann_file' not in dataset_cfg:
        raise ValueError(
            f'calibration sweep: the {what} dataset has no ann_file (a '
            f'{_type_name(dataset_cfg) or "dataset"} of several datasets is '
            'not supported); give heldout_ann_file or split=\'val\'')
    return dataset_cfg


def _resolve(dataset_cfg: dict, path: str) -> str:
    root = dataset_cfg.get('data_root') or ''
    return path if osp.isabs(path) or not root else osp.join(root, path)


def _count_images(ann_file: str) -> int:
    with open(ann_file, encoding='utf-8') as f:
        return len(json.load(f)['images'])


def prepare_split(cfg: Config,
                  split: str = 'heldout',
                  work_dir: Optional[str] = None,
                  seed: int = 0,
                  fraction: Optional[float] = None,
                  num_images: Optional[int] = None,
                  heldout_ann_file: Optional[str] = None) -> SplitInfo:
    """Point ``cfg``'s test dataloader and evaluator at ``split`` (in place)
    and describe it (see the module docstring).

    For ``'heldout'`` without a size, ``fraction=0.1``.
    """
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    logger = MMLogger.get_current_instance()
    if split == 'val':
        if heldout_ann_file is not None:
            raise ValueError("heldout_ann_file is for split='heldout'")
        metrics = cfg.test_evaluator if isinstance(
            cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
        ann = next((m['ann_file'] for m in metrics if m.get('ann_file')),
                   None)
        if ann is None:
            test = _innermost(cfg.test_dataloader.dataset, 'test')
            ann = _resolve(test, test['ann_file'])
        return SplitInfo(
            'val', ann, _count_images(ann), None,
            "the config's test split: tuning on the split that is reported "
            'inflates its numbers')
    train = _innermost(cfg.train_dataloader.dataset, 'training')
    train_ann = _resolve(train, train['ann_file'])
    twin = heldout_of_remaining(train_ann)
    remaining = train_ann if twin else None
    if heldout_ann_file is not None:
        if fraction is not None or num_images is not None:
            raise ValueError('give heldout_ann_file or a held-out size '
                             '(fraction / num_images), not both')
        if not osp.isfile(heldout_ann_file):
            raise FileNotFoundError(
                f'held-out annotation file not found: {heldout_ann_file}')
        ann, info = heldout_ann_file, split_info(heldout_ann_file) or {}
        if twin is not None and osp.samefile(twin[0], ann):
            seen = False
        elif info.get('source') == osp.abspath(train_ann):
            seen = True
        else:
            seen = None
    elif twin is not None:
        if fraction is not None or num_images is not None:
            raise ValueError(
                f'the config trains on {train_ann}, the remaining part of '
                'an existing split; its held-out twin is used, so do not '
                'give a held-out size')
        ann, info, seen = twin[0], twin[1], False
    else:
        if fraction is None and num_images is None:
            fraction = 0.1
        paths = split_heldout(
            train_ann, osp.join(work_dir or cfg.work_dir, 'splits'),
            seed=seed, fraction=fraction, num_images=num_images)
        ann, remaining, seen = paths['heldout'], paths['remaining'], True
        info = split_info(ann)
    note = (f'seed {info["seed"]}, {info["num_heldout_images"]} of the '
            f'{info["num_source_images"]} images of {info["source"]}'
            if info.get('seed') is not None else 'a given file')
    if seen:
        note += ('; the checkpoint was trained on these images (held out '
                 'only if stage 1 trains on the remaining part)')
        logger.warning(
            f'calibration split {ann}: the model was trained on these '
            'images, so they are not unseen data. For a true held-out '
            f'split, train stage 1 with ann_file={remaining or "<remaining>"}'
            ' and calibrate with that config.')
    elif seen is False:
        note += '; not in the training set of the config (its remaining part)'
    else:
        note += '; whether the model was trained on them is not recorded'
    test = cfg.test_dataloader.dataset
    inner = _innermost(test, 'test')
    inner['ann_file'] = osp.abspath(ann)
    inner['data_root'] = train.get('data_root')
    inner['data_prefix'] = copy.deepcopy(train.get('data_prefix', {}))
    metrics = cfg.test_evaluator if isinstance(
        cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
    for m in metrics:
        if 'ann_file' in m:
            m['ann_file'] = osp.abspath(ann)
    return SplitInfo('heldout', osp.abspath(ann), _count_images(ann), seen,
                     note, remaining)


# ------------------------------------------------------------- the rows --
@dataclass
class _Row:
    label: str
    value: Optional[float]
    rcnn_cfg: Any = None  # scorer rows: the RoI head's test config
    tau: Optional[float] = None  # hook rows: the τ to apply
    evaluator: Any = None
    metrics: Dict[str, float] = field(default_factory=dict)


def _row_rcnn(rcnn: Any, target: Target, value: Optional[float]) -> Any:
    out = copy.deepcopy(rcnn)
    lists = out
    for k in target.path[:-1]:
        lists = lists[k]
    if value is None:
        lists.pop(target.path[-1])
    else:
        lists[target.path[-1]][target.key] = value
    return out


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


class CalibrationSweepLoop(TestLoop):
    """A test loop evaluating every row of a sweep in one pass over the
    data: features and proposals once per batch, the RoI head once per row
    (see the module docstring). Not registered: :func:`sweep` builds it."""

    def __init__(self, runner, rows: List[_Row], target: Target,
                 log_interval: int = 1) -> None:
        super().__init__(runner, runner.test_dataloader,
                         runner.test_loop.evaluator)
        self.rows, self.target = rows, target
        self.log_interval = log_interval
        meta = getattr(self.dataloader.dataset, 'metainfo', None)
        for row in rows:
            row.evaluator = runner.build_evaluator(
                copy.deepcopy(runner.cfg.test_evaluator))
            for metric in row.evaluator.metrics:
                prefix = getattr(metric, 'outfile_prefix', None)
                if prefix:  # one folder of result files per row
                    metric.outfile_prefix = osp.join(
                        osp.dirname(prefix), f'{target.key}_{row.label}',
                        osp.basename(prefix))
            row.evaluator.dataset_meta = meta

    def run(self) -> dict:
        from mmlongtail.engine.hooks.classifier_rebalance_hooks import (
            restore_weights, tau_normalize_)
        model = _unwrap(self.runner.model)
        self.runner.call_hook('before_test')
        self.runner.call_hook('before_test_epoch')
        model.eval()
        logger = MMLogger.get_current_instance()
        rcnn = model.roi_head.test_cfg
        total = len(self.dataloader)
        key = self.target.key
        values = ', '.join(row.label for row in self.rows)
        logger.info(f'calibration sweep: {total} batches, each through the '
                    f'RoI head once per value ({key} = {values}), then one '
                    'evaluation per value')
        progress = Progress('calibration sweep: batch', total, logger,
                            self.log_interval)
        try:
            for idx, data_batch in enumerate(self.dataloader):
                self.runner.call_hook(
                    'before_test_iter', batch_idx=idx, data_batch=data_batch)
                with torch.no_grad():
                    data = model.data_preprocessor(data_batch, False)
                    feats, proposals = _features(model, data)
                    for row in self.rows:
                        saved = None
                        model.roi_head.test_cfg = row.rcnn_cfg or rcnn
                        if row.tau is not None:
                            saved = tau_normalize_(model, row.tau)
                        try:
                            results = model.roi_head.predict(
                                feats, proposals, data['data_samples'],
                                rescale=True)
                        finally:
                            model.roi_head.test_cfg = rcnn
                            if saved is not None:
                                restore_weights(model, saved)
                        # the evaluator copies what it keeps: the samples
                        # can take the next row's predictions
                        outputs = model.add_pred_to_datasample(
                            data['data_samples'], results)
                        row.evaluator.process(
                            data_samples=outputs, data_batch=data_batch)
                self.runner.call_hook(
                    'after_test_iter', batch_idx=idx, data_batch=data_batch,
                    outputs=outputs)
                progress.step(f'({len(self.rows)} values each)')
        finally:
            model.roi_head.test_cfg = rcnn
        metrics = {}
        n = len(self.dataloader.dataset)
        progress = Progress('calibration sweep: evaluated value',
                            len(self.rows), logger)
        for row in self.rows:
            row.metrics = row.evaluator.evaluate(n)
            progress.step(f'{key}={row.label}: ' + _metric_line(row.metrics))
            metrics.update({f'{key}={row.label}/{k}': v
                            for k, v in row.metrics.items()})
        self.runner.call_hook('after_test_epoch', metrics=metrics)
        self.runner.call_hook('after_test')
        return metrics


class Progress:
    """Progress lines of a counted task, with the time left estimated from
    the mean time per step so far: ``'{what} 3/40 (...), 12.1 s elapsed,
    about 2 min 29 s left'``.

    Args:
        what (str): The line's start.
        total (int): Steps in all.
        logger (MMLogger): Where the lines go (INFO).
        interval (int): Log every this many steps; the first and the last
            step are always logged. Defaults to 1.
    """

    def __init__(self, what: str, total: int, logger: MMLogger,
                 interval: int = 1) -> None:
        if interval < 1:
            raise ValueError(f'log_interval must be >= 1, got {interval}')
        self.what, self.total, self.logger = what, total, logger
        self.interval = interval
        self.done = 0
        self.start = time.perf_counter()

    def step(self, detail: str = '') -> None:
        """Count one step done; log it when due."""
        self.done += 1
        if self.done not in (1, self.total) and self.done % self.interval:
            return
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done)
        self.logger.info(
            f'{self.what} {self.done}/{self.total}'
            + (f' {detail}' if detail else '') +
            f', {format_seconds(elapsed)} elapsed, about '
            f'{format_seconds(left)} left')


def format_seconds(seconds: float) -> str:
    """``'4.2 s'``, ``'2 min 29 s'`` or ``'1 h 03 min'``."""
    if seconds < 60:
        return f'{seconds:.1f} s'
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f'{minutes} min {secs:02d} s'
    hours, minutes = divmod(minutes, 60)
    return f'{hours} h {minutes:02d} min'


def _features(model, data: dict):
    """Backbone/neck features and proposals of a batch, as the two-stage
    detector's ``predict`` computes them."""
    samples = data['data_samples']
    feats = model.extract_feat(data['inputs'])
    if samples[0].get('proposals', None) is None:
        proposals = model.rpn_head.predict(feats, samples, rescale=False)
    else:
        proposals = [s.proposals for s in samples]
    return feats, proposals


def _check_roi_head(roi_head_cls: type, target: Target) -> None:
    from mmlongtail.models.roi_heads.scoring import ScorersFromTestCfg
    if target.kind == 'scorer' and not issubclass(roi_head_cls,
                                                  ScorersFromTestCfg):
        raise ValueError(
            f'calibration sweep: {target.name} is a test-time scorer, but '
            f'the RoI head {roi_head_cls.__name__} does not run scorers; '
            "set model.roi_head.type='mmlongtail.StandardRoIHead' (or "
            "'mmlongtail.CascadeRoIHead')")


def _check_config(cfg: Config, target: Target) -> None:
    """Refuse, before anything is built, a model without an RoI head or
    whose RoI head ignores scorers."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    roi_head = cfg.model.get('roi_head')
    if not roi_head or 'rpn_head' not in cfg.model:
        raise ValueError(
            f'calibration sweep: the model {cfg.model.get("type")!r} is not '
            'a two-stage detector (backbone, RPN and RoI head); the '
            'calibrated scores and classifiers are those of R-CNN box heads')
    t = roi_head.get('type')
    if isinstance(t, str):
        with DefaultScope.overwrite_default_scope(
                cfg.get('default_scope', None) or 'mmdet'):
            t = MODELS.get(t)
    if isinstance(t, type):
        _check_roi_head(t, target)


def _check_model(model, target: Target) -> None:
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None or not hasattr(model, 'rpn_head') or \
            not hasattr(model, 'extract_feat'):
        raise ValueError(
            f'calibration sweep: {type(model).__name__} is not a two-stage '
            'detector (backbone, RPN and RoI head); the calibrated scores '
            'and classifiers are those of R-CNN box heads')
    _check_roi_head(type(roi_head), target)


def _metric_line(metrics: Dict[str, float]) -> str:
    parts = []
    for task in TASKS:
        vals = [(k, _get(metrics, task, k)) for k in TABLE_KEYS]
        if all(v is None for _, v in vals):
            continue
        parts.append(f'{task} ' + ' '.join(
            f'{k} {_pct(v)}' for k, v in vals))
    return ' | '.join(parts)


def _get(metrics: Dict[str, float], task: str,
         key: str) -> Optional[float]:
    for name, v in metrics.items():
        if name.split('/')[-1] == f'{task}_{key}':
            return float(v)
    return None


def _pct(v: Optional[float]) -> str:
    return '-' if v is None or v < 0 else f'{100 * v:.1f}'


# ------------------------------------------------------------ the result --
@dataclass
class SweepResult:
    """The outcome of :func:`sweep`.

    Attributes:
        param (str): The qualified parameter (``'NorCal.gamma'`` ...).
        where (str): Where it lives in the config.
        values (list[float]): The grid, in the order given.
        rows (list[dict]): ``{'label', 'value', 'metrics'}`` per row, the
            baseline (``label='none'``, ``value=None``) first when asked;
            metrics as the LVIS metric returns them (``'lvis/bbox_AP'`` ...,
            in [0, 1], -1 where undefined).
        split (SplitInfo): The evaluated images.
        criterion (str): ``'AP'``, ``'APr'``, ``'APc'`` or ``'APf'``.
        task (str): ``'bbox'`` or ``'segm'`` (the criterion's).
        best (float): The grid value with the highest criterion (ties: the
            first in grid order); the baseline row never wins.
        config (str), checkpoint (str): What was evaluated.
        files (dict): ``markdown``, ``json``, ``png`` paths (when written).
    """
    param: str
    where: str
    values: List[float]
    rows: List[dict]
    split: SplitInfo
    criterion: str
    task: str
    best: float
    config: str
    checkpoint: str
    files: Dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.param.split('.')[-1]

    def score(self, row: dict) -> Optional[float]:
        """The criterion's value in a row."""
        return _get(row['metrics'], self.task, self.criterion)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        tasks = [t for t in TASKS
                 if any(_get(r['metrics'], t, 'AP') is not None
                        for r in self.rows)]
        best_row = next(r for r in self.rows if r['value'] == self.best)
        base = next((r for r in self.rows if r['value'] is None), None)
        vs = '' if base is None else \
            f' ({_pct(self.score(base))} with `{BASELINE}`)'
        seen = {True: 'yes', False: 'no', None: 'n/a (val)'}[
            self.split.seen_in_training]
        lines = [
            f'# Calibration sweep: {self.param}', '',
            f'- config: `{self.config}`',
            f'- checkpoint: `{self.checkpoint}`',
            f'- parameter: `{self.param}` at `{self.where}`'
            + ('' if base is None else
               f'; row `{BASELINE}`: that component removed'),
            f'- split: **{self.split.name}**, `{self.split.ann_file}` '
            f'({self.split.num_images} images; {self.split.note})',
            f'- images seen in training: {seen}',
            f'- criterion: highest {self.task} {self.criterion} (ties: the '
            'first value of the grid)',
            f'- best: **{self.key} = {self.best:g}**, {self.task} '
            f'{self.criterion} {_pct(self.score(best_row))}{vs}', '',
            'LVIS AP in percent ("-": no class of that group in the split).',
            ''
        ]
        head = [self.key] + [f'{t} {k}' for t in tasks for k in TABLE_KEYS]
        lines.append('| ' + ' | '.join(head) + ' |')
        lines.append('|---|' + '---:|' * (len(head) - 1))
        for r in self.rows:
            label = BASELINE if r['value'] is None else f'{r["value"]:g}'
            if r['value'] == self.best:
                label = f'**{label}**'
            lines.append('| ' + ' | '.join(
                [label] + [_pct(_get(r['metrics'], t, k)) for t in tasks
                           for k in TABLE_KEYS]) + ' |')
        return '\n'.join(lines) + '\n'

    def plot(self, path: str) -> str:
        """AP, AP_r, AP_c, AP_f against the parameter, one panel per task
        (dashed: the baseline row; dotted vertical: the best value)."""
        from mmlongtail.analysis.report import agg_pyplot
        plt = agg_pyplot()
        tasks = [t for t in TASKS
                 if any(_get(r['metrics'], t, 'AP') is not None
                        for r in self.rows)]
        grid = [r for r in self.rows if r['value'] is not None]
        base = next((r for r in self.rows if r['value'] is None), None)
        fig, axes = plt.subplots(
            1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
        try:
            for ax, task in zip(axes[0], tasks):
                for i, k in enumerate(TABLE_KEYS):
                    color = f'C{i}'
                    pts = [(r['value'], _get(r['metrics'], task, k))
                           for r in grid]
                    pts = [(x, 100 * y) for x, y in pts
                           if y is not None and y >= 0]
                    if pts:
                        ax.plot(*zip(*pts), marker='o', color=color,
                                label=k)
                    b = None if base is None else _get(
                        base['metrics'], task, k)
                    if b is not None and b >= 0:
                        ax.axhline(100 * b, color=color, ls='--', lw=0.8)
                ax.axvline(self.best, color='grey', ls=':', lw=1)
                ax.set_xlabel(self.key + ('' if base is None else
                                          f' (dashed: {BASELINE})'))
                ax.set_ylabel(f'{task} AP (%)')
                ax.set_title(f'{task}: {self.param} on {self.split.name}')
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(path, dpi=100)
        finally:
            plt.close(fig)
        return path

    def write(self, out_dir: str) -> Dict[str, str]:
        """Write ``calibration_{param}_{split}.{md,json,png}`` into
        ``out_dir``; returns (and records in :attr:`files`) their paths."""
        stem = osp.join(out_dir, f'calibration_{self.param}_{self.split.name}')
        self.files = dict(markdown=stem + '.md', json=stem + '.json',
                          png=stem + '.png')
        atomic_write(self.files['markdown'], self.to_markdown())
        atomic_write(self.files['json'],
                     json.dumps(self.to_dict(), indent=1, default=float))
        self.plot(self.files['png'])
        return self.files


def choose_best(rows: List[dict], task: str, criterion: str) -> float:
    """The value of the grid row with the highest ``task`` ``criterion``
    (ties: the first in order; the baseline row excluded).

    Raises:
        ValueError: The metric is missing from the rows or undefined (-1)
            on this split.
    """
    scored = []
    for r in rows:
        if r['value'] is None:
            continue
        v = _get(r['metrics'], task, criterion)
        if v is None or v < 0:
            raise ValueError(
                f'criterion {task} {criterion} is not available on this '
                f'split (value {v}; e.g. no rare class in the images); '
                'choose another criterion')
        scored.append((v, r['value']))
    best = max(s for s, _ in scored)
    return next(value for s, value in scored if s == best)


# ------------------------------------------------------------ the sweep --
def sweep(config: str,
          checkpoint: str,
          param: str,
          values: Sequence[float],
          split: str = 'heldout',
          *,
          work_dir: Optional[str] = None,
          cfg_options: Optional[dict] = None,
          seed: int = 0,
          heldout_fraction: Optional[float] = None,
          heldout_num_images: Optional[int] = None,
          heldout_ann_file: Optional[str] = None,
          criterion: str = 'AP',
          task: Optional[str] = None,
          baseline: bool = True,
          write: bool = True,
          log_interval: int = 1) -> SweepResult:
    """Evaluate ``config`` + ``checkpoint`` with ``param`` set to each of
    ``values`` (see the module docstring).

    Args:
        config (str): A config that uses the component ``param`` names
            (its own value of the parameter is ignored).
        checkpoint (str): The trained weights.
        param (str): ``'gamma'``, ``'beta'``, ``'tau'`` or a qualified name
            (:data:`TARGETS`).
        values (Sequence[float]): The grid; each must be valid for the
            component (NorCal refuses ``gamma=0``, for instance).
        split (str): ``'heldout'`` (default) or ``'val'``.
        work_dir (str, optional): Output folder; defaults to
            ``work_dirs/calibrate/<config name>``.
        cfg_options (dict, optional): Config overrides, as ``--cfg-options``.
        seed (int): Seed of a held-out split made here. Defaults to 0.
        heldout_fraction (float, optional): Its share of the training
            images (default 0.1 when no size is given).
        heldout_num_images (int, optional): Its size in images instead.
        heldout_ann_file (str, optional): An existing held-out file.
        criterion (str): ``'AP'`` (default), ``'APr'``, ``'APc'`` or
            ``'APf'``: what the best value maximizes.
        task (str, optional): ``'bbox'`` or ``'segm'`` for the criterion;
            defaults to ``'segm'`` when the metric evaluates masks, else
            ``'bbox'``.
        baseline (bool): Add row ``'none'`` without the component.
            Defaults to True.
        write (bool): Write the markdown, JSON and PNG into ``work_dir``.
            Defaults to True.
        log_interval (int): Log progress (batches done, time elapsed, time
            left) every this many batches; the first and last batch are
            always logged, and each value's evaluation. Defaults to 1.

    Returns:
        SweepResult: The table, the split and the best value.

    Raises:
        ValueError: Unknown/absent/ambiguous ``param``, a value the
            component refuses, a bad split size, criterion or task, or a
            model the parameter does not apply to.
    """
    if log_interval < 1:
        raise ValueError(f'log_interval must be >= 1, got {log_interval}')
    if criterion not in CRITERIA:
        raise ValueError(f'criterion must be one of {CRITERIA}, got '
                         f'{criterion!r}')
    if task is not None and task not in TASKS:
        raise ValueError(f'task must be one of {TASKS}, got {task!r}')
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    if work_dir is None:
        work_dir = osp.join('work_dirs', 'calibrate',
                            osp.splitext(osp.basename(config))[0])
    cfg = build_runner_config(config, work_dir=work_dir,
                              cfg_options=cfg_options)
    target = resolve_param(cfg, param)
    _check_config(cfg, target)
    grid = _check_values(target, values)
    split_info_ = prepare_split(cfg, split, work_dir, seed, heldout_fraction,
                                heldout_num_images, heldout_ann_file)
    rcnn_cfg = cfg.model.test_cfg.rcnn
    rows: List[_Row] = []
    labels = ([None] if baseline else []) + grid
    for v in labels:
        label = BASELINE if v is None else f'{v:g}'
        if target.kind == 'scorer':
            rows.append(_Row(label, v, _row_rcnn(rcnn_cfg, target, v)))
        else:
            rows.append(_Row(label, v, None, v))
    if target.kind == 'hook':  # applied per row by the loop instead
        cfg.custom_hooks = [h for i, h in enumerate(cfg.custom_hooks)
                            if i != target.path[1]]
    cfg.load_from = checkpoint
    runner = Runner.from_cfg(cfg)
    _check_model(_unwrap(runner.model), target)
    loop = CalibrationSweepLoop(runner, rows, target, log_interval)
    runner.call_hook('before_run')
    runner.load_or_resume()
    loop.run()
    runner.call_hook('after_run')

    table = [dict(label=r.label, value=r.value, metrics=dict(r.metrics))
             for r in rows]
    if task is None:
        task = 'segm' if any(_get(r['metrics'], 'segm', 'AP') is not None
                             for r in table) else 'bbox'
    best = choose_best(table, task, criterion)
    result = SweepResult(target.name, target.where, grid, table, split_info_,
                         criterion, task, best, config, checkpoint)
    if write:
        result.write(work_dir)
    MMLogger.get_current_instance().info(
        f'calibration sweep: best {target.key} = {best:g} by {task} '
        f'{criterion} on {split_info_.name} ({split_info_.ann_file})' +
        (f'; wrote {result.files["markdown"]}' if write else ''))
    return result
