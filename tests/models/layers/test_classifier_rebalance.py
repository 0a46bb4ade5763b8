"""tau-normalization and LWS on the class rows of real box heads, for every
classifier layout the losses define (CE C + 1, Seesaw C + 2, EQLv2 C + 1
sigmoid, EQL / focal C, BAGS C + 1 + G)."""
import copy

import pytest
import torch
import torch.nn as nn
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.utils import register_all_modules

import mmlongtail  # noqa: F401
from mmlongtail.models.layers.classifier_rebalance import (
    restore_weights, tau_normalize_)
from mmlongtail.models.layers import LWSLinear, tau_normalized_weight
from mmlongtail.models.layers.classifier_rebalance import lws_heads
from mmlongtail.models.losses.protocol import head_layout

register_all_modules()

C = 4
STATS = dict(
    num_images=100,
    categories=[
        dict(id=i + 1, name=f'c{i}', frequency='r', image_count=ic,
             instance_count=nc)
        for i, (ic, nc) in enumerate([(1, 3), (5, 40), (60, 400), (90, 5000)])
    ])
LOSSES = {
    'CrossEntropyLoss': dict(type='CrossEntropyLoss'),
    'SeesawLoss': dict(type='mmlongtail.SeesawLoss', num_classes=C),
    'EQLv2Loss': dict(type='mmlongtail.EQLv2Loss', num_classes=C),
    'EQLLoss': dict(type='mmlongtail.EQLLoss', num_classes=C,
                    category_stats=STATS, freq_thr=0.02),
    'FocalLoss': dict(type='mmlongtail.FocalLoss', num_classes=C),
    'GroupSoftmaxLoss': dict(type='mmlongtail.GroupSoftmaxLoss',
                             num_classes=C, category_stats=STATS),
}


class Detector(nn.Module):
    """Box heads where a detector keeps them (single stage or Cascade)."""

    def __init__(self, heads):
        super().__init__()
        self.roi_head = nn.Module()
        self.roi_head.bbox_head = heads


def head(loss, predictor=None, seed=0):
    torch.manual_seed(seed)
    kw = {} if predictor is None else dict(cls_predictor_cfg=predictor)
    h = Shared2FCBBoxHead(in_channels=4, fc_out_channels=8, roi_feat_size=1,
                          num_classes=C, loss_cls=copy.deepcopy(loss), **kw)
    nn.init.normal_(h.fc_cls.weight, std=0.5)
    return h


def test_tau_normalized_weight_by_hand():
    w = torch.tensor([[3., 4.], [1., 0.], [0., 2.]])
    out = tau_normalized_weight(w, [0, 2], 0.5)
    # row 0: norm 5 -> divided by sqrt(5); row 2: norm 2 -> by sqrt(2)
    torch.testing.assert_close(out[0], torch.tensor([3., 4.]) / 5**0.5)
    torch.testing.assert_close(out[2], torch.tensor([0., 2.]) / 2**0.5)
    assert torch.equal(out[1], w[1])
    assert torch.equal(tau_normalized_weight(w, [0, 1, 2], 0.0), w)
    with pytest.raises(ValueError, match='zero norm'):
        tau_normalized_weight(torch.zeros(2, 2), [0], 1.0)
    with pytest.raises(ValueError, match='must lie in'):
        tau_normalized_weight(w, [3], 1.0)


@pytest.mark.parametrize('name', sorted(LOSSES))
@pytest.mark.parametrize('tau', [0.5, 1.0, 1.7])
def test_tau_norm_every_layout(name, tau):
    stages = nn.ModuleList([head(LOSSES[name], seed=s) for s in (0, 1)])
    model = Detector(stages)
    before = copy.deepcopy(model.state_dict())
    saved = tau_normalize_(model, tau)
    assert [n for n, _ in saved] == ['roi_head.bbox_head.0',
                                     'roi_head.bbox_head.1']
    for i, h in enumerate(stages):
        layout = head_layout(h)
        rows = layout.foreground_rows().tolist()
        w0 = before[f'roi_head.bbox_head.{i}.fc_cls.weight']
        w1 = h.fc_cls.weight.detach()
        # adjusted norms are ||w_c||^(1 - tau)
        torch.testing.assert_close(w1[rows].norm(dim=1),
                                   w0[rows].norm(dim=1)**(1 - tau))
        # directions kept
        torch.testing.assert_close(
            w1[rows] / w1[rows].norm(dim=1, keepdim=True),
            w0[rows] / w0[rows].norm(dim=1, keepdim=True))
        others = sorted(set(range(w0.size(0))) - set(rows))
        assert len(others) == w0.size(0) - C
        assert torch.equal(w1[others], w0[others])
    for k, v in model.state_dict().items():  # biases and the rest untouched
        if not k.endswith('fc_cls.weight'):
            assert torch.equal(v, before[k]), k
    restore_weights(model, saved)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_tau_norm_refuses_cosine_classifier():
    h = Shared2FCBBoxHead(
        in_channels=4, fc_out_channels=8, roi_feat_size=1, num_classes=C,
        cls_predictor_cfg=dict(type='mmlongtail.NormedLinear',
                               temperature=20),
        loss_cls=LOSSES['SeesawLoss'])
    with pytest.raises(ValueError, match=r'roi_head.bbox_head .*'
                       r'Shared2FCBBoxHead with SeesawLoss.*NormedLinear'):
        tau_normalize_(Detector(h), 1.0)
    with pytest.raises(ValueError, match='no R-CNN box head'):
        tau_normalize_(nn.Linear(2, 2), 1.0)


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_lws_scales_only_class_rows(name):
    h = head(LOSSES[name], dict(type='mmlongtail.LWSLinear')).eval()
    assert isinstance(h.fc_cls, LWSLinear)
    x = torch.randn(5, 4, 1, 1)
    plain = nn.functional.linear(
        h.shared_fcs[1](h.shared_fcs[0](x.flatten(1)).relu()).relu(),
        h.fc_cls.weight, h.fc_cls.bias)
    torch.testing.assert_close(h(x)[0], plain)  # unmarked: nn.Linear
    lws_heads(Detector(h))
    rows = head_layout(h).foreground_rows()
    assert h.fc_cls.lws.scaled.nonzero().view(-1).tolist() == sorted(rows)
    with torch.no_grad():
        h.fc_cls.lws.scale.fill_(3.0)
    want = plain.clone()
    want[:, rows] *= 3
    torch.testing.assert_close(h(x)[0], want)


def test_lws_needs_marked_rows_to_train_and_an_lws_head():
    h = head(LOSSES['CrossEntropyLoss'], dict(type='mmlongtail.LWSLinear'))
    with pytest.raises(RuntimeError, match='LearnableWeightScalingHook'):
        h.train()(torch.randn(2, 4, 1, 1))
    with pytest.raises(ValueError, match='mmlongtail.LWSLinear'):
        lws_heads(Detector(head(LOSSES['CrossEntropyLoss'])))
