"""A test-only hook that records what each rank trained on.

Used by ``tests/test_dist_train.py`` (in processes launched by
``tools/dist_train.sh``, where a config names it as
``type='longtail_probe.LongTailProbeHook'`` with ``tests/`` on PYTHONPATH)
and by ``tests/test_resume.py`` (registered on a Runner directly).

For every rank it saves ``<work_dir>/probe_rank<r>.pt`` holding:

* ``indices``: the dataset index of every sample of every iteration, in
  the order the dataloader gave them (read from the samples' ``img_id``);
* ``losses``: the total loss of every iteration;
* ``labels``: per Seesaw loss, the labels of every call, concatenated;
* ``eqlv2_local``: per EQLv2 loss, this rank's own summed ``(pos_grad,
  neg_grad)`` contributions (recomputed in a pre-hook with the loss's
  current weights, before the loss all-reduces them);
* ``buffers``: every long-tail statistic buffer after training;
* ``streams``: ``{epoch: the sampler's whole epoch stream}`` for every
  epoch trained, when the sampler is a RepeatFactorSampler;
* ``iter``, ``epoch``, ``rank``, ``world_size``.
"""
import os
import os.path as osp
from collections import defaultdict

import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

STAT_BUFFERS = ('cum_samples', 'pos_grad', 'neg_grad', 'pos_neg')


class LongTailProbeHook(Hook):
    """Record indices, losses, loss inputs and statistics (see module doc)."""

    priority = 'VERY_LOW'

    def __init__(self, tag: str = '') -> None:
        self.tag = tag
        self.indices = []
        self.losses = []
        self.labels = defaultdict(list)
        self.eqlv2_local = {}
        self.epochs = set()
        self._handles = []

    def _model(self, runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def before_train(self, runner) -> None:
        dataset = runner.train_dataloader.dataset
        self.index_of = {
            int(dataset.get_data_info(i)['img_id']): i
            for i in range(len(dataset))
        }
        from mmlongtail.models.losses import EQLv2Loss, SeesawLoss
        from mmlongtail.models.losses.eqlv2_loss import eqlv2_loss
        for name, module in self._model(runner).named_modules():
            if isinstance(module, SeesawLoss):
                def seesaw_pre(mod, args, name=name):
                    self.labels[name].append(args[1].detach().clone())
                self._handles.append(
                    module.register_forward_pre_hook(seesaw_pre))
            elif isinstance(module, EQLv2Loss):
                self.eqlv2_local[name] = torch.zeros(2, module.num_classes)

                def eqlv2_pre(mod, args, kwargs, name=name):
                    weights = kwargs.get('label_weights')
                    if weights is None and len(args) > 2:
                        weights = args[2]
                    _, pos, neg = eqlv2_loss(args[0].detach(), args[1],
                                             *mod.get_weights(), weights)
                    # kept on the CPU: the model may sit on a GPU
                    self.eqlv2_local[name] += torch.stack([pos, neg]).cpu()
                self._handles.append(
                    module.register_forward_pre_hook(
                        eqlv2_pre, with_kwargs=True))

    def before_train_epoch(self, runner) -> None:
        self.epochs.add(runner.epoch)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self.indices.append([
            self.index_of[int(s.metainfo['img_id'])]
            for s in data_batch['data_samples']
        ])
        self.losses.append(float(outputs['loss']))

    def after_train(self, runner) -> None:
        for h in self._handles:
            h.remove()
        rank, world_size = get_dist_info()
        buffers = {
            name: buf.detach().clone()
            for name, buf in self._model(runner).named_buffers()
            if name.split('.')[-1] in STAT_BUFFERS
        }
        sampler = runner.train_dataloader.sampler
        streams = {}
        if hasattr(sampler, 'epoch_indices'):
            streams = {e: sampler.epoch_indices(e) for e in self.epochs}
        torch.save(
            dict(
                indices=self.indices,
                losses=self.losses,
                labels={k: torch.cat(v) for k, v in self.labels.items()},
                eqlv2_local=self.eqlv2_local,
                buffers=buffers,
                streams=streams,
                iter=runner.iter,
                epoch=runner.epoch,
                rank=rank,
                world_size=world_size),
            osp.join(runner.work_dir, f'probe{self.tag}_rank{rank}.pt'))


def tiny_config(data_root: str, num_classes: int, work_dir: str,
                num_images: int = 8, batch_size: int = 2,
                max_epochs: int = 1, cascade_eqlv2: bool = False):
    """The flagship demo recipe (Seesaw + Norm Mask + RFS) shrunk to a few
    iterations on the ``tiny_lvis`` dataset.

    With ``cascade_eqlv2`` the RoI head becomes a 2-stage Cascade whose first
    stage keeps the Seesaw head and whose second uses EQLv2, so one run
    exercises both kinds of statistics.
    """
    import copy
    from unittest import mock

    from mmlongtail_bench.demo import DATA_ROOT_VAR, demo_config
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    with mock.patch.dict(os.environ, {DATA_ROOT_VAR: data_root}):
        cfg = demo_config(
            osp.join(
                root,
                'configs/demo/seesaw_mask_rcnn_r18_light_rfs_synthetic.py'),
            work_dir)
    n = num_classes
    head = cfg.model.roi_head
    head.bbox_head.num_classes = n
    head.bbox_head.loss_cls.num_classes = n
    head.mask_head.num_classes = n
    if cascade_eqlv2:
        eqlv2_head = copy.deepcopy(head.bbox_head)
        eqlv2_head.loss_cls = dict(
            type='mmlongtail.EQLv2Loss', num_classes=n, loss_weight=1.0)
        eqlv2_head.pop('cls_predictor_cfg', None)
        rcnn = cfg.model.train_cfg.rcnn
        rcnn2 = copy.deepcopy(rcnn)
        rcnn2.assigner.update(pos_iou_thr=0.6, neg_iou_thr=0.6,
                              min_pos_iou=0.6)
        cfg.model.roi_head = dict(
            type='CascadeRoIHead',
            num_stages=2,
            stage_loss_weights=[1, 0.5],
            bbox_roi_extractor=head.bbox_roi_extractor,
            bbox_head=[copy.deepcopy(head.bbox_head), eqlv2_head],
            mask_roi_extractor=head.mask_roi_extractor,
            mask_head=head.mask_head)
        cfg.model.train_cfg.rcnn = [rcnn, rcnn2]
    loader = cfg.train_dataloader
    loader.batch_size = batch_size
    loader.num_workers = 0
    loader.persistent_workers = False
    loader.dataset.indices = num_images
    # no validation (mmengine validates after the last epoch otherwise)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.train_cfg.max_epochs = max_epochs
    cfg.train_cfg.val_interval = max_epochs + 1
    cfg.default_hooks.checkpoint = dict(
        type='mmlongtail.CrashSafeCheckpointHook', interval=1)
    cfg.default_hooks.logger.interval = 1
    cfg.log_level = 'WARNING'
    return cfg
