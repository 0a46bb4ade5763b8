"""ClassifierRetrainingHook through a real mmengine Runner: loads the stage-1
checkpoint, trains only fc_cls (SGD with momentum and weight decay leaves the
frozen parameters bit-identical), keeps batch-norm statistics frozen, resumes
without reloading stage 1, and matches the cascade/Mask R-CNN module names."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner

import mmlongtail  # noqa: F401
from mmlongtail.engine.hooks.classifier_retraining_hook import (
    ClassifierRetrainingHook, freeze_except, match_modules)


class Head(nn.Module):

    def __init__(self):
        super().__init__()
        self.shared_fcs = nn.Linear(8, 8)
        self.fc_cls = nn.Linear(8, 3)
        self.fc_reg = nn.Linear(8, 4)


class RoIHead(nn.Module):

    def __init__(self):
        super().__init__()
        self.bbox_head = nn.ModuleList([Head(), Head()])  # like Cascade


class Toy(BaseModel):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
        self.roi_head = RoIHead()

    def forward(self, inputs, labels=None, mode='tensor'):
        feat = self.backbone(inputs).relu()
        loss = 0
        for h in self.roi_head.bbox_head:
            z = h.shared_fcs(feat).relu()
            loss = loss + nn.functional.cross_entropy(h.fc_cls(z), labels)
            loss = loss + h.fc_reg(z).pow(2).mean()
        return dict(loss=loss)


class Data(torch.utils.data.Dataset):

    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(
            inputs=torch.randn(4, generator=g) * 3 + 1,
            labels=torch.tensor(i % 3))


def runner(work_dir, hook, max_epochs=1, resume=False, model=None):
    return Runner(
        model=model or Toy(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=Data(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=4,
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(
            optimizer=dict(
                type='SGD', lr=0.1, momentum=0.9, weight_decay=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        custom_hooks=[hook] if hook else None,
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            logger=dict(type='LoggerHook', interval=100)),
        resume=resume,
        default_scope='mmlongtail',
        experiment_name=f'exp_{max_epochs}_{resume}')


@pytest.fixture
def stage1(tmp_path):
    torch.manual_seed(0)
    r = runner(tmp_path / 'stage1', hook=None)
    r.train()
    return r.model.state_dict(), str(tmp_path / 'stage1' / 'epoch_1.pth')


def test_loads_stage1_and_trains_only_the_classifier(tmp_path, stage1):
    state1, ckpt = stage1
    torch.manual_seed(1)  # a different init than stage 1
    hook = dict(type='mmlongtail.ClassifierRetrainingHook', checkpoint=ckpt)
    r = runner(tmp_path / 'stage2', hook)
    init = copy.deepcopy(r.model.state_dict())
    r.train()
    after = r.model.state_dict()
    for k, v in after.items():
        if '.fc_cls.' in k:
            # not loaded from stage 1 (re-initialized), then trained
            assert not torch.equal(v, state1[k]), k
            assert not torch.equal(v, init[k]), k
        else:
            # stage-1 value, untouched by SGD momentum / weight decay; the
            # BN running statistics and batch counter are frozen too
            assert torch.equal(v, state1[k]), k
    assert all(p.requires_grad == ('.fc_cls.' in n)
               for n, p in r.model.named_parameters())
    assert not r.model.backbone[1].training


def test_resume_does_not_reload_stage1(tmp_path, stage1):
    _, ckpt = stage1
    hook = dict(type='mmlongtail.ClassifierRetrainingHook', checkpoint=ckpt)
    torch.manual_seed(1)
    r = runner(tmp_path / 'stage2', hook, max_epochs=1)
    r.train()
    trained = copy.deepcopy(r.model.state_dict())
    # resume stage 2 for a second epoch: starts from stage-2 epoch 1
    r2 = runner(tmp_path / 'stage2', hook, max_epochs=2, resume=True)
    loaded = {}
    orig = ClassifierRetrainingHook.load
    ClassifierRetrainingHook.load = lambda self, m: loaded.setdefault(
        'called', True)
    try:
        r2.train()
    finally:
        ClassifierRetrainingHook.load = orig
    assert 'called' not in loaded
    k = 'roi_head.bbox_head.0.fc_cls.weight'
    assert not torch.equal(r2.model.state_dict()[k], trained[k])
    k = 'backbone.0.weight'
    assert torch.equal(r2.model.state_dict()[k], trained[k])


def test_keep_classifier_weights_and_custom_trainable(tmp_path, stage1):
    state1, ckpt = stage1
    hook = ClassifierRetrainingHook(
        checkpoint=ckpt,
        trainable=('roi_head.bbox_head.1.fc_cls', ),
        reinit_trainable=False)
    model = Toy()
    hook.load(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state1[k]), k
    trained, frozen = freeze_except(model, hook.trainable)
    assert trained == [
        'roi_head.bbox_head.1.fc_cls.weight',
        'roi_head.bbox_head.1.fc_cls.bias'
    ]
    with pytest.raises(ValueError, match='no module.*matches'):
        freeze_except(model, ('*nonexistent*', ))


def test_default_pattern_matches_mmdet_detectors():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    heads = [
        dict(
            type='Shared2FCBBoxHead',
            in_channels=4,
            fc_out_channels=8,
            roi_feat_size=2,
            num_classes=3) for _ in range(3)
    ]
    cascade = MODELS.build(
        dict(
            type='CascadeRoIHead',
            num_stages=3,
            stage_loss_weights=[1, 0.5, 0.25],
            bbox_roi_extractor=dict(
                type='SingleRoIExtractor',
                roi_layer=dict(type='RoIAlign', output_size=2),
                out_channels=4,
                featmap_strides=[4]),
            bbox_head=heads))
    wrapper = nn.Module()
    wrapper.roi_head = cascade
    names = [n for n, _ in match_modules(wrapper, ('*bbox_head*.fc_cls', ))]
    assert names == [f'roi_head.bbox_head.{i}.fc_cls' for i in range(3)]
    single = nn.Module()
    single.roi_head = nn.Module()
    single.roi_head.bbox_head = MODELS.build(heads[0])
    names = [n for n, _ in match_modules(single, ('*bbox_head*.fc_cls', ))]
    assert names == ['roi_head.bbox_head.fc_cls']


def test_refuses_ddp_without_find_unused_parameters():
    from types import SimpleNamespace
    model = Toy()
    model.find_unused_parameters = False  # what DDP exposes
    with pytest.raises(ValueError, match='find_unused_parameters = True'):
        ClassifierRetrainingHook().before_train(
            SimpleNamespace(model=model, iter=0))
