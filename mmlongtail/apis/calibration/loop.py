"""The sweep's test loop: every value of the grid evaluated in one pass over
the data (see :mod:`mmlongtail.apis.calibrate`)."""
import copy
import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from mmengine.logging import MMLogger
from mmengine.runner import TestLoop

from mmlongtail.models.layers.classifier_rebalance import (restore_weights,
                                                           tau_normalize_)
from mmlongtail.engine.hooks.ncm_hook import ncm_sweep_row
from mmlongtail.utils import unwrap_model
from .params import Target
from mmlongtail.utils.progress import Progress
from .result import metric_line


@dataclass
class Row:
    """One value of a sweep: its label, its value (None: the baseline
    row), what the RoI head runs with, and its evaluator and metrics."""
    label: str
    value: Optional[float]
    rcnn_cfg: Any = None  # scorer rows: the RoI head's test config
    tau: Optional[float] = None  # hook rows: the τ to apply
    evaluator: Any = None
    metrics: Dict[str, float] = field(default_factory=dict)
    #: What its metrics wrote (``'bbox'``, ``'segm'``, ``'per_class'`` ...:
    #: path), in a folder of its own when the evaluator has an
    #: ``outfile_prefix``.
    files: Dict[str, str] = field(default_factory=dict)


def row_rcnn_cfg(rcnn: Any, target: Target, value: Optional[float]) -> Any:
    """A copy of the RoI head's test config ``rcnn`` with the scorer of
    ``target`` set to ``value`` (removed for ``None``)."""
    out = copy.deepcopy(rcnn)
    lists = out
    for k in target.path[:-1]:
        lists = lists[k]
    if value is None:
        lists.pop(target.path[-1])
    else:
        lists[target.path[-1]][target.key] = value
    return out


#: The NCM temperature: its hook stays in the config and prepares the model
#: (:func:`~mmlongtail.engine.hooks.ncm_hook.ncm_sweep_row` per row).
NCM_TEMPERATURE = 'NCMClassifierHook.temperature'


class CalibrationSweepLoop(TestLoop):
    """A test loop evaluating every row of a sweep in one pass over the
    data: features and proposals once per batch, the RoI head once per row
    (see the module docstring). Not registered: :func:`sweep` builds it."""

    def __init__(self, runner, rows: List[Row], target: Target,
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
        model = unwrap_model(self.runner.model)
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
                        undo = None
                        if self.target.name == NCM_TEMPERATURE:
                            undo = ncm_sweep_row(model, row.value)
                        elif row.tau is not None:
                            saved = tau_normalize_(model, row.tau)
                        try:
                            results = model.roi_head.predict(
                                feats, proposals, data['data_samples'],
                                rescale=True)
                        finally:
                            model.roi_head.test_cfg = rcnn
                            if saved is not None:
                                restore_weights(model, saved)
                            if undo is not None:
                                undo()
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
            for metric in row.evaluator.metrics:
                row.files.update(getattr(metric, 'files_written', None) or {})
            progress.step(f'{key}={row.label}: ' + metric_line(row.metrics))
            metrics.update({f'{key}={row.label}/{k}': v
                            for k, v in row.metrics.items()})
        self.runner.call_hook('after_test_epoch', metrics=metrics)
        self.runner.call_hook('after_test')
        return metrics


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


