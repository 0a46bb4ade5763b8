"""LearnableWeightScalingHook and TauNormalizationHook through a real
mmengine Runner: LWS stage 2 changes only the per-class scales (SGD with
momentum and weight decay leaves everything else bit-identical), resumes
without reloading stage 1; tau-normalization is applied for validation and
undone afterwards."""
import copy

import pytest
import torch
import torch.nn as nn
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import mmlongtail  # noqa: F401
from mmlongtail.engine import LearnableWeightScalingHook
from mmlongtail.models.layers import tau_normalized_weight

C = 3


class Toy(BaseModel):
    """A backbone with batch norm and a real Shared2FCBBoxHead (CE,
    C + 1 outputs) under roi_head.bbox_head."""

    def __init__(self, lws=False):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.roi_head = nn.Module()
        kw = dict(cls_predictor_cfg=dict(
            type='mmlongtail.LWSLinear')) if lws else {}
        self.roi_head.bbox_head = Shared2FCBBoxHead(
            in_channels=4, fc_out_channels=8, roi_feat_size=1,
            num_classes=C, loss_cls=dict(type='CrossEntropyLoss'), **kw)

    def forward(self, inputs, labels=None, mode='tensor'):
        feat = self.backbone(torch.stack(inputs)).relu()
        cls_score, bbox_pred = self.roi_head.bbox_head(feat[:, :, None, None])
        if mode == 'loss':
            labels = torch.stack(labels)
            return dict(
                loss_cls=nn.functional.cross_entropy(cls_score, labels),
                loss_reg=bbox_pred.pow(2).mean())
        return [dict(score=cls_score, labels=torch.stack(labels))]


class Data(torch.utils.data.Dataset):

    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(4, generator=g) * 3 + 1,
                    labels=torch.tensor(i % (C + 1)))


class Recorder(BaseMetric):
    """Records the classifier weight seen during validation."""
    seen = []

    def __init__(self, model_ref):
        super().__init__()
        self.model_ref = model_ref

    def process(self, data_batch, data_samples):
        Recorder.seen.append(
            self.model_ref[0].roi_head.bbox_head.fc_cls.weight.detach().clone())

    def compute_metrics(self, results):
        return dict(n=1.0)


def runner(work_dir, model, hooks, max_epochs=1, resume=False, val=None):
    kw = {}
    if val is not None:
        kw = dict(
            val_dataloader=dict(dataset=Data(), batch_size=8, num_workers=0,
                                sampler=dict(type='DefaultSampler',
                                             shuffle=False),
                                collate_fn=dict(type='pseudo_collate')),
            val_cfg=dict(), val_evaluator=[val])
    return Runner(
        model=model,
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=Data(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=4,
            num_workers=0,
            collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9,
                           weight_decay=0.1)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        custom_hooks=hooks,
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            logger=dict(type='LoggerHook', interval=100)),
        resume=resume,
        default_scope='mmdet',
        experiment_name=f'exp_{max_epochs}_{resume}',
        **kw)


@pytest.fixture(autouse=True)
def mmdet_scope():
    # Toy() builds mmdet's box coder from the current default scope, which a
    # Runner built by an earlier test may have left at 'mmengine'
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


@pytest.fixture
def stage1(tmp_path):
    torch.manual_seed(0)
    r = runner(tmp_path / 'stage1', Toy(), None)
    r.train()
    return r.model.state_dict(), str(tmp_path / 'stage1' / 'epoch_1.pth')


def test_lws_trains_only_the_scales_and_resumes(tmp_path, stage1):
    state1, ckpt = stage1
    hook = dict(type='mmlongtail.LearnableWeightScalingHook', checkpoint=ckpt)
    torch.manual_seed(1)  # a different init than stage 1
    r = runner(tmp_path / 'stage2', Toy(lws=True), [hook])
    r.train()
    after = copy.deepcopy(r.model.state_dict())
    scale = after['roi_head.bbox_head.fc_cls.lws.scale']
    assert after['roi_head.bbox_head.fc_cls.lws.scaled'].tolist() == \
        [True] * C + [False]  # the background row is not scaled
    factors = r.model.roi_head.bbox_head.fc_cls.lws.factors().detach()
    assert (factors[:C] != 1).all() and factors[C] == 1
    for k, v in after.items():
        if '.lws.' not in k:  # stage 1's value, untouched by SGD
            assert torch.equal(v, state1[k]), k
    assert [n for n, p in r.model.named_parameters() if p.requires_grad] \
        == ['roi_head.bbox_head.fc_cls.lws.scale']
    # resume a second epoch: starts from stage-2 epoch 1, not stage 1
    loaded = []
    orig = LearnableWeightScalingHook.load
    LearnableWeightScalingHook.load = lambda self, m: loaded.append(1)
    try:
        r2 = runner(tmp_path / 'stage2', Toy(lws=True), [hook], max_epochs=2,
                    resume=True)
        r2.train()
    finally:
        LearnableWeightScalingHook.load = orig
    assert not loaded
    final = r2.model.state_dict()
    assert not torch.equal(final['roi_head.bbox_head.fc_cls.lws.scale'],
                           scale)
    for k, v in final.items():
        if '.lws.' not in k:
            assert torch.equal(v, state1[k]), k


def test_tau_norm_hook_for_validation_then_restored(tmp_path, stage1):
    _, ckpt = stage1
    model = Toy()
    Recorder.seen = []
    hook = dict(type='mmlongtail.TauNormalizationHook', tau=1.0)
    r = runner(tmp_path / 'val', model, [hook], val=Recorder([model]))
    r.load_checkpoint(ckpt)
    w = model.roi_head.bbox_head.fc_cls.weight.detach().clone()
    r.val()
    assert len(Recorder.seen) == 2  # two val batches
    want = tau_normalized_weight(w, range(C), 1.0)
    torch.testing.assert_close(Recorder.seen[0], want)
    torch.testing.assert_close(Recorder.seen[0][:C].norm(dim=1),
                               torch.ones(C))
    # the background row is untouched, and everything is put back after
    assert torch.equal(Recorder.seen[0][C], w[C])
    assert torch.equal(model.roi_head.bbox_head.fc_cls.weight, w)


def test_tau_norm_hook_needs_tau():
    from mmlongtail.engine import TauNormalizationHook
    with pytest.raises(ValueError, match='tau is required'):
        TauNormalizationHook()
    with pytest.raises(ValueError, match='phases'):
        TauNormalizationHook(tau=1.0, phases=('train', ))
