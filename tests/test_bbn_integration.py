"""BBN-style cumulative learning end to end: the benchmark config trains a
few real iterations on a tiny synthetic dataset (both streams, alpha moving
with the epoch, both branches learning) and predicts through the test
rule."""
import os
import os.path as osp
from unittest import mock

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmlongtail.engine import LastMetricsHook

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs/benchmark/bbn.py')


def test_bbn_trains_and_predicts(synthetic40, tmp_path):
    with mock.patch.dict(os.environ,
                         {'LONGTAIL_BENCH_ROOT': synthetic40['root']}):
        cfg = Config.fromfile(CONFIG)
    cfg.work_dir = str(tmp_path)
    cfg.default_scope = 'mmdet'
    cfg.train_dataloader.batch_size = 4  # 2 conventional + 2 re-balancing
    cfg.train_dataloader.dataset.dataset.indices = 4
    cfg.val_dataloader.dataset.indices = 2
    cfg.train_cfg.max_epochs = 2
    cfg.train_cfg.val_interval = 2
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0)]
    cfg.optim_wrapper.optimizer.lr = 0.01
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=2)
    cfg.default_hooks.logger.interval = 1
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    head = runner.model.roi_head.bbox_head
    before = {k: v.detach().clone() for k, v in head.named_parameters()}
    last = LastMetricsHook()
    runner.register_hook(last)
    seen = []

    def record(module, args):
        streams = module.batch_streams(args[2])
        seen.append((module.bbn_alpha, streams.count(0), streams.count(1)))

    orig = runner.model.roi_head.loss

    def loss(*args):
        record(runner.model.roi_head, args)
        return orig(*args)

    runner.model.roi_head.loss = loss
    runner.train()  # validates (predicts) after its last epoch
    assert runner.iter == 4  # 4 pairs per epoch, 2 pairs per batch
    # alpha = 1 - (epoch / 2)^2: 1 in epoch 0, 0.75 in epoch 1; each batch
    # holds two images of each stream
    assert seen == [(1.0, 2, 2)] * 2 + [(0.75, 2, 2)] * 2
    hub = runner.message_hub
    for key in ('loss_cls', 'loss_bbox', 'loss_mask', 'acc_rb', 'bbn_alpha'):
        value = hub.get_scalar(f'train/{key}').current()
        assert torch.isfinite(torch.tensor(value)), key
    after = dict(head.named_parameters())
    for name in ('shared_fcs.0.weight', 'rb_shared_fcs.0.weight',
                 'fc_cls.weight', 'fc_reg.weight'):
        assert not torch.equal(before[name], after[name]), name
    for key in ('lvis/bbox_AP', 'lvis/segm_AP', 'lvis/bbox_APr'):
        assert -1.0 <= last.metrics[key] <= 1.0
