"""Feature cloud (Liu et al., CVPR 2020): the sampled angles follow
N(0, sigma_h^2 - sigma_t^2) (a Kolmogorov-Smirnov test that fails for a
wrong variance), angle statistics, both head/tail splits, the cosine
classifier requirement. SMOTE: interpolants lie on segments between
same-class features and never reach box regression."""
import math

import pytest
import torch
from helpers import C, STATS, roi_head
from mmdet.testing import demo_mm_inputs, demo_mm_proposals
from mmengine.logging import MessageHub

from mmlongtail.models.feature_augment import SMOTE, FeatureCloud
from mmlongtail.models.layers import NormedLinear

D = 16
NORMED = dict(type='mmlongtail.NormedLinear', temperature=20)


def _ks_half_normal(x, sigma):
    """Kolmogorov-Smirnov statistic of |N(0, sigma^2)| samples ``x``."""
    x = x.double().sort().values
    n = len(x)
    cdf = torch.erf(x / (sigma * math.sqrt(2)))
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - cdf, cdf - (i - 1) / n).max())


def _cloud(**kw):
    return FeatureCloud(C, D, STATS, **kw)


def test_sampled_angles_have_the_transferred_variance():
    cloud = _cloud(num_virtual=4000)
    # head classes 2, 3: angular variance 0.09; tail 0, 1: 0.01
    cloud.angles.count.fill_(10)
    cloud.angles.var.copy_(torch.tensor([[.01], [.01], [.09], [.09]]))
    gap = float(cloud.variance_gap())
    assert gap == pytest.approx(0.08)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, D, generator=g)
    labels = torch.tensor([0, 2, 1])  # the head RoI yields nothing
    fc = NormedLinear(D, C + 1)
    out, lab = cloud.generate(feats, labels, fc, g)
    assert lab.tolist() == [0, 1] * 4000
    real = feats[[0, 2]].repeat(4000, 1)
    torch.testing.assert_close(out.norm(dim=1), real.norm(dim=1))
    cos = torch.nn.functional.cosine_similarity(out.double(), real.double())
    angles = cos.clamp(-1, 1).acos()
    n = len(angles)
    critical = 1.63 / math.sqrt(n)  # 1 % level
    assert _ks_half_normal(angles, math.sqrt(gap)) < critical
    # the test has power: the head variance, the tail one, or the gap used
    # as a standard deviation would all fail
    for wrong in (math.sqrt(0.09), math.sqrt(0.01), gap):
        assert _ks_half_normal(angles, wrong) > critical, wrong


def test_angle_statistics_and_splits():
    cloud = _cloud(momentum=None)
    fc = NormedLinear(D, C + 1)
    g = torch.Generator().manual_seed(1)
    seen_f, seen_l = [], []
    for _ in range(3):
        f = torch.randn(12, D, generator=g)
        y = torch.randint(0, C, (12, ), generator=g)
        cloud.observe(f, y, fc)
        seen_f.append(f)
        seen_l.append(y)
    f, y = torch.cat(seen_f), torch.cat(seen_l)
    w = fc.weight[y]
    hand = (f * w).sum(1) / (f.norm(dim=1) * w.norm(dim=1))
    hand = hand.clamp(-1, 1).acos()
    for c in range(C):
        torch.testing.assert_close(cloud.angles.mean[c, 0],
                                   hand[y == c].mean())
        torch.testing.assert_close(cloud.angles.var[c, 0],
                                   hand[y == c].var())
    # the two head/tail splits (COUNTS 3, 40, 400, 5000; groups r c f f)
    assert _cloud().tail.tolist() == [True, True, False, False]
    assert _cloud(head_min_instances=500).tail.tolist() == [
        True, True, True, False]
    with pytest.raises(ValueError, match='exactly one head/tail split'):
        _cloud(tail_groups=None)
    with pytest.raises(ValueError, match='both head and tail'):
        _cloud(head_min_instances=10**6)


