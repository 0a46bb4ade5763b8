"""Choose a post-hoc parameter (NorCal's γ, logit adjustment's τ,
τ-normalization's τ) on a grid, with the LVIS metric, on a named split.

:func:`sweep` is what ``tools/calibrate.py`` runs::

    result = sweep('configs/norcal/norcal_mask_rcnn_r50_fpn_ms_1x_lvis.py',
                   ckpt, param='gamma', values=[0.2, 0.4, 0.6],
                   split='heldout')
    result.best          # the chosen value, by result.criterion
    result.rows          # one row per value (and 'none'), metrics in [0, 1]

**Which component a parameter is.** The config must already use it; the
sweep only varies its value. ``gamma`` is :class:`~mmlongtail.models.
scorers.NorCal`'s ``gamma`` and ``beta`` its class-balanced ``beta`` (in
``model.test_cfg.rcnn.score_calibration`` or a Cascade's
``stage_score_calibration``); ``tau`` is :class:`~mmlongtail.models.scorers.
LogitAdjustment`'s ``tau`` there, or :class:`~mmlongtail.engine.
TauNormalizationHook`'s in ``custom_hooks``; ``fractal_l`` is
:class:`~mmlongtail.models.scorers.fracal.FRACAL`'s. A name matching
nothing, or several places, is refused naming what was found; the
qualified names (``NorCal.gamma``, ``LogitAdjustment.tau``,
``TauNormalizationHook.tau``, ``FRACAL.fractal_l``) pick one kind.

**How it runs.** The Runner is built once and the checkpoint loaded once.
Each test batch goes through the data preprocessor, the backbone, the neck
and the RPN *once*; the RoI head (box head, scorers, NMS, mask head) then
runs once per value, with that value in the RoI head's test config (a
scorer) or with the box classifiers τ-normalized (the surgery the hook
also uses, undone after each value), and each value has its own evaluator.
Outputs are those of ``tools/test.py`` with the value written in the config
(tested). The log has a line per batch and per evaluated value with the
time elapsed and the time left. Each row returns the files its evaluation
wrote (``result.rows[i]['files']``). Row ``'none'`` (``baseline=True``) is
the same model with the component removed. Memory: each row's evaluator
keeps its detections until the end. The Runner's hooks run as in a test
epoch; their per-batch calls see the last row's outputs.

**Splits.** ``'val'``: the config's test dataloader and evaluator (tuning on
the split you report inflates it; the table says so). ``'heldout'``
(default): a part of the training set
(:mod:`mmlongtail.datasets.heldout_split`): when the
config trains on the remaining part of a split, its held-out twin (truly
unseen by the model); otherwise a split of the config's training file is
made in ``{work_dir}/splits`` and the table states that the checkpoint has
seen those images. A path to an LVIS-format file whose images live where
the training images do is also accepted (``heldout_ann_file``).

**Where each idea lives.** :mod:`.calibration.params` (which component a
parameter names), :mod:`.calibration.split` (the images),
:mod:`.calibration.loop` (the one-pass test loop),
:mod:`.calibration.result` (the table and its files); progress lines with
the time left are :class:`mmlongtail.utils.progress.Progress`'s; the
τ-normalization surgery is
:func:`mmlongtail.models.layers.classifier_rebalance.tau_normalize_`.
"""
import os.path as osp
from typing import List, Optional, Sequence

from mmengine.logging import MMLogger
from mmengine.runner import Runner

from .calibration.loop import CalibrationSweepLoop, Row, row_rcnn_cfg
from .calibration.params import (KEPT_HOOKS, check_config, check_model,
                                 check_values, resolve_param)
from .calibration.result import (BASELINE, CRITERIA, TASKS, SweepResult,
                                 choose_best, metric_of)
from .calibration.split import prepare_split
from .runner_setup import build_runner_config

__all__ = ['sweep']


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
            (:data:`.calibration.params.TARGETS`).
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
    # not build_test_config: the checkpoint is read only once the
    # parameter, its values and the split are known to be usable
    cfg = build_runner_config(config, work_dir=work_dir,
                              cfg_options=cfg_options)
    # the sweep logs its own progress per batch and per value (the loop
    # calls the test hooks, which would log each batch a second time)
    cfg.get('default_hooks', {}).pop('eval_progress', None)
    target = resolve_param(cfg, param)
    check_config(cfg, target)
    grid = check_values(target, values)
    split_info_ = prepare_split(cfg, split, work_dir, seed, heldout_fraction,
                                heldout_num_images, heldout_ann_file)
    rcnn_cfg = cfg.model.test_cfg.rcnn
    rows: List[Row] = []
    labels = ([None] if baseline else []) + grid
    for v in labels:
        label = BASELINE if v is None else f'{v:g}'
        if target.kind == 'scorer':
            rows.append(Row(label, v, row_rcnn_cfg(rcnn_cfg, target, v)))
        else:
            rows.append(Row(label, v, None, v))
    if target.kind == 'hook' and target.name not in KEPT_HOOKS:
        # applied per row by the loop instead
        cfg.custom_hooks = [h for i, h in enumerate(cfg.custom_hooks)
                            if i != target.path[1]]
    cfg.load_from = checkpoint
    runner = Runner.from_cfg(cfg)
    check_model(runner.model, target)
    loop = CalibrationSweepLoop(runner, rows, target, log_interval)
    runner.call_hook('before_run')
    runner.load_or_resume()
    loop.run()
    runner.call_hook('after_run')

    table = [dict(label=r.label, value=r.value, metrics=dict(r.metrics),
                  files=dict(r.files)) for r in rows]
    if task is None:
        task = 'segm' if any(metric_of(r['metrics'], 'segm', 'AP') is not None
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
