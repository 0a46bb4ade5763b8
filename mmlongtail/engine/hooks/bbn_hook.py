"""BBN's cumulative learning schedule (Zhou et al., CVPR 2020), driven by
the runner's progress, and the check that a BBN run is wired up.

:class:`BBNCumulativeLearningHook` sets ``α(t) = 1 - (t / T)^2``
(:func:`~mmlongtail.models.roi_heads.cumulative_alpha`) on the model's
:class:`~mmlongtail.models.roi_heads.BBNRoIHead` before every training
iteration. ``t`` is the runner's epoch (default, as the official code) or
iteration, which every rank shares and a resumed run restores, so ``α`` needs
no state of its own and survives a resume exactly.

:func:`check_bbn_setup` (run by
:class:`~mmlongtail.engine.LongTailConsistencyHook` before training) refuses
a BBN head without its two-stream data or its hook, and two-stream data
without the head.
"""
from typing import Optional

from mmengine.hooks import Hook
from torch.utils.data import BatchSampler

from mmlongtail.registry import HOOKS
from mmlongtail.utils import unwrap_model

BY = ('epoch', 'iter')


def find_bbn_heads(model) -> list:
    """Every :class:`~mmlongtail.models.roi_heads.BBNRoIHead` of ``model``
    (a DDP wrapper is unwrapped)."""
    from mmlongtail.models.roi_heads import BBNRoIHead
    return [m for m in unwrap_model(model).modules()
            if isinstance(m, BBNRoIHead)]


@HOOKS.register_module()
class BBNCumulativeLearningHook(Hook):
    """Set BBN's ``α(t) = 1 - (t / T)^2`` before each training iteration.

    Add it to a BBN config::

        custom_hooks = [dict(type='mmlongtail.BBNCumulativeLearningHook')]

    Args:
        by (str): ``'epoch'`` (default): ``t = runner.epoch`` (0-based, the
            official ``epoch - 1``), constant within an epoch, ``T`` the
            number of epochs; ``'iter'``: ``t = runner.iter``, ``T`` the
            number of iterations.
        total (int, optional): ``T``; defaults to ``runner.max_epochs`` or
            ``runner.max_iters``. (The official code divides by 100 for 90
            epochs and 200 for 180.)
    """

    priority = 'NORMAL'

    def __init__(self, by: str = 'epoch', total: Optional[int] = None):
        if by not in BY:
            raise ValueError(f'BBNCumulativeLearningHook: by must be one of '
                             f'{BY}, got {by!r}')
        if total is not None and (isinstance(total, bool)
                                  or not isinstance(total, int)
                                  or total < 1):
            raise ValueError('BBNCumulativeLearningHook: total must be a '
                             f'positive int or None, got {total!r}')
        self.by = by
        self.total = total

    def alpha(self, runner) -> float:
        """``α`` at the runner's current progress."""
        from mmlongtail.models.roi_heads import cumulative_alpha
        if self.by == 'epoch':
            t, total = runner.epoch, runner.max_epochs
        else:
            t, total = runner.iter, runner.max_iters
        return cumulative_alpha(t, self.total or total)

    def before_train(self, runner) -> None:
        if not find_bbn_heads(runner.model):
            raise ValueError(
                'BBNCumulativeLearningHook: the model has no '
                "mmlongtail.BBNRoIHead whose alpha it could set; remove the "
                'hook or use the BBN RoI head')
        from mmengine.runner import IterBasedTrainLoop
        if self.by == 'epoch' and isinstance(
                getattr(runner, 'train_loop', None), IterBasedTrainLoop):
            raise ValueError(
                "BBNCumulativeLearningHook: by='epoch', but the train loop "
                'is an IterBasedTrainLoop, whose epoch stays 0, so alpha '
                "would stay 1 (the re-balancing branch never trained); set "
                "by='iter'")
        loop = getattr(runner, 'train_loop', None)
        last = getattr(loop, f'max_{self.by}s', None)
        if self.total is not None and last is not None and \
                self.total < last - 1:
            raise ValueError(
                f'BBNCumulativeLearningHook: total={self.total}, but '
                f'training runs {last} {self.by}s, so alpha = 1 - (t / T)^2 '
                f'would leave [0, 1] at {self.by} {self.total + 1} '
                f'(0-based); set total >= {last - 1} or None (the loop\'s '
                f'max_{self.by}s)')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        alpha = self.alpha(runner)
        for head in find_bbn_heads(runner.model):
            head.set_alpha(alpha)
        runner.message_hub.update_scalar('train/bbn_alpha', alpha)


def check_bbn_setup(runner) -> None:
    """Refuse a half-wired BBN run, naming what is missing.

    A ``BBNRoIHead`` needs the training dataset wrapped in
    ``BBNStreamDataset``, sampled by ``BBNPairSampler`` in plain batches
    (``batch_sampler=None``) of even size, and the
    ``BBNCumulativeLearningHook``; ``BBNStreamDataset`` and
    ``BBNPairSampler`` need a ``BBNRoIHead`` (a plain head would train on
    both streams as one).

    Raises:
        ValueError: Naming the part and what to set.
    """
    from mmlongtail.datasets import BBNPairSampler, BBNStreamDataset
    heads = find_bbn_heads(runner.model)
    loader = getattr(runner.train_loop, 'dataloader', None)
    dataset = getattr(loader, 'dataset', None)
    sampler = getattr(loader, 'sampler', None)
    two_streams = isinstance(dataset, BBNStreamDataset) or isinstance(
        sampler, BBNPairSampler)
    if not heads:
        if two_streams:
            raise ValueError(
                'BBNStreamDataset / BBNPairSampler feed BBN\'s two streams, '
                'but the model has no mmlongtail.BBNRoIHead to keep them '
                'apart (a plain head would train on both as one stream); '
                'use the BBN RoI head or the plain dataset and sampler')
        return
    if not isinstance(dataset, BBNStreamDataset):
        raise ValueError(
            'BBNRoIHead needs train_dataloader.dataset of type '
            f"'mmlongtail.BBNStreamDataset', got {type(dataset).__name__}")
    if not isinstance(sampler, BBNPairSampler):
        raise ValueError(
            'BBNRoIHead needs train_dataloader.sampler of type '
            f"'mmlongtail.BBNPairSampler', got {type(sampler).__name__}")
    batches = getattr(loader, 'batch_sampler', None)
    if type(batches) is not BatchSampler:
        raise ValueError(
            'BBNRoIHead: set train_dataloader.batch_sampler=None; '
            f'{type(batches).__name__} regroups the interleaved (uniform, '
            'reversed) stream, so a batch could miss a stream')
    if batches.batch_size % 2:
        raise ValueError(
            f'BBNRoIHead: train_dataloader.batch_size is '
            f'{batches.batch_size}; it must be even (half of each batch '
            'from each stream)')
    if not any(isinstance(h, BBNCumulativeLearningHook)
               for h in runner.hooks):
        raise ValueError(
            'BBNRoIHead needs '
            "dict(type='mmlongtail.BBNCumulativeLearningHook') in "
            'custom_hooks (it sets alpha from the runner\'s progress)')