def _losses(head, seed):
    torch.manual_seed(seed)
    packed = demo_mm_inputs(
        batch_size=1, image_shapes=[(3, 64, 64)], num_classes=C,
        num_items=[6])
    feats = (torch.randn(1, 8, 16, 16), )
    proposals = demo_mm_proposals([(3, 64, 64)], 60)
    torch.manual_seed(seed)
    return head.loss(feats, proposals, packed['data_samples'])


def test_cloud_needs_a_cosine_classifier_and_trains():
    MessageHub.get_current_instance().update_info('epoch', 0)
    cloud = dict(type='mmlongtail.FeatureCloud', category_stats=STATS,
                 tail_groups=('r', 'c', 'f'), head_min_instances=None)
    with pytest.raises(ValueError, match='needs a cosine classifier'):
        roi_head(dict(cloud, tail_groups=('r', )))
    head = roi_head(dict(cloud, tail_groups=('r', 'c')),
                    cls_predictor_cfg=NORMED)
    aug = head.feature_augment
    aug.angles.count.fill_(10)  # a positive gap from the start
    aug.angles.var.copy_(torch.tensor([[.01], [.01], [.09], [.09]]))
    opt = torch.optim.SGD(head.parameters(), lr=0.01)
    for it in range(3):
        losses = _losses(head, it)
        assert torch.isfinite(losses['loss_cls_aug'])
        opt.zero_grad()
        sum(v for k, v in losses.items() if 'loss' in k).backward()
        opt.step()
    assert int(aug.step) == 3 and (aug.angles.count > 10).any()


def test_smote_interpolants_lie_on_same_class_segments():
    smote = SMOTE(C, D, STATS, num_virtual=3)  # tail: classes 0 and 1
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(10, D, generator=g)
    labels = torch.tensor([0, 1, 0, 2, 0, 3, 1, 2, 1, 0])
    labels[3] = 1  # class 2 once (head anyway), class 1 four times
    out, lab, i, j, lam = smote.interpolate(feats, labels, g)
    assert set(lab.tolist()) == {0, 1}
    assert len(lab) == 3 * int(smote.tail[labels].sum())
    assert torch.equal(labels[i], lab) and torch.equal(labels[j], lab)
    assert (i != j).all() and ((lam >= 0) & (lam <= 1)).all()
    torch.testing.assert_close(out, feats[i] + lam[:, None] *
                               (feats[j] - feats[i]))
    # every other RoI of the class is drawn as a partner
    assert set(j[i == 0].tolist()) <= {2, 4, 9}
    # a tail class with a single RoI yields nothing
    one = torch.tensor([0, 2, 3, 2])
    assert len(smote.interpolate(feats[:4], one, g)[1]) == 0
    assert SMOTE(C, D).tail.all()  # no statistics: every class


def test_smote_never_reaches_box_regression():
    MessageHub.get_current_instance().update_info('epoch', 0)
    head = roi_head(dict(type='mmlongtail.SMOTE', category_stats=STATS,
                         tail_groups=('r', 'c', 'f'), num_virtual=2))
    plain = roi_head()
    plain.load_state_dict(head.state_dict(), strict=False)
    rows = []
    head.bbox_head.fc_reg.register_forward_hook(
        lambda m, inp, out: rows.append(len(out)))
    cls_rows = []
    head.bbox_head.fc_cls.register_forward_hook(
        lambda m, inp, out: cls_rows.append(len(out)))
    losses = _losses(head, 0)
    ref = _losses(plain, 0)
    torch.testing.assert_close(losses['loss_bbox'], ref['loss_bbox'])
    torch.testing.assert_close(losses['loss_cls'], ref['loss_cls'])
    assert losses['loss_cls_aug'] > 0
    assert len(rows) == 1  # only the real RoIs were regressed
    assert len(cls_rows) == 2 and cls_rows[1] > 0  # real, then virtual
    losses['loss_cls_aug'].backward()
    assert head.bbox_head.fc_reg.weight.grad is None
    assert head.bbox_head.shared_fcs[0].weight.grad.abs().sum() > 0
