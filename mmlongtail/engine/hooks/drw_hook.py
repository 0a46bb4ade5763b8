"""Deferred re-weighting (Cao et al., NeurIPS 2019): tell the losses the
epoch."""
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.runner import IterBasedTrainLoop

from mmlongtail.models.losses.ldam_loss import LDAMLoss
from mmlongtail.registry import HOOKS
from mmlongtail.utils import unwrap_model


@HOOKS.register_module()
class DRWHook(Hook):
    """Before each training epoch, give every :class:`~mmlongtail.LDAMLoss`
    of the model (each Cascade stage's too) the runner's 0-based epoch, so
    that its class-balanced re-weighting switches on at its ``drw_epoch``.

    The epoch is the runner's, which every rank shares and a resumed run
    restores, so the switch happens at the same epoch on every rank and
    after a resume exactly where an uninterrupted run makes it. Enable it
    next to the consistency hook::

        custom_hooks = [dict(type='mmlongtail.LongTailConsistencyHook'),
                        dict(type='mmlongtail.DRWHook')]

    Raises:
        ValueError: Before training, when the model has no ``LDAMLoss`` with
            a ``drw_epoch`` (the hook would do nothing), or the train loop
            counts iterations (``IterBasedTrainLoop`` has no epochs to
            switch at).
    """
    priority = 'NORMAL'

    @staticmethod
    def _losses(runner) -> list:
        return [(name, m)
                for name, m in unwrap_model(runner.model).named_modules()
                if isinstance(m, LDAMLoss)]

    def before_train(self, runner) -> None:
        if not any(m.drw_epoch is not None for _, m in self._losses(runner)):
            raise ValueError(
                'DRWHook: the model has no mmlongtail.LDAMLoss with '
                'drw_epoch set, so there is nothing to re-weight; set '
                'drw_epoch in the loss config or drop the hook')
        if isinstance(runner.train_loop, IterBasedTrainLoop):
            raise ValueError(
                'DRWHook: the train loop is an IterBasedTrainLoop, which has '
                'no epochs, so drw_epoch would never be reached; train with '
                "train_cfg=dict(type='EpochBasedTrainLoop', ...)")

    def before_train_epoch(self, runner) -> None:
        epoch = runner.epoch
        switched = []
        for name, loss in self._losses(runner):
            loss.set_epoch(epoch)
            if loss.drw_active(epoch):
                switched.append(name)
        MMLogger.get_current_instance().info(
            f'DRWHook: epoch {epoch} (0-based), class-balanced re-weighting '
            f'{"on in " + ", ".join(switched) if switched else "off"}')
