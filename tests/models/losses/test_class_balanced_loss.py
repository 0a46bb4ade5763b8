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
