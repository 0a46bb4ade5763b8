"""mmlongtail.DCLRoIHead: the triplet loss gets the fc_cls input of the
sampled RoIs with the classifier's probabilities, weighted by f(l) from the
message hub; box losses stay mmdet's; the consistency hook refuses an epoch
schedule under an iteration loop; and a tiny Mask R-CNN trains a few
iterations with DCL's sampler schedule and loss schedule on the same
epochs."""
import copy
import math
import os
from unittest import mock

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.testing import demo_mm_inputs, demo_mm_proposals
from mmdet.utils import register_all_modules
from mmengine.config import ConfigDict
from mmengine.logging import MessageHub
from mmengine.registry import DefaultScope
from mmengine.runner import IterBasedTrainLoop, Runner

import mmlongtail  # noqa: F401
from mmlongtail.engine.hooks.longtail_consistency_hook import \
    check_train_loop_fit
from mmlongtail.models.losses.easy_anchor_triplet import \
    easy_anchor_triplet

register_all_modules()
C = 4
RCNN = ConfigDict(
    assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                  min_pos_iou=0.5, ignore_iof_thr=-1),
    sampler=dict(type='RandomSampler', num=64, pos_fraction=0.5,
                 neg_pos_ub=-1, add_gt_as_proposals=True),
    pos_weight=-1, debug=False)


@pytest.fixture(autouse=True)
def _mmdet_scope():
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def _cfg(kind='mmlongtail.DCLRoIHead', **kw):
    cfg = dict(
        type=kind,
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=8, featmap_strides=[4]),
        bbox_head=dict(
            type='Shared2FCBBoxHead', in_channels=8, fc_out_channels=16,
            roi_feat_size=7, num_classes=C,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                            target_means=[0.] * 4,
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type='CrossEntropyLoss', loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=RCNN)
    if kind.endswith('DCLRoIHead'):
        cfg.update(triplet_loss=dict(type='mmlongtail.EasyAnchorTriplet',
                                     margin=0.5, topk=3, minority_ratio=1.0),
                   **kw)
    return cfg


def _inputs():
    torch.manual_seed(1)
    packed = demo_mm_inputs(batch_size=2, image_shapes=[(3, 64, 64)] * 2,
                            num_classes=C, num_items=[6, 6])
    feats = (torch.randn(2, 8, 16, 16), )
    return feats, demo_mm_proposals([(3, 64, 64)] * 2, 60), \
        packed['data_samples']


def _hub(name, **info):
    hub = MessageHub.get_instance(name)
    for k, v in info.items():
        hub.update_info(k, v)
    return hub


def test_triplet_on_fc_cls_input_with_the_schedule():
    _hub('dcl-head-1', epoch=2, max_epochs=8)
    torch.manual_seed(0)
    head = MMDET_MODELS.build(_cfg(loss_schedule=dict(p=0.5, eps=0.01)))
    ref = MMDET_MODELS.build(_cfg('mmlongtail.StandardRoIHead'))
    ref.load_state_dict(head.state_dict())
    seen = []
    real = head.triplet_loss.forward
    head.triplet_loss.forward = lambda *a: seen.append(a) or real(*a)
    feats, proposals, samples = _inputs()
    torch.manual_seed(5)
    losses = head.loss(feats, copy.deepcopy(proposals), samples)
    torch.manual_seed(5)
    want = ref.loss(feats, copy.deepcopy(proposals), samples)
    for k in ('loss_cls', 'loss_bbox', 'acc'):  # mmdet's, unchanged
        torch.testing.assert_close(losses[k], want[k])
    # the hook is gone after the call
    assert not head.bbox_head.fc_cls._forward_pre_hooks
    emb, labels, scores = seen[0]
    assert emb.shape == (128, 16) and labels.shape == (128, )
    # emb is what fc_cls saw: its output reproduces the scores
    torch.testing.assert_close(
        torch.softmax(head.bbox_head.fc_cls(emb), 1), scores)
    f = 0.5 * math.cos(2 / 8 * math.pi) + 0.5 + 0.01
    assert losses['dcl_f'].item() == pytest.approx(f)
    tea, valid = easy_anchor_triplet(emb, labels, scores, 0.5, 3, 1.0)
    assert valid.any()
    torch.testing.assert_close(losses['loss_triplet'],
                               f * tea.sum() / valid.sum())
    # the triplet term trains the shared FCs, not the classifier
    head.zero_grad()
    losses['loss_triplet'].backward()
    assert head.bbox_head.fc_cls.weight.grad is None
    assert head.bbox_head.shared_fcs[0].weight.grad.abs().sum() > 0


