"""LDS + FDS box heads in real training: the benchmark's FDS config (with
LDS added) trains two epochs through mmengine's Runner, its hook folds the
FDS statistics at each epoch end before the checkpoint; the consistency
hook refuses a run without it and LDS on decoded boxes."""
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.runner import Runner

from mmlongtail.apis.runner_setup import build_runner_config
from mmlongtail.engine import (FeatureDistributionSmoothingHook,
                               LongTailConsistencyHook,
                               check_longtail_consistency)
from mmlongtail.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs/benchmark/fds.py')
LDS = dict(value_range=(-4.0, 4.0), num_bins=80)


def _cfg(synthetic40, work_dir, monkeypatch):
    monkeypatch.setenv('LONGTAIL_BENCH_ROOT', synthetic40['root'])
    cfg = build_runner_config(CONFIG, work_dir=str(work_dir))
    cfg.default_scope = 'mmdet'
    cfg.model.roi_head.bbox_head.lds = LDS
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.dataset.indices = 2  # one step per epoch
    cfg.train_cfg.max_epochs = 2
    cfg.train_cfg.val_interval = 2
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0)]
    cfg.optim_wrapper.optimizer.lr = 0.01
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.log_level = 'WARNING'
    return cfg


def test_lds_fds_head_trains_and_checkpoints(synthetic40, tmp_path,
                                             monkeypatch):
    cfg = _cfg(synthetic40, tmp_path, monkeypatch)
    runner = Runner.from_cfg(cfg)
    runner.train()
    head = runner.model.roi_head.bbox_head
    assert runner.iter == 2
    assert int(head.fds.epoch) == 2
    assert head.fds.acc_count.sum() == 0  # folded at the epoch end
    positives = int(head.fds.num_samples_tracked.sum())
    assert positives > 0
    assert int(head.lds.counts[0].sum()) == positives
    assert torch.isfinite(head.fds.smoothed_var).all()
    assert not torch.equal(head.fds.running_mean,
                           torch.zeros_like(head.fds.running_mean))
    for p in head.parameters():
        assert torch.isfinite(p).all()
    # the epoch-1 checkpoint holds the statistics folded after epoch 0
    # (which calibrated epoch 1) and no partial accumulation
    state = torch.load(
        osp.join(tmp_path, 'epoch_1.pth'), weights_only=False)['state_dict']
    prefix = 'roi_head.bbox_head.fds.'
    assert int(state[prefix + 'epoch']) == 1
    assert state[prefix + 'acc_count'].sum() == 0
    assert 0 < int(state[prefix + 'num_samples_tracked'].sum()) < positives


def _head(**kw):
    return MODELS.build(
        dict(
            type='mmlongtail.LDSFDSShared2FCBBoxHead',
            num_classes=3,
            in_channels=4,
            fc_out_channels=8,
            roi_feat_size=7,
            **kw))


def test_consistency_hook_refuses_fds_without_its_hook():
    model = torch.nn.ModuleDict(dict(bbox_head=_head(fds={})))
    hook = LongTailConsistencyHook()
    train_loop = SimpleNamespace(dataloader=None)
    runner = SimpleNamespace(
        model=model, train_loop=train_loop,
        hooks=[hook, FeatureDistributionSmoothingHook()])
    hook.before_train(runner)
    runner.hooks = [hook]
    with pytest.raises(ValueError, match='FeatureDistributionSmoothingHook'):
        hook.before_train(runner)
    # the FDS hook itself needs an epoch-based loop
    runner.train_loop = SimpleNamespace(max_iters=10)
    with pytest.raises(ValueError, match='epoch-based'):
        FeatureDistributionSmoothingHook().before_train(runner)


def test_consistency_check_refuses_lds_on_decoded_boxes():
    head = _head(lds=LDS)
    head.reg_decoded_bbox = True  # set after the constructor's own check
    with pytest.raises(ValueError, match='reg_decoded_bbox'):
        check_longtail_consistency(torch.nn.ModuleDict(dict(bbox_head=head)))
