"""The one-stage track end to end: the light RetinaNet with Equalized Focal
Loss and RFS trains a few iterations through mmengine's Runner on a tiny
synthetic set, checkpoints EFL's statistics, resumes them exactly and
evaluates box AP, AP_r, AP_c, AP_f."""
import os
import os.path as osp
from unittest import mock

import pytest
import torch
from mmengine.runner import Runner

from mmlongtail.engine import LastMetricsHook
from mmlongtail_bench.benchmark import DATA_ROOT_VAR
from mmlongtail_bench.demo import demo_config

CONFIG = 'configs/benchmark/retinanet_efl_rfs.py'
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
STATS = ('pos_grad', 'neg_grad', 'pos_neg')


def _cfg(tiny_lvis, work_dir, max_epochs):
    # the benchmark config finds the dataset through the variable it reads
    with mock.patch.dict(os.environ, {DATA_ROOT_VAR: tiny_lvis['root']}):
        cfg = demo_config(osp.join(ROOT, CONFIG), str(work_dir))
    assert cfg.val_evaluator.ann_file == tiny_lvis['val']
    n = tiny_lvis['cfg'].num_classes
    cfg.model.bbox_head.num_classes = n
    cfg.model.bbox_head.loss_cls.num_classes = n
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.dataset.indices = 8
    cfg.train_cfg.max_epochs = max_epochs
    cfg.train_cfg.val_interval = max_epochs
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0)]
    cfg.optim_wrapper.optimizer.lr = 0.01
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.default_hooks.logger.interval = 1
    cfg.log_level = 'WARNING'
    return cfg


@pytest.fixture(scope='module')
def trained(tiny_lvis, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('onestage')
    cfg = _cfg(tiny_lvis, work_dir, max_epochs=1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    loss = runner.model.bbox_head.loss_cls
    return work_dir, runner, {k: getattr(loss, k).clone() for k in STATS}


def test_trains_and_checkpoints_the_statistics(trained):
    work_dir, runner, stats = trained
    assert runner.iter >= 2
    assert stats['pos_grad'].sum() > 0 and stats['neg_grad'].sum() > 0
    assert (stats['pos_neg'] < 1).any()  # the factors moved
    saved = torch.load(osp.join(work_dir, 'epoch_1.pth'))['state_dict']
    for k in STATS:
        assert torch.equal(saved[f'bbox_head.loss_cls.{k}'], stats[k]), k
    loss = runner.message_hub.log_scalars['train/loss_cls'].current()
    assert torch.isfinite(torch.tensor(loss))


def test_resumes_exactly_and_evaluates_boxes(trained, tiny_lvis):
    work_dir, first, stats = trained
    cfg = _cfg(tiny_lvis, work_dir, max_epochs=2)
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    seen = {}
    loss = runner.model.bbox_head.loss_cls

    def remember(module, args):
        for k in STATS:
            seen.setdefault(k, getattr(module, k).clone())

    handle = loss.register_forward_pre_hook(remember)
    last = LastMetricsHook()
    runner.register_hook(last)
    runner.train()  # validates after its last epoch
    handle.remove()
    assert runner.epoch == 2 and runner.iter > first.iter
    for k in STATS:  # the first resumed step sees the saved statistics
        assert torch.equal(seen[k], stats[k]), k
    assert not torch.equal(loss.pos_grad, stats['pos_grad'])  # and adds
    for k in ('AP', 'AP50', 'APr', 'APc', 'APf'):
        assert -1.0 <= last.metrics[f'lvis/bbox_{k}'] <= 1.0
    assert not any(key.startswith('lvis/segm') for key in last.metrics)
