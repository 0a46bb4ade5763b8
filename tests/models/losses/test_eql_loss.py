"""mmlongtail.EQLLoss (Tan et al., CVPR 2020): hand-derived values, the
paper's formulation written out element by element, mmdet's sigmoid BCE when
no class is rare, and the category-statistics plumbing."""
import json
import math

import pytest
import torch
from mmdet.models.losses import CrossEntropyLoss

import mmlongtail  # noqa: F401
from mmlongtail.datasets.category_stats import packaged_stats_path
from mmlongtail.models.losses import EQLLoss


def stats(image_counts, num_images=1000):
    return dict(
        num_images=num_images,
        categories=[
            dict(
                id=10 * (i + 1),
                name=f'c{i}',
                frequency='r',
                image_count=n,
                instance_count=n) for i, n in enumerate(image_counts)
        ])


def test_hand_derived():
    # image frequencies 0.001, 0.5, 0.002 -> with lambda = 0.0021 classes 0
    # and 2 are rare
    loss = EQLLoss(3, stats([1, 500, 2]), freq_thr=0.0021)
    assert loss.tail_mask.tolist() == [True, False, True]
    x = torch.zeros(3, 3)  # every BCE term is ln 2
    y = torch.tensor([1, 3, 0])  # fg class 1, background, fg class 0
    # proposal 0 (fg, class 1): rare negatives 0 and 2 dropped -> 1 term
    # proposal 1 (background): nothing dropped -> 3 terms
    # proposal 2 (fg, class 0): positive kept, rare negative 2 dropped -> 2
    torch.testing.assert_close(
        loss(x, y, reduction_override='none'),
        torch.tensor([1.0, 3.0, 2.0]) * math.log(2))
    torch.testing.assert_close(loss(x, y), torch.tensor(2 * math.log(2)))


def test_threshold_is_strict():
    loss = EQLLoss(2, stats([2, 3]), freq_thr=0.003)
    assert loss.tail_mask.tolist() == [True, False]


def reference_formula(x, y, freq, lam):
    """w_ij = 1 - E(r_i) T(f_j) (1 - y_ij); sum(w * BCE) / N, element-wise."""
    n, c = len(x), len(x[0])
    total = 0.0
    for i in range(n):
        fg = 1.0 if y[i] < c else 0.0
        for j in range(c):
            t = 1.0 if y[i] == j else 0.0
            p = 1 / (1 + math.exp(-x[i][j]))
            bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
            w = 1 - fg * (1.0 if freq[j] < lam else 0.0) * (1 - t)
            total += w * bce
    return total / n


def test_against_elementwise_formula():
    counts = [1, 3, 7, 50, 400, 2, 0, 900]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 9, (30, ), generator=g)
    loss = EQLLoss(8, stats(counts), freq_thr=0.005)
    expected = reference_formula(x.tolist(), y.tolist(),
                                 [n / 1000 for n in counts], 0.005)
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-12)
    # what mmdet's BBoxHead passes: all-one weights and avg_factor = N
    assert loss(x, y, torch.ones(30), avg_factor=30.).item() == \
        pytest.approx(expected, rel=1e-6)


def test_gradient_of_rare_negatives_from_foreground_is_zero():
    loss = EQLLoss(3, stats([1, 500, 2]), freq_thr=0.0021)
    x = torch.randn(3, 3, requires_grad=True)
    loss(x, torch.tensor([1, 3, 0])).backward()
    assert x.grad[0, 0] == 0 and x.grad[0, 2] == 0 and x.grad[2, 2] == 0
    assert (x.grad[1] != 0).all()  # background suppresses every class
    assert x.grad[2, 1] != 0  # frequent negative kept


def test_no_rare_class_equals_mmdet_sigmoid_bce():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 6, generator=g, requires_grad=True)
    y = torch.randint(0, 7, (20, ), generator=g)
    w = torch.rand(20, generator=g)
    ours = EQLLoss(6, stats([100] * 6), freq_thr=1e-3)(
        x, y, w, avg_factor=20.)
    ref = CrossEntropyLoss(use_sigmoid=True)(x, y, w, avg_factor=20.)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(*[torch.autograd.grad(v, x)[0]
                                 for v in (ours, ref)])


def test_packaged_lvis_v1():
    loss = EQLLoss(1203, 'lvis_v1', freq_thr=1.1e-3)
    with open(packaged_stats_path('lvis_v1')) as f:
        data = json.load(f)
    cats = sorted(data['categories'], key=lambda c: c['id'])
    expected = [c['image_count'] / data['num_images'] < 1.1e-3 for c in cats]
    assert loss.tail_mask.tolist() == expected
    assert 300 < sum(expected) < 1203
    assert loss.get_cls_channels(1203) == 1203


def test_errors():
    with pytest.raises(ValueError, match='freq_thr'):
        EQLLoss(2, stats([1, 2]), freq_thr=-0.1)
    with pytest.raises(ValueError, match=r'num_classes=3.*\b2 classes'):
        EQLLoss(3, stats([1, 2]))
    loss = EQLLoss(2, stats([1, 2]))
    with pytest.raises(ValueError, match='3 channels, expected 2'):
        loss(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r'\[0, 2\]'):
        loss(torch.zeros(4, 2), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match='num_classes=2.*num_classes=5'):
        loss.get_cls_channels(5)


def test_tail_mask_moves_with_module_and_is_not_checkpointed():
    loss = EQLLoss(2, stats([1, 2]))
    assert 'tail_mask' not in loss.state_dict()
    assert loss.to(torch.float64).tail_mask.dtype == torch.bool