def test_schedule_by_iteration_and_early_stop():
    head = MMDET_MODELS.build(_cfg(loss_schedule=dict(
        by_epoch=False, p=0.25, eps=0.0)))
    _hub('dcl-head-2', iter=10, max_iters=100, epoch=0)
    assert head.schedule_progress() == (10, 100)
    assert head.schedule_weight() == pytest.approx(
        0.5 * math.cos(0.1 * math.pi) + 0.5)
    _hub('dcl-head-3', iter=25, max_iters=100)
    assert head.schedule_weight() == 0.0  # p * L reached
    head.loss_schedule['total'] = 50  # an explicit L wins over the hub's
    assert head.schedule_progress() == (25, 50)
    MessageHub.get_instance('dcl-head-empty')
    head.loss_schedule['total'] = None
    with pytest.raises(ValueError, match='needs L'):
        head.schedule_weight()


def test_bad_config_and_loop_raise():
    for sched, match in [(dict(q=1), 'unknown loss_schedule keys'),
                         (dict(p=0), r'\(0, 1\]'),
                         (dict(eps=-1), 'eps must be >= 0'),
                         (dict(by_epoch=1), 'by_epoch must be a bool'),
                         (dict(total=0), 'total must be an int')]:
        with pytest.raises(ValueError, match=match):
            MMDET_MODELS.build(_cfg(loss_schedule=sched))
    cfg = _cfg()
    cfg['bbox_head']['with_cls'] = False
    with pytest.raises(TypeError, match='linear bbox_head.fc_cls'):
        MMDET_MODELS.build(cfg)
    head = MMDET_MODELS.build(_cfg())
    loop = object.__new__(IterBasedTrainLoop)
    loop._max_iters = 90
    with pytest.raises(ValueError, match='set loss_schedule.by_epoch=False'):
        check_train_loop_fit(torch.nn.ModuleDict(dict(roi_head=head)), loop)
    head.loss_schedule['by_epoch'] = False
    check_train_loop_fit(torch.nn.ModuleDict(dict(roi_head=head)), loop)


def test_trains_with_dcl_sampler_and_loss_schedules(tiny_lvis, tmp_path):
    """Two epochs of a tiny Mask R-CNN: the sampler's g(l) (convex, exponent
    mode) and the head's f(l) follow the same runner epoch, also after a
    resume."""
    from mmlongtail_bench.demo import DATA_ROOT_VAR, demo_config
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))))
    with mock.patch.dict(os.environ, {DATA_ROOT_VAR: tiny_lvis['root']}):
        cfg = demo_config(os.path.join(
            root, 'configs/demo/mask_rcnn_r18_light_synthetic.py'),
            str(tmp_path))
    n = tiny_lvis['cfg'].num_classes
    cfg.model.roi_head.type = 'mmlongtail.DCLRoIHead'
    cfg.model.roi_head.triplet_loss = dict(
        type='mmlongtail.EasyAnchorTriplet', minority_ratio=1.0)
    cfg.model.roi_head.loss_schedule = dict(p=1.0, eps=0.0)
    cfg.model.roi_head.bbox_head.num_classes = n
    cfg.model.roi_head.mask_head.num_classes = n
    cfg.train_dataloader.update(batch_size=3, num_workers=0,
                                persistent_workers=False)
    cfg.train_dataloader.dataset.indices = 6
    cfg.train_dataloader.sampler = dict(
        type='mmlongtail.ClassAwareSampler', q=0.0,
        progressive=dict(end=2, mode='exponent', shape='convex'))
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2,
                         val_interval=10)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0)]
    cfg.optim_wrapper.optimizer.lr = 0.01
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.default_hooks.logger.interval = 1
    cfg.log_level = 'WARNING'

    def run(cfg):
        runner = Runner.from_cfg(copy.deepcopy(cfg))
        weights = []
        head = runner.model.roi_head
        real = head.schedule_weight
        head.schedule_weight = lambda: weights.append(
            (runner.epoch, real())) or weights[-1][1]
        runner.train()
        return runner, weights

    runner, weights = run(cfg)
    assert runner.iter == 4
    # f(l) with L = max_epochs = 2, p = 1: f(0) = 1, f(1) = 1/2
    assert weights == [(0, 1.0), (0, 1.0), (1, 0.5), (1, 0.5)]
    # resumed after epoch 0, the schedule continues at l = 1
    cfg.work_dir = str(tmp_path / 'resumed')
    cfg.load_from = str(tmp_path / 'epoch_1.pth')
    cfg.resume = True
    _, resumed = run(cfg)
    assert resumed == [(1, 0.5), (1, 0.5)]
    scalars = runner.message_hub.log_scalars
    for key in ('train/loss_triplet', 'train/dcl_f', 'train/loss_cls'):
        assert np.isfinite(scalars[key].current()), key
    assert scalars['train/dcl_f'].current() == pytest.approx(0.5)
    # the sampler at the same epochs: p_j ∝ n_j^{g(l)}, g = cos(l/2 pi/2)
    sampler = runner.train_dataloader.sampler
    cnt = sampler.image_count.astype(float)
    for epoch in (0, 1):
        w = np.where(cnt > 0, cnt, 0)**math.cos(epoch / 2 * math.pi / 2)
        w[cnt == 0] = 0
        np.testing.assert_allclose(sampler.class_probabilities(epoch),
                                   w / w.sum())
