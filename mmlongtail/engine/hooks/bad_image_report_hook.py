"""``mmlongtail.BadImageReportHook``: the number of bad images skipped in
training, over every dataloader worker and rank, logged each epoch.

``mmlongtail.LoadImageChecked(bad_image='skip')`` logs each skipped image with
its path from the worker that met it, and counts it in shared memory, so the
process that built the dataset sees its workers' counts. This hook reads those
counts after each training epoch, sums them over ranks, logs them and puts
them in the message hub.
"""
from typing import Dict, Iterator, List

import torch
from mmengine.dist import get_comm_device
from mmengine.hooks import Hook

from mmlongtail.datasets.transforms.loading import KINDS, LoadImageChecked
from mmlongtail.registry import HOOKS
from mmlongtail.utils.dist import all_reduce_sum_


def _datasets(dataset) -> Iterator:
    """``dataset`` and the datasets it wraps (mmengine's ConcatDataset,
    RepeatDataset, ClassBalancedDataset, mmdet's MultiImageMixDataset)."""
    yield dataset
    for inner in getattr(dataset, 'datasets', None) or []:
        yield from _datasets(inner)
    inner = getattr(dataset, 'dataset', None)
    if inner is not None:
        yield from _datasets(inner)


def image_loaders(dataset) -> List[LoadImageChecked]:
    """The :class:`LoadImageChecked` transforms of ``dataset``'s pipelines,
    wrapped datasets' included (each once)."""
    found: Dict[int, LoadImageChecked] = {}
    for ds in _datasets(dataset):
        for t in getattr(getattr(ds, 'pipeline', None), 'transforms', []):
            if isinstance(t, LoadImageChecked):
                found[id(t)] = t
    return list(found.values())


@HOOKS.register_module()
class BadImageReportHook(Hook):
    """After each training epoch, log the images the training pipeline's
    ``LoadImageChecked`` skipped: in that epoch and since the start of this
    process, summed over ranks and dataloader workers, by kind.

    The totals are also put in the message hub as runtime info
    ``bad_images_skipped`` (since the start) and
    ``bad_images_skipped_epoch``. Under ``bad_image='error'`` nothing is
    skipped and the hook logs nothing. Each skip is also logged, with its
    path, when it happens. In an iteration-based loop (one "epoch" for the
    whole run) the report comes once, at the end of training.

    Example::

        custom_hooks = [dict(type='mmlongtail.BadImageReportHook')]
    """
    priority = 'LOW'

    def __init__(self) -> None:
        self._reported = 0

    def after_train_epoch(self, runner) -> None:
        """Log the skips of the epoch that ended (every rank calls this)."""
        loaders = image_loaders(runner.train_dataloader.dataset)
        counts = torch.zeros(len(KINDS), dtype=torch.int64)
        for t in loaders:
            counts += torch.tensor(list(t.skipped.by_kind().values()))
        counts = all_reduce_sum_(counts.to(get_comm_device())).cpu()
        total = int(counts.sum())
        epoch = total - self._reported
        self._reported = total
        runner.message_hub.update_info('bad_images_skipped', total,
                                       resumed=False)
        runner.message_hub.update_info('bad_images_skipped_epoch', epoch,
                                       resumed=False)
        if total:
            kinds = ', '.join(f'{k} {int(n)}' for k, n in zip(KINDS, counts)
                              if n)
            runner.logger.warning(
                f'Epoch {runner.epoch + 1}: {epoch} bad image(s) skipped by '
                f'LoadImageChecked in this epoch, {total} since the start '
                f'(all ranks and workers; {kinds}); each is logged above '
                'with its path')
