"""Runner hooks of the decoupling paper's classifier rebalancing (Kang et
al., ICLR 2020), beside :class:`ClassifierRetrainingHook` (cRT):

* :class:`TauNormalizationHook`: τ-normalized box classifiers for evaluation,
  post-hoc, on any checkpoint (a config delta; no training);
* :class:`LearnableWeightScalingHook`: LWS stage 2, everything frozen but one
  scale per class on the classifier's class rows.

The row arithmetic and the weight surgery (:func:`tau_normalize_`,
:func:`restore_weights`, which the calibration sweep also uses) live in
:mod:`mmlongtail.models.layers.classifier_rebalance`.
"""
from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.logging import MMLogger

from mmlongtail.models.layers.classifier_rebalance import (
    lws_heads, restore_weights, tau_normalize_)
from mmlongtail.registry import HOOKS
from mmlongtail.utils import unwrap_model
from .classifier_retraining_hook import ClassifierRetrainingHook

PHASES = ('val', 'test')


@HOOKS.register_module()
class TauNormalizationHook(Hook):
    """Evaluate with τ-normalized box classifiers (Kang et al., ICLR 2020).

    Before each validation / test epoch (after the checkpoint is loaded), the
    class rows ``w_c`` of every box head's ``fc_cls`` (Cascade stages
    included; rows from the loss's layout, so Seesaw's objectness rows, the
    background row and BAGS's "others" rows stay) become
    ``w_c / ||w_c||^tau``; biases are kept. The original weights are put
    back after the epoch, so a validation during training does not change
    the weights being trained.

    Apply it to any trained checkpoint from the config::

        custom_hooks = [dict(type='mmlongtail.TauNormalizationHook', tau=1.0)]

    Args:
        tau (float): The exponent (Kang et al. pick it on a validation set;
            ``tools/calibrate.py --param tau`` does that on a held-out part
            of the training set). Required.
        phases (Sequence[str]): ``'val'`` and/or ``'test'``. Defaults to both.
    """
    priority = 'LOW'

    def __init__(self,
                 tau: Optional[float] = None,
                 phases: Sequence[str] = PHASES) -> None:
        if tau is None or isinstance(tau, bool) or not isinstance(
                tau, (int, float)):
            raise ValueError('TauNormalizationHook: tau is required (a number;'
                             ' 0 changes nothing, 1 gives unit-norm class '
                             f'rows), got {tau!r}')
        if isinstance(phases, str):
            phases = (phases, )
        bad = [p for p in phases if p not in PHASES]
        if bad or not phases:
            raise ValueError(f'TauNormalizationHook: phases must be some of '
                             f'{PHASES}, got {list(phases)}')
        self.tau = float(tau)
        self.phases = tuple(phases)
        self._saved: Optional[list] = None

    def _apply(self, runner, phase: str) -> None:
        if phase not in self.phases:
            return
        self._saved = tau_normalize_(unwrap_model(runner.model), self.tau)
        MMLogger.get_current_instance().info(
            f'TauNormalizationHook: tau={self.tau} on the class rows of '
            f'{[n for n, _ in self._saved]} for {phase}')

    def _restore(self, runner) -> None:
        if self._saved is not None:
            restore_weights(unwrap_model(runner.model), self._saved)
            self._saved = None

    def before_val_epoch(self, runner) -> None:
        self._apply(runner, 'val')

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._restore(runner)

    def before_test_epoch(self, runner) -> None:
        self._apply(runner, 'test')

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._restore(runner)


@HOOKS.register_module()
class LearnableWeightScalingHook(ClassifierRetrainingHook):
    """Stage 2 of learnable weight scaling, LWS (Kang et al., ICLR 2020).

    The box heads' classifiers must be
    :class:`~mmlongtail.models.layers.LWSLinear`
    (``cls_predictor_cfg=dict(type='mmlongtail.LWSLinear')``). Before
    training, the hook (as :class:`ClassifierRetrainingHook`, which it
    extends) loads the stage-1 checkpoint (every weight, the classifier's
    included; not on resume), marks each head's class rows from its loss's
    layout, and freezes every parameter except the per-class scales, with
    batch-norm statistics frozen too. Only ``fc_cls.lws.scale`` changes;
    background / objectness rows keep scale 1.

    Sample class-balanced (``mmlongtail.ClassAwareSampler``, ``q=0``) or with
    repeat factors, as Kang et al. do for stage 2.

    Args:
        checkpoint (str, optional): Stage-1 checkpoint. None: only mark and
            freeze (use ``load_from``).
        trainable (Sequence[str]): Module patterns left trainable. Defaults
            to the scales, ``('*bbox_head*.fc_cls.lws',)``.
        strict (bool): Passed to mmengine's ``load_state_dict``. Defaults to
            False (the stage-1 checkpoint has no scales).
        freeze_norm (bool): Keep frozen batch-norm layers in eval mode.
            Defaults to True.
    """

    def __init__(self,
                 checkpoint: Optional[str] = None,
                 trainable: Sequence[str] = ('*bbox_head*.fc_cls.lws', ),
                 strict: bool = False,
                 freeze_norm: bool = True) -> None:
        super().__init__(
            checkpoint=checkpoint,
            trainable=trainable,
            reinit_trainable=False,
            strict=strict,
            freeze_norm=freeze_norm)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        heads = lws_heads(unwrap_model(runner.model))
        MMLogger.get_current_instance().info(
            'LearnableWeightScalingHook: one scale per class row in ' +
            ', '.join(f'{n} ({int(h.fc_cls.lws.scaled.sum())} of '
                      f'{h.fc_cls.out_features} rows)' for n, h in heads))
