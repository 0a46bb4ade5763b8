"""Class-balanced weights (Cui et al., CVPR 2019): hand-derived values, the
official normalization and the limits in beta."""
import numpy as np
import pytest
import torch

from mmlongtail.models.losses.class_balanced_loss import (
    class_balanced_weights, roi_class_weights)


def test_hand_derived():
    # beta = 1/2, counts [1, 2]: (1 - b) / (1 - b^n) = [1, 2/3], scaled to
    # sum to C = 2: [6/5, 4/5]
    np.testing.assert_allclose(
        class_balanced_weights(np.array([1, 2]), 0.5), [1.2, 0.8])


def test_official_normalization():
    counts = np.array([1, 7, 50, 900, 12000])
    for beta in (0.9, 0.999, 0.9999):
        w = (1 - beta) / (1 - np.power(beta, counts))
        np.testing.assert_allclose(
            class_balanced_weights(counts, beta), w / w.sum() * 5,
            rtol=1e-10)


def test_limits():
    counts = np.array([1, 4, 16])
    # beta = 0: every class weighs 1
    np.testing.assert_allclose(class_balanced_weights(counts, 0.0), 1.0)
    # beta -> 1: inverse frequency
    inv = 1 / counts
    np.testing.assert_allclose(
        class_balanced_weights(counts, 1 - 1e-9), inv / inv.sum() * 3,
        rtol=1e-6)
    with pytest.raises(ValueError, match='beta'):
        class_balanced_weights(counts, 1.0)
    with pytest.raises(ValueError, match=r'classes \[1\]'):
        class_balanced_weights(np.array([3, 0]), 0.9)


def test_roi_weights():
    w = roi_class_weights(torch.tensor([1, 2, 0, 2]),
                          torch.tensor([1.2, 0.8]), 0.5)
    assert w.tolist() == pytest.approx([0.8, 0.5, 1.2, 0.5])


def _stats(instance_counts):
    return dict(
        num_images=100,
        categories=[
            dict(id=i + 1, name=f'c{i}', frequency='r', image_count=1,
                 instance_count=n) for i, n in enumerate(instance_counts)
        ])


def test_wrapping_a_sigmoid_loss_and_mmdet_ce():
    from mmlongtail.models.losses import ClassBalancedLoss, EQLLoss
    st = _stats([1, 2])
    cb = ClassBalancedLoss(
        dict(type='mmlongtail.EQLLoss', num_classes=2, category_stats=st,
             freq_thr=0.0),
        num_classes=2, category_stats=st, beta=0.5, bg_weight=0.25)
    torch.testing.assert_close(cb.class_weight, torch.tensor([1.2, 0.8]))
    assert cb.get_cls_channels(2) == 2  # the wrapped loss's layout
    x = torch.randn(4, 2)
    y = torch.tensor([0, 1, 2, 1])
    eql = EQLLoss(2, st, freq_thr=0.0)
    w = torch.tensor([1.2, 0.8, 0.25, 0.8])
    torch.testing.assert_close(cb(x, y, reduction_override='none'),
                               eql(x, y, w, reduction_override='none'))
    lw = torch.tensor([1., 0., 2., 1.])
    torch.testing.assert_close(cb(x, y, lw, avg_factor=3.0),
                               eql(x, y, w * lw, avg_factor=3.0))
    # mmdet's softmax CE: C + 1 rows, softmax scores
    ce = ClassBalancedLoss(
        dict(type='CrossEntropyLoss', use_sigmoid=False), num_classes=2,
        category_stats=st, beta=0.5)
    assert ce.get_cls_channels(2) == 3
    z = torch.randn(4, 3)
    torch.testing.assert_close(ce.get_activation(z), z.softmax(-1))
    torch.testing.assert_close(
        ce(z, y, reduction_override='none'),
        torch.nn.functional.cross_entropy(z, y, reduction='none') *
        torch.tensor([1.2, 0.8, 1.0, 0.8]))


def test_wrapper_checks():
    from mmlongtail.models.losses import ClassBalancedLoss
    st = _stats([1, 2])
    with pytest.raises(ValueError, match='num_classes'):
        ClassBalancedLoss(
            dict(type='mmlongtail.FocalLoss', num_classes=3),
            num_classes=2, category_stats=st)
    with pytest.raises(ValueError, match='num_classes=3'):
        ClassBalancedLoss(dict(type='mmlongtail.FocalLoss'), num_classes=3,
                          category_stats=st)
    cb = ClassBalancedLoss(dict(type='mmlongtail.FocalLoss'), num_classes=2,
                           category_stats=st)
    with pytest.raises(ValueError, match='labels'):
        cb(torch.zeros(2, 2), torch.tensor([0, 3]))
