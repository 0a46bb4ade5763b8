"""FASA's sampling adaptation from the validation loss (Zang et al., ICCV
2021), as an mmengine hook."""
from typing import Optional, Union

import torch
from mmengine.hooks import Hook
from mmengine.logging import MMLogger

from mmlongtail.registry import HOOKS
from mmlongtail.utils import unwrap_model


@HOOKS.register_module()
class FASASamplingHook(Hook):
    """After every ``interval`` training epochs, run the detector in loss
    mode (eval mode, no gradients) over a validation dataloader, accumulate
    each class's classification loss in ``roi_head.feature_augment`` and
    call its :meth:`~mmlongtail.models.feature_augment.FASA.adapt`.

    The official code does this with a custom runner whose ``('val', 1)``
    workflow runs the training forward on the validation set with a loss
    that counts per-class losses (``fasa/epoch_based_dynamic_runner.py``,
    ``fasa/cross_entropy_loss.py``); mmengine's validation loop only
    predicts, so this hook runs its own pass. Each rank scores its share of
    the dataloader (a distributed sampler) and the sums are all-reduced, so
    every rank adapts the same rates. The pass leaves the model's other
    buffers as it found them (a loss that counts the labels it sees, such
    as Seesaw's, would otherwise count the scored images as training data).

    Args:
        dataloader (dict or DataLoader, optional): The images to score; they
            must carry ground truth. Defaults to the runner's
            ``val_dataloader``.
        interval (int): Epochs between adaptations. Defaults to 1.
        max_iters (int, optional): Score at most this many batches per pass
            (None: the whole dataloader).
    """

    priority = 'LOW'

    def __init__(self,
                 dataloader: Optional[Union[dict, object]] = None,
                 interval: int = 1,
                 max_iters: Optional[int] = None) -> None:
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        if max_iters is not None and max_iters < 1:
            raise ValueError(f'max_iters must be >= 1, got {max_iters}')
        self.dataloader = dataloader
        self.interval = interval
        self.max_iters = max_iters

    @staticmethod
    def _roi_head(runner):
        model = unwrap_model(runner.model)
        roi_head = getattr(model, 'roi_head', None)
        aug = getattr(roi_head, 'feature_augment', None)
        if aug is None or not hasattr(aug, 'adapt'):
            raise TypeError(
                'FASASamplingHook needs model.roi_head to be a '
                "mmlongtail.FeatureAugRoIHead with feature_augment=dict("
                f"type='mmlongtail.FASA', ...); got roi_head "
                f'{type(roi_head).__name__} with feature_augment '
                f'{type(aug).__name__}')
        return model, roi_head, aug

    def before_train(self, runner) -> None:
        self._roi_head(runner)  # refuse a model without FASA early
        from mmengine.runner import IterBasedTrainLoop
        if isinstance(getattr(runner, 'train_loop', None),
                      IterBasedTrainLoop):
            raise ValueError(
                'FASASamplingHook adapts the sampling rates after training '
                'epochs, but the train loop is an IterBasedTrainLoop, which '
                'has none (the rates would never adapt); train with an '
                'EpochBasedTrainLoop')
        if self.dataloader is None:
            self.dataloader = runner.val_dataloader
        elif isinstance(self.dataloader, dict):
            self.dataloader = runner.build_dataloader(
                self.dataloader, seed=runner.seed)

    def after_train_epoch(self, runner) -> None:
        if not self.every_n_epochs(runner, self.interval):
            return
        model, roi_head, aug = self._roi_head(runner)
        was_training = model.training
        # the pass runs the training losses, and a loss with running
        # statistics (e.g. Seesaw's cum_samples) updates them in any mode;
        # the scored images are not training data, so every buffer but the
        # pass's own accumulators is put back afterwards
        accumulators = {id(aug.val_loss), id(aug.val_count)}
        saved = [(buf, buf.clone()) for buf in model.buffers()
                 if id(buf) not in accumulators]
        model.eval()
        roi_head.collect_val_loss = True
        aug.reset_val_loss()
        try:
            with torch.no_grad():
                for i, batch in enumerate(self.dataloader):
                    if self.max_iters is not None and i >= self.max_iters:
                        break
                    data = model.data_preprocessor(batch, False)
                    model._run_forward(data, mode='loss')
        finally:
            roi_head.collect_val_loss = False
            model.train(was_training)
            with torch.no_grad():
                for buf, value in saved:
                    buf.copy_(value)
        aug.adapt()
        rates = aug.rates
        MMLogger.get_current_instance().info(
            f'FASA sampling rates after epoch {runner.epoch + 1}: mean '
            f'{float(rates.mean()):.4g}, min {float(rates.min()):.4g}, max '
            f'{float(rates.max()):.4g}')
