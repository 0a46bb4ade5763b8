"""BBN's cumulative learning in the RoI head (Zhou et al., CVPR 2020):
alpha(t), the mixed loss and its gradient, the test rule, the hook and the
setup check."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from mmdet.structures import DetDataSample
from mmengine.config import ConfigDict
from torch.utils.data import BatchSampler

from mmlongtail.datasets import BBNPairSampler, BBNStreamDataset
from mmlongtail.engine import BBNCumulativeLearningHook, check_bbn_setup
from mmlongtail.models.roi_heads import (BBNBBoxHead, BBNRoIHead,
                                         cumulative_alpha, cumulative_mix)
from mmlongtail.registry import MODELS
from tests.datasets.sampler_helpers import CatListDataset

C = 5  # classes; fc_cls has C + 1 rows
D = 6  # fc_out_channels


def _head(**kw):
    head = BBNBBoxHead(in_channels=4, fc_out_channels=D, roi_feat_size=2,
                       num_classes=C, **kw)
    torch.manual_seed(0)
    for p in head.parameters():  # non-trivial weights and biases
        torch.nn.init.normal_(p, std=0.5)
    return head


def test_alpha_equals_the_formula():
    for t, total in ((0, 12), (3, 12), (11, 12), (12, 12), (2.5, 10),
                     (150, 1000)):
        assert cumulative_alpha(t, total) == pytest.approx(
            1 - (t / total)**2, abs=1e-15)
    # the official 1-based epoch: alpha(epoch 1) = 1, epoch 5 of 5 = 0.36
    assert cumulative_alpha(0, 5) == 1.0
    assert cumulative_alpha(4, 5) == pytest.approx(0.36)
    with pytest.raises(ValueError, match='outside'):
        cumulative_alpha(13, 12)
    with pytest.raises(ValueError, match='T > 0'):
        cumulative_alpha(0, 0)


def test_mixed_loss_and_gradient_equal_a_hand_computation():
    head = _head()
    alpha = 0.7
    g = torch.Generator().manual_seed(1)
    f_c = torch.rand(4, D, generator=g)
    f_r = torch.rand(3, D, generator=g)
    y_c = torch.tensor([0, 2, C, 1])
    y_r = torch.tensor([4, C, 3])
    z_c = head.mixed_logits(f_c, torch.zeros_like(f_c), 1.0, 0.0)
    z_r = head.mixed_logits(torch.zeros_like(f_r), f_r, 0.0, 1.0)
    loss = cumulative_mix(
        dict(loss_cls=F.cross_entropy(z_c, y_c), loss_bbox=torch.tensor(2.),
             acc=torch.tensor(50.)),
        dict(loss_cls=F.cross_entropy(z_r, y_r), acc=torch.tensor(25.)),
        alpha)
    assert loss['loss_bbox'] == 2.0 and loss['acc'] == 50.0
    assert loss['acc_rb'] == 25.0
    loss['loss_cls'].backward()

    # by hand: W = [W_c, W_r], z_c = 2 W_c f_c + b, z_r = 2 W_r f_r + b
    W = head.fc_cls.weight.detach().double()
    b = head.fc_cls.bias.detach().double()
    W_c, W_r = W[:, :D], W[:, D:]
    hz_c = 2 * f_c.double() @ W_c.T + b
    hz_r = 2 * f_r.double() @ W_r.T + b

    def ce(z, y):  # mean of -log softmax
        return (z.logsumexp(1) - z[torch.arange(len(y)), y]).mean()

    expected = alpha * ce(hz_c, y_c) + (1 - alpha) * ce(hz_r, y_r)
    assert loss['loss_cls'].item() == pytest.approx(expected.item(),
                                                    rel=1e-6)
    # dL/dz = weight * (softmax(z) - onehot) / n
    d_c = alpha * (hz_c.softmax(1) - F.one_hot(y_c, C + 1)) / len(y_c)
    d_r = (1 - alpha) * (hz_r.softmax(1) - F.one_hot(y_r, C + 1)) / len(y_r)
    grad_w = torch.cat([d_c.T @ (2 * f_c.double()),
                        d_r.T @ (2 * f_r.double())], dim=1)
    torch.testing.assert_close(head.fc_cls.weight.grad.double(), grad_w,
                               rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(head.fc_cls.bias.grad.double(),
                               d_c.sum(0) + d_r.sum(0), rtol=1e-5,
                               atol=1e-7)


def test_endpoints_equal_the_official_mixed_logit_loss():
    """megvii-research/BBN lib/core/combiner.py bbn_mix, written out: one
    classifier on 2 * cat(l * f_a, (1 - l) * f_b), loss l CE(out, y_a) +
    (1 - l) CE(out, y_b). At l = 1 and l = 0 it is our per-branch loss."""
    head = _head()
    g = torch.Generator().manual_seed(2)
    f_a, f_b = torch.rand(5, D, generator=g), torch.rand(5, D, generator=g)
    y_a, y_b = torch.tensor([0, 1, 2, 3, 5]), torch.tensor([4, 4, 5, 0, 1])
    for lam in (0.0, 1.0):
        out = head.fc_cls(2 * torch.cat((lam * f_a, (1 - lam) * f_b), 1))
        ref = lam * F.cross_entropy(out, y_a) + (1 - lam) * F.cross_entropy(
            out, y_b)
        z_c = head.mixed_logits(f_a, torch.zeros_like(f_a), 1.0, 0.0)
        z_r = head.mixed_logits(torch.zeros_like(f_b), f_b, 0.0, 1.0)
        ours = cumulative_mix(dict(loss_cls=F.cross_entropy(z_c, y_a)),
                              dict(loss_cls=F.cross_entropy(z_r, y_b)),
                              lam)['loss_cls']
        assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


def test_test_rule_is_the_reference_rule():
    """Official lib/core/function.py valid_model: the classifier reads
    cat(f_c, f_r) of the same image (alpha = 1/2 with the factor 2)."""
    head = _head().eval()
    x = torch.rand(3, 4, 2, 2, generator=torch.Generator().manual_seed(3))
    f_c = head.branch_features(x, False)
    f_r = head.branch_features(x, True)
    cls, reg = head(x)
    torch.testing.assert_close(cls, head.fc_cls(torch.cat([f_c, f_r], 1)))
    torch.testing.assert_close(reg, head.fc_reg(f_c))
    assert not torch.equal(f_c, f_r)  # two branches, two weights
    only_c = _head(test_weights=(1.0, 0.0)).eval()
    torch.testing.assert_close(
        only_c(x)[0],
        only_c.fc_cls(torch.cat([2 * f_c, torch.zeros_like(f_r)], 1)))
    with pytest.raises(ValueError, match='test_weights'):
        _head(test_weights=(0.5, ))


def _roi_head(bbox_type='mmlongtail.BBNBBoxHead'):
    return MODELS.build(
        dict(
            type='mmlongtail.BBNRoIHead',
            bbox_roi_extractor=dict(
                type='SingleRoIExtractor',
                roi_layer=dict(type='RoIAlign', output_size=2,
                               sampling_ratio=0),
                out_channels=4, featmap_strides=[4]),
            bbox_head=dict(type=bbox_type, in_channels=4, fc_out_channels=D,
                           roi_feat_size=2, num_classes=C),
            train_cfg=ConfigDict(
                assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                              neg_iou_thr=0.5, min_pos_iou=0.5),
                sampler=dict(type='RandomSampler', num=8,
                             pos_fraction=0.5),
                pos_weight=-1)))


def test_roi_head_refuses_misuse():
    with pytest.raises(TypeError, match='BBNBBoxHead'):
        _roi_head('Shared2FCBBoxHead')
    head = _roi_head()
    assert isinstance(head, BBNRoIHead) and head.bbn_alpha is None
    untagged = [DetDataSample(), DetDataSample()]
    with pytest.raises(ValueError, match='BBNStreamDataset'):
        head.batch_streams(untagged)
    one_stream = [DetDataSample(metainfo=dict(bbn_stream=0))] * 2
    with pytest.raises(ValueError, match='2 conventional and 0'):
        head.batch_streams(one_stream)
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        head.set_alpha(1.5)


def test_hook_sets_alpha_from_progress_and_survives_resume():
    head = _roi_head()
    model = torch.nn.ModuleDict(dict(roi_head=head))
    hub = SimpleNamespace(scalars={},
                          update_scalar=lambda k, v: hub.scalars.update(
                              {k: v}))
    runner = SimpleNamespace(model=model, epoch=3, max_epochs=12, iter=250,
                             max_iters=1000, message_hub=hub)
    BBNCumulativeLearningHook().before_train_iter(runner, 0)
    assert head.bbn_alpha == pytest.approx(1 - (3 / 12)**2)
    assert hub.scalars['train/bbn_alpha'] == head.bbn_alpha
    # a resumed run: a fresh head and hook at the restored epoch agree
    fresh = _roi_head()
    runner.model = torch.nn.ModuleDict(dict(roi_head=fresh))
    BBNCumulativeLearningHook().before_train_iter(runner, 0)
    assert fresh.bbn_alpha == head.bbn_alpha
    BBNCumulativeLearningHook(by='iter').before_train_iter(runner, 0)
    assert fresh.bbn_alpha == pytest.approx(1 - 0.25**2)
    BBNCumulativeLearningHook(total=6).before_train_iter(runner, 0)
    assert fresh.bbn_alpha == pytest.approx(0.75)
    with pytest.raises(ValueError, match='by must be'):
        BBNCumulativeLearningHook(by='step')
    with pytest.raises(ValueError, match='no mmlongtail.BBNRoIHead'):
        BBNCumulativeLearningHook().before_train(
            SimpleNamespace(model=torch.nn.Linear(1, 1)))
    # an iteration loop keeps epoch 0: alpha would stay 1 with by='epoch'
    from mmengine.runner import IterBasedTrainLoop
    runner.train_loop = IterBasedTrainLoop.__new__(IterBasedTrainLoop)
    with pytest.raises(ValueError, match="by='iter'"):
        BBNCumulativeLearningHook().before_train(runner)
    BBNCumulativeLearningHook(by='iter').before_train(runner)
    # a total the schedule outruns fails before training, not at epoch 7
    from mmengine.runner import EpochBasedTrainLoop
    runner.train_loop = EpochBasedTrainLoop.__new__(EpochBasedTrainLoop)
    runner.train_loop._max_epochs = 12
    with pytest.raises(ValueError, match='total >= 11'):
        BBNCumulativeLearningHook(total=6).before_train(runner)
    BBNCumulativeLearningHook(total=11).before_train(runner)
    BBNCumulativeLearningHook().before_train(runner)


def _runner(model, dataset, sampler, batch_size=4, hooks=True,
            batch_cls=BatchSampler):
    loader = SimpleNamespace(
        dataset=dataset, sampler=sampler,
        batch_sampler=batch_cls(sampler or [], batch_size, False))
    return SimpleNamespace(
        model=model, train_loop=SimpleNamespace(dataloader=loader),
        hooks=[BBNCumulativeLearningHook()] if hooks else [])


def test_consistency_check_refuses_half_wired_runs():
    from mmdet.datasets.samplers import AspectRatioBatchSampler
    bbn = torch.nn.ModuleDict(dict(roi_head=_roi_head()))
    plain = torch.nn.Linear(1, 1)
    cats = CatListDataset([[0], [1, 2], [2], [0, 1]])
    streams = BBNStreamDataset(cats)
    pairs = BBNPairSampler(streams, seed=0)
    check_bbn_setup(_runner(bbn, streams, pairs))  # wired up: passes
    check_bbn_setup(_runner(plain, cats, None))  # no BBN at all: passes
    cases = [
        (_runner(plain, streams, pairs), 'no mmlongtail.BBNRoIHead'),
        (_runner(bbn, cats, pairs), 'BBNStreamDataset'),
        (_runner(bbn, streams, None), 'BBNPairSampler'),
        (_runner(bbn, streams, pairs, batch_size=3), 'must be even'),
        (_runner(bbn, streams, pairs, hooks=False),
         'BBNCumulativeLearningHook'),
    ]
    for runner, match in cases:
        with pytest.raises(ValueError, match=match):
            check_bbn_setup(runner)
    # mmdet's aspect-ratio grouping would reorder the interleaved stream
    loader = _runner(bbn, streams, pairs).train_loop.dataloader
    loader.batch_sampler = AspectRatioBatchSampler.__new__(
        AspectRatioBatchSampler)
    with pytest.raises(ValueError, match='batch_sampler=None'):
        check_bbn_setup(SimpleNamespace(
            model=bbn, train_loop=SimpleNamespace(dataloader=loader),
            hooks=[BBNCumulativeLearningHook()]))
