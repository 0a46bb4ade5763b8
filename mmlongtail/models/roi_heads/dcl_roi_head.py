"""A ``StandardRoIHead`` that adds DCL's triplet loss with easy anchors on
the RoI embeddings, weighted by DCL's loss schedule ``f(l)`` (Wang et al.,
"Dynamic Curriculum Learning for Imbalanced Data Classification", ICCV
2019; no official code)."""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmdet.models.task_modules.samplers import SamplingResult
from torch import Tensor

from mmlongtail.registry import MODELS
from mmlongtail.utils.runtime import training_progress
from mmlongtail.utils.curriculum import check_loss_schedule, loss_f
from .bbox_predict import classifier_scores
from .feature_capture import bbox_loss_with_features
from .standard_roi_head import StandardRoIHead

#: Keys of ``loss_schedule``.
SCHEDULE_KEYS = ('p', 'eps', 'by_epoch', 'total')


@MODELS.register_module()
class DCLRoIHead(StandardRoIHead):
    """:class:`StandardRoIHead` plus ``loss_triplet = f(l) * L_TEA``.

    DCL trains ``L = L_cls + f(l) * L_TEA`` (Sec. 3.4): the classification
    loss (here the bbox head's ``loss_cls``, unchanged) and the triplet loss
    with easy anchors (:class:`~mmlongtail.models.losses.
    EasyAnchorTriplet`) on the embedding the classifier sees, with the
    loss scheduler ``f`` (:func:`mmlongtail.utils.curriculum.loss_f`) moving
    the weight from the metric-learning term to classification over
    training. DCL's other half, the sampling scheduler ``g(l)``, is the
    train sampler's (``mmlongtail.ClassAwareSampler``'s ``progressive``
    schedule); this head does not sample.

    **Embedding** (our choice for detection): the input of
    ``bbox_head.fc_cls`` (the shared-FC feature, captured by a forward
    pre-hook held only during the call, so ``Shared2FCBBoxHead`` and any
    ``ConvFCBBoxHead`` work unchanged) of the RoIs sampled for the loss.
    The anchors and hard samples are mined from those RoIs' foreground
    ones, with the classifier's probabilities (through the loss's
    activation, as at test time) to tell easy from hard; background RoIs
    take no part. Box regression, masks and prediction are the parent's.

    **Progress** ``l``: by default the epoch in progress (0-based) and ``L``
    the runner's ``max_epochs`` (the paper's epochs); ``by_epoch=False``:
    the iterations done and ``max_iters``. Both come from mmengine's
    message hub (set by the runner's ``RuntimeInfoHook`` from
    ``runner.epoch`` / ``runner.iter``), so they are the same on every rank
    and follow a resumed run. ``f(l)`` is logged as ``dcl_f``.

    Example::

        roi_head=dict(
            type='mmlongtail.DCLRoIHead',
            triplet_loss=dict(type='mmlongtail.EasyAnchorTriplet',
                              margin=0.2, topk=5),
            loss_schedule=dict(p=0.3, eps=0.1),
            bbox_head=dict(type='Shared2FCBBoxHead', ...))

    Args:
        triplet_loss (dict): Config of the triplet loss (its
            ``loss_weight`` multiplies ``f(l)``).
        loss_schedule (dict, optional): ``p`` (the fraction of training
            after which the triplet weight is ``eps``; default 0.3) and
            ``eps`` (default 0.1), the values of an unofficial
            reimplementation (chpark1111/CS376_Project, ``DCL/scheduler.py``;
            we could not confirm the paper's own values), ``by_epoch``
            (default True) and ``total`` (``L``; default None: the runner's
            ``max_epochs`` or ``max_iters``).
        *args, **kwargs: Those of :class:`StandardRoIHead`.
    """

    def __init__(self,
                 *args,
                 triplet_loss: dict,
                 loss_schedule: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        fc_cls = getattr(self.bbox_head, 'fc_cls', None)
        if not isinstance(fc_cls, nn.Linear):
            raise TypeError(
                'DCLRoIHead takes its embedding at the input of a linear '
                'bbox_head.fc_cls (e.g. Shared2FCBBoxHead); '
                f'{type(self.bbox_head).__name__} has '
                f'{type(fc_cls).__name__}')
        self.triplet_loss = MODELS.build(triplet_loss)
        self.loss_schedule = self._check_schedule(loss_schedule or {})

    @staticmethod
    def _check_schedule(cfg: dict) -> dict:
        if not isinstance(cfg, dict):
            raise ValueError(f'DCLRoIHead: loss_schedule must be a dict, got '
                             f'{cfg!r}')
        unknown = set(cfg) - set(SCHEDULE_KEYS)
        if unknown:
            raise ValueError(f'DCLRoIHead: unknown loss_schedule keys '
                             f'{sorted(unknown)} ({", ".join(SCHEDULE_KEYS)})')
        out = dict(p=0.3, eps=0.1, by_epoch=True, total=None)
        out.update(cfg)
        check_loss_schedule(out['p'], out['eps'])
        if not isinstance(out['by_epoch'], bool):
            raise ValueError(f'DCLRoIHead: loss_schedule by_epoch must be a '
                             f'bool, got {out["by_epoch"]!r}')
        total = out['total']
        if total is not None and (isinstance(total, bool) or not isinstance(
                total, int) or total < 1):
            raise ValueError(f'DCLRoIHead: loss_schedule total must be an int '
                             f'>= 1 or None (the runner\'s max), got '
                             f'{total!r}')
        return out

    def schedule_progress(self) -> Tuple[int, int]:
        """``(l, L)`` now, from the message hub (see the class)."""
        unit = 'epoch' if self.loss_schedule['by_epoch'] else 'iter'
        step, runner_total = training_progress(unit)
        step = step or 0
        total = self.loss_schedule['total']
        if total is None:
            total = runner_total
        if total is None:
            raise ValueError(
                f'DCLRoIHead: the loss schedule needs L: no max_{unit}s in '
                'the message hub (no runner is training); set '
                'loss_schedule.total')
        return int(step), int(total)

    def schedule_weight(self) -> float:
        """``f(l)`` now."""
        step, total = self.schedule_progress()
        s = self.loss_schedule
        return loss_f(step, total, s['p'], s['eps'])

    def check_train_loop(self, loop) -> None:
        """Called by ``LongTailConsistencyHook`` before training: an epoch
        schedule under an iteration loop would never move (mmengine's
        ``IterBasedTrainLoop`` keeps ``epoch`` at 0)."""
        from mmengine.runner import IterBasedTrainLoop
        if self.loss_schedule['by_epoch'] and isinstance(
                loop, IterBasedTrainLoop):
            raise ValueError(
                'DCLRoIHead: loss_schedule.by_epoch=True, but the train loop '
                f'is an IterBasedTrainLoop ({loop.max_iters} iterations), '
                'whose epoch stays 0, so f(l) would stay at f(0); set '
                'loss_schedule.by_epoch=False')

    def bbox_loss(self, x: Tuple[Tensor],
                  sampling_results: List[SamplingResult]) -> dict:
        """mmdet's ``bbox_loss`` plus ``loss_triplet`` and ``dcl_f`` (see
        the class)."""
        bbox_results, out, feats = bbox_loss_with_features(
            self, x, sampling_results)
        losses = dict(out['loss_bbox'])
        if self.training:
            labels = out['bbox_targets'][0]
            cls_score = bbox_results['cls_score']
            with torch.no_grad():
                scores = classifier_scores(self.bbox_head, cls_score.detach())
            f = self.schedule_weight()
            losses['loss_triplet'] = f * self.triplet_loss(
                feats, labels, scores)
            losses['dcl_f'] = cls_score.new_tensor(f)
        bbox_results.update(loss_bbox=losses)
        return bbox_results
