"""Epoch boundaries for Feature Distribution Smoothing (Yang et al., ICML
2021): fold each epoch's feature statistics and start the next epoch."""
from typing import List

from mmengine.hooks import Hook
from mmengine.logging import MMLogger

from mmlongtail.models.layers.imbalanced_regression import \
    FeatureDistributionSmoothing
from mmlongtail.registry import HOOKS
from mmlongtail.utils import unwrap_model


def fds_modules(model) -> List[FeatureDistributionSmoothing]:
    """Every :class:`FeatureDistributionSmoothing` in ``model`` (a DDP
    wrapper is unwrapped)."""
    return [
        m for m in unwrap_model(model).modules()
        if isinstance(m, FeatureDistributionSmoothing)
    ]


@HOOKS.register_module()
class FeatureDistributionSmoothingHook(Hook):
    """Tell every FDS module of the model where the training epochs end.

    After each training epoch, before the checkpoint is written (this hook's
    priority is ``NORMAL``, mmengine's checkpoint hooks' ``VERY_LOW``), the
    modules fold the epoch's accumulated features into their running
    statistics and smooth them
    (:meth:`~mmlongtail.models.layers.FeatureDistributionSmoothing.end_epoch`),
    so a checkpoint of epoch ``e`` holds the statistics that calibrate epoch
    ``e + 1``. Before training their epoch counter is aligned with the loop's
    (a no-op on resume; a model loaded with ``load_from`` restarts its
    schedule). Needs an epoch-based training loop. The configs add it::

        custom_hooks = [
            dict(type='mmlongtail.LongTailConsistencyHook'),
            dict(type='mmlongtail.FeatureDistributionSmoothingHook')
        ]
    """

    priority = 'NORMAL'

    def before_train(self, runner) -> None:
        modules = fds_modules(runner.model)
        if not modules:
            return
        if not hasattr(runner.train_loop, 'max_epochs') or type(
                runner.train_loop).__name__ == 'IterBasedTrainLoop':
            raise ValueError(
                'FeatureDistributionSmoothingHook needs an epoch-based '
                'training loop (FDS folds its statistics at epoch ends), got '
                f'{type(runner.train_loop).__name__}')
        for module in modules:
            if module.set_epoch(runner.epoch):
                MMLogger.get_current_instance().info(
                    f'FDS: epoch counter set to the loop\'s epoch '
                    f'{runner.epoch} (statistics kept, accumulators cleared)')

    def after_train_epoch(self, runner) -> None:
        for module in fds_modules(runner.model):
            module.end_epoch(runner.epoch)
