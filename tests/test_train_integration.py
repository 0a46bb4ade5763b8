"""End to end: train the flagship demo recipe a few iterations on a tiny
synthetic dataset, checkpoint, resume, evaluate with AP_r / AP_c / AP_f."""
import os
import os.path as osp
from unittest import mock

import pytest
import torch
from mmengine.runner import Runner

from mmlongtail.engine import LastMetricsHook
from mmlongtail_bench.demo import DATA_ROOT_VAR, demo_config

CONFIG = 'configs/demo/seesaw_mask_rcnn_r18_light_rfs_synthetic.py'
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _cfg(tiny_lvis, work_dir, max_epochs):
    # the config finds the dataset through the variable it reads
    with mock.patch.dict(os.environ, {DATA_ROOT_VAR: tiny_lvis['root']}):
        cfg = demo_config(osp.join(ROOT, CONFIG), str(work_dir))
    assert cfg.val_evaluator.ann_file == tiny_lvis['val']
    n = tiny_lvis['cfg'].num_classes
    head = cfg.model.roi_head
    head.bbox_head.num_classes = n
    head.bbox_head.loss_cls.num_classes = n
    head.mask_head.num_classes = n
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.train_dataloader.dataset.indices = 6
    cfg.val_dataloader.num_workers = 0
    cfg.val_dataloader.persistent_workers = False
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
    work_dir = tmp_path_factory.mktemp('train')
    cfg = _cfg(tiny_lvis, work_dir, max_epochs=1)
    # the first half trains only; the resumed half validates at its end
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    counts = runner.model.roi_head.bbox_head.loss_cls.cum_samples.clone()
    return work_dir, runner, counts


def test_trains_and_checkpoints(trained):
    work_dir, runner, counts = trained
    assert runner.iter >= 2
    ckpt = torch.load(osp.join(work_dir, 'epoch_1.pth'))
    saved = ckpt['state_dict']['roi_head.bbox_head.loss_cls.cum_samples']
    assert torch.equal(saved, counts)
    assert counts.sum() > 0
    losses = runner.message_hub.log_scalars
    for key in ('train/loss', 'train/loss_cls_classes', 'train/loss_mask'):
        assert key in losses, sorted(losses)
        assert torch.isfinite(torch.tensor(losses[key].current()))


@pytest.fixture(scope='module')
def resumed(trained, tiny_lvis):
    """Resume the run for a second epoch; it validates after that epoch."""
    work_dir, first, counts = trained
    cfg = _cfg(tiny_lvis, work_dir, max_epochs=2)
    cfg.resume = True
    runner = Runner.from_cfg(cfg)
    seen = {}

    def remember(module, args):
        seen.setdefault('counts', module.cum_samples.clone())

    # statistics restored from the checkpoint before the first resumed step
    loss = runner.model.roi_head.bbox_head.loss_cls
    handle = loss.register_forward_pre_hook(remember)
    last = LastMetricsHook()
    runner.register_hook(last)
    runner.train()  # validates after its last epoch
    handle.remove()
    return runner, seen, last.metrics


def test_resume_then_evaluate(trained, resumed):
    work_dir, first, counts = trained
    runner, seen, metrics = resumed
    assert runner.epoch == 2 and runner.iter > first.iter
    assert torch.equal(seen['counts'], counts)
    for task in ('bbox', 'segm'):
        for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc',
                  'APf'):
            value = metrics[f'lvis/{task}_{k}']
            assert -1.0 <= value <= 1.0
    assert osp.isfile(osp.join(work_dir, 'lvis.per_class.json'))


def test_longtail_report_from_the_demo_run(trained, resumed, tiny_lvis):
    """tools/analyze_longtail.py's logic on what the demo recipe wrote."""
    from mmlongtail.analysis import analyze_longtail
    work_dir = trained[0]
    out = analyze_longtail(
        osp.join(work_dir, 'lvis.per_class.json'),
        osp.join(work_dir, 'longtail'),
        stats=tiny_lvis['train'],
        checkpoint=osp.join(work_dir, 'epoch_2.pth'))
    for key in ('summary', 'weight_norms'):
        assert osp.getsize(out[key]) > 0
    pngs = [p for p in out.values() if p.endswith('.png')]
    assert len(pngs) >= 3
    for p in pngs:
        with open(p, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(out['summary']) as f:
        summary = f.read()
    assert 'rare' in summary and 'frequent' in summary
