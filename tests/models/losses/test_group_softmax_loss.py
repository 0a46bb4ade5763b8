"""mmlongtail.GroupSoftmaxLoss (BAGS, Li et al., CVPR 2020): grouping,
channel layout, hand-derived loss, the official per-group normalization,
sampling of "others", test-time probabilities and bad arguments."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

import mmlongtail  # noqa: F401
from mmlongtail.datasets.category_stats import packaged_stats_path
from mmlongtail.models.losses import GroupSoftmaxLoss
from mmlongtail.models.losses.group_softmax_loss import (assign_groups,
                                                         sample_others)

# instance counts -> groups with bins (10, 100, 1000), bisect-right
COUNTS = [9, 10, 99, 100, 999, 1000, 0]
GROUPS = [0, 1, 1, 2, 2, 3, 0]
C = len(COUNTS)


def stats(counts=COUNTS):
    return dict(
        num_images=5000,
        categories=[
            dict(
                id=i + 1,
                name=f'c{i}',
                frequency='f',
                image_count=min(n, 5000),
                instance_count=n) for i, n in enumerate(counts)
        ])


def test_groups_and_layout():
    assert assign_groups(COUNTS, (10, 100, 1000)) == GROUPS
    loss = GroupSoftmaxLoss(C, stats())
    # 4 class groups + background; sizes [2, 2, 2, 1] + [1]
    assert loss.num_groups == 5
    assert loss.group_sizes == [2, 2, 2, 1, 1]
    # [o0, c0, c6 | o1, c1, c2 | o2, c3, c4 | o3, c5 | o_bg, bg]
    assert loss.get_cls_channels(C) == C + 1 + 5 == 13
    assert loss.group_offsets == [0, 3, 6, 9, 11]
    assert loss.label_channel.tolist() == [1, 4, 5, 7, 8, 10, 2, 12]
    assert loss.label_map.tolist() == [
        [1, 0, 0, 0, 0, 0, 2, 0],
        [0, 1, 2, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 2, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 1],
    ]


def test_packaged_lvis_v1_groups():
    loss = GroupSoftmaxLoss(1203, 'lvis_v1')
    with open(packaged_stats_path('lvis_v1')) as f:
        cats = sorted(json.load(f)['categories'], key=lambda c: c['id'])
    counts = [c['instance_count'] for c in cats]
    expected = [
        sum(lo <= n < hi for n in counts)
        for lo, hi in ((0, 10), (10, 100), (100, 1000), (1000, 10**9))
    ]
    assert loss.group_sizes == expected + [1]
    assert loss.get_cls_channels(1203) == 1203 + 1 + 5


def ce(logits, k):
    return math.log(sum(math.exp(v) for v in logits)) - logits[k]


def test_hand_derived_no_sampling():
    # 3 classes: counts 5 (group 0), 50, 60 (group 1); bins (10, 100)
    loss = GroupSoftmaxLoss(
        3, stats([5, 50, 60]), bin_split=(10, 100), beta=100)
    # layout [o0, c0 | o1, c1, c2 | o2 (empty group) | o_bg, bg]
    assert loss.group_sizes == [1, 2, 0, 1]
    x = torch.tensor([[0.5, 1.0, 0.2, -0.3, 0.7, 0.0, 0.1, -0.4],
                      [-1.0, 0.3, 0.4, 0.9, -0.2, 0.0, 0.6, 0.2],
                      [0.2, -0.5, 1.1, 0.0, 0.3, 0.0, -0.7, 0.8]])
    y = torch.tensor([0, 2, 3])  # class 0, class 2, background
    r = x.tolist()
    g0 = [ce(r[0][0:2], 1)]  # only row 0 is positive; others: rows 1, 2
    g0_others = [ce(r[1][0:2], 0), ce(r[2][0:2], 0)]
    g1 = [ce(r[1][2:5], 2)]
    g1_others = [ce(r[0][2:5], 0), ce(r[2][2:5], 0)]
    gbg = [ce(r[0][6:8], 0), ce(r[1][6:8], 0), ce(r[2][6:8], 1)]
    # group 2 is empty and has no positives: contributes nothing
    expected = (sum(g0 + g0_others) / 3 + sum(g1 + g1_others) / 3 +
                sum(gbg) / 3)
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-6)
    assert loss(x, y, reduction_override='sum').item() == pytest.approx(
        sum(g0 + g0_others + g1 + g1_others + gbg), rel=1e-6)


def official_loss(loss, x, y, select):
    """The official per-group loop, given the sampled selection."""
    total = 0.0
    groups = loss.split_groups(x)
    for g in range(loss.num_groups):
        labels = loss.label_map[g][y]
        w = select[g].float()
        ce_g = F.cross_entropy(groups[g], labels, reduction='none')
        total = total + (ce_g * w).sum() / max(w.sum().item(), 1.0)
    return total


def test_matches_official_per_group_normalization_with_sampling():
    loss = GroupSoftmaxLoss(C, stats(), beta=1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 13, generator=g)
    y = torch.randint(0, C + 1, (64, ), generator=g)
    y[:40] = C  # mostly background, as in RoI sampling
    torch.manual_seed(5)
    got = loss(x, y)
    torch.manual_seed(5)
    select = torch.ones(5, 64, dtype=torch.bool)
    select[:-1] = sample_others(loss.label_map[:-1][:, y],
                                torch.ones(64, dtype=torch.bool), 1)
    torch.testing.assert_close(got, official_loss(loss, x, y, select))


def test_sampling():
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (2, 200), generator=g)
    labels[1] = 0
    labels[1, :7] = 1  # group 1: 7 positives, 193 others
    valid = torch.ones(200, dtype=torch.bool)
    torch.manual_seed(0)
    sel = sample_others(labels, valid, 2.5)
    pos = labels > 0
    assert sel[pos].all()  # every positive is kept
    n_pos = pos.sum(1)
    n_others = (sel & ~pos).sum(1)
    expected = torch.minimum(
        torch.floor(n_pos * 2.5).long(), (~pos).sum(1))
    assert torch.equal(n_others, expected)
    assert n_others[1] == 17
    # reproducible under torch.manual_seed, different for another seed
    torch.manual_seed(0)
    assert torch.equal(sample_others(labels, valid, 2.5), sel)
    torch.manual_seed(1)
    assert not torch.equal(sample_others(labels, valid, 2.5), sel)
    # a group without positives selects nothing; invalid proposals never
    none = sample_others(torch.zeros(1, 10, dtype=torch.long),
                         torch.ones(10, dtype=torch.bool), 8)
    assert not none.any()
    valid[:100] = False
    sel = sample_others(labels, valid, 100)
    assert not sel[:, :100].any()
    # uniform: every "others" proposal gets drawn about equally often
    hits = torch.zeros(200)
    torch.manual_seed(0)
    for _ in range(400):
        hits += sample_others(labels[1:], torch.ones(200, dtype=torch.bool),
                              2.5)[0].float()
    rates = hits[7:] / 400
    assert abs(rates.mean().item() - 17 / 193) < 0.01
    assert rates.max() < 0.2 and rates.min() > 0.01


def test_activation_recovers_probabilities():
    loss = GroupSoftmaxLoss(C, stats())
    x = torch.randn(9, 13)
    scores = loss.get_activation(x)
    assert scores.shape == (9, C + 1)
    assert ((scores >= 0) & (scores <= 1)).all()
    groups = [g.softmax(1) for g in loss.split_groups(x)]
    fg = groups[-1][:, 0]
    torch.testing.assert_close(scores[:, C], groups[-1][:, 1])
    torch.testing.assert_close(scores[:, C] + fg, torch.ones(9))
    # class 6 is the second class of group 0; class 4 of group 2
    torch.testing.assert_close(scores[:, 6], groups[0][:, 2] * fg)
    torch.testing.assert_close(scores[:, 4], groups[2][:, 2] * fg)
    # a group's classes and its "others" share the foreground probability
    torch.testing.assert_close(scores[:, [1, 2]].sum(1) + groups[1][:, 0] * fg,
                               fg)
    acc = loss.get_accuracy(x, scores.argmax(1))['acc']
    assert acc.item() == pytest.approx(100.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match='strictly increasing'):
        GroupSoftmaxLoss(C, stats(), bin_split=(100, 10))
    with pytest.raises(ValueError, match='strictly increasing'):
        GroupSoftmaxLoss(C, stats(), bin_split=(10, 10))
    with pytest.raises(ValueError, match='positive'):
        GroupSoftmaxLoss(C, stats(), bin_split=(0, 10))
    with pytest.raises(ValueError, match='positive'):
        GroupSoftmaxLoss(C, stats(), bin_split=(-5, 10))
    with pytest.raises(ValueError, match='empty'):
        GroupSoftmaxLoss(C, stats(), bin_split=())
    with pytest.raises(ValueError, match='beta'):
        GroupSoftmaxLoss(C, stats(), beta=-1)
    with pytest.raises(ValueError, match=f'num_classes=5.*{C} classes'):
        GroupSoftmaxLoss(5, stats())
    loss = GroupSoftmaxLoss(C, stats())
    with pytest.raises(ValueError, match='12 channels, expected 13'):
        loss(torch.zeros(3, 12), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=f'num_classes={C}.*num_classes=9'):
        loss.get_cls_channels(9)
