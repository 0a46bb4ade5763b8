"""ECM loss (Cho and Krähenbühl, ECCV 2022): counts, margins and weights of a
tiny case by hand, the loss against the official exp-form formula written
out element by element, gradient and test-time scores."""
import math

import numpy as np
import pytest
import torch

from mmlongtail.models.losses.ecm_loss import (ecm_counts, ecm_loss,
                                               ecm_margins, ecm_scores)


def test_counts_append_background():
    n = ecm_counts(np.array([1, 3]), 1.0)
    np.testing.assert_array_equal(n, [1., 3., 4.])
    np.testing.assert_allclose(
        ecm_counts(np.array([2, 8]), 6.3313), [2., 8., 63.313])
    with pytest.raises(ValueError, match=r'classes \[1\]'):
        ecm_counts(np.array([3, 0]), 1.0)
    with pytest.raises(ValueError, match='fg_bg_ratio'):
        ecm_counts(np.array([3, 1]), 0.0)


def test_hand_derived_margins_and_weights():
    # n = [1, 3, 4], total 8 -> negatives [7, 5, 4]
    offset, weight = ecm_margins(np.array([1., 3., 4.]))
    np.testing.assert_allclose(
        offset,
        [0.25 * math.log(1 / 7), 0.25 * math.log(3 / 5), 0.0])
    np.testing.assert_allclose(weight, [
        7 * math.log(8 / 7), 5 / 3 * math.log(8 / 5), math.log(2)])


def test_weight_tends_to_one_for_rare_classes():
    # a log((1 + a) / a) -> 1 - 1 / (2a); the official code computes it in
    # float32, where (1 + a) / a rounds to 1 or 1 + 2^-23 once a ~ 1e6 (LVIS
    # classes with 1-2 images), an error of up to 5 %; here float64.
    counts = np.array([1., 2., 1e6])
    _, weight = ecm_margins(counts)
    a = (counts.sum() - counts[:2]) / counts[:2]
    np.testing.assert_allclose(weight[:2], 1 - 1 / (2 * a), rtol=1e-9)


def official_formula(z, y, counts):
    """The official loss from its definition, element by element, in the
    exp form: p+ = e^(z + m+) / (e^(z + m+) + e^(-z + m-))."""
    n = list(counts)
    total = sum(n)
    out = []
    for zi, yi in zip(z, y):
        s = 0.0
        for j, zij in enumerate(zi):
            neg = total - n[j]
            r_p, r_n = n[j]**0.25, neg**0.25
            m_pos = math.log((r_p + r_n) / r_n)
            m_neg = math.log((r_p + r_n) / r_p)
            e_p, e_n = math.exp(zij + m_pos), math.exp(-zij + m_neg)
            a = neg / n[j]
            w = a * math.log((1 + a) / a)
            t = 1.0 if yi == j else 0.0
            s += -w * (t * math.log(e_p / (e_p + e_n)) +
                       (1 - t) * math.log(e_n / (e_p + e_n)))
        out.append(s)
    return out


def _ecm(z, y, counts):
    offset, weight = ecm_margins(counts)
    return ecm_loss(z, y, torch.tensor(offset), torch.tensor(weight),
                    reduction='none')


def test_hand_derived_loss_at_zero_logits():
    # C = 2, image counts [1, 3], fg_bg_ratio 1 -> n = [1, 3, 4]; a
    # background RoI with all logits 0: two negatives, one positive
    counts = ecm_counts(np.array([1, 3]), 1.0)
    z = torch.zeros(1, 3, dtype=torch.float64)
    expected = (7 * math.log(8 / 7) * math.log(1 + 7**-0.25) +
                5 / 3 * math.log(8 / 5) * math.log(1 + 0.6**0.25) +
                math.log(2) * math.log(2))
    torch.testing.assert_close(
        _ecm(z, torch.tensor([2]), counts),
        torch.tensor([expected], dtype=torch.float64))


def test_equals_official_formula_and_its_gradient():
    counts = ecm_counts(np.array([1, 5, 40, 300]), 6.3313)
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(12, 5, generator=g, dtype=torch.float64) *
         3).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 4, 4, 4, 4, 0, 3, 2, 4])
    got = _ecm(z, y, counts)
    torch.testing.assert_close(
        got,
        torch.tensor(official_formula(z.tolist(), y.tolist(), counts),
                     dtype=torch.float64))
    offset, weight = ecm_margins(counts)
    mean = ecm_loss(z, y, torch.tensor(offset), torch.tensor(weight))
    torch.testing.assert_close(mean, got.sum() / 12)
    mean.backward()
    # d/dz of w BCE(2z + m, t) = 2 w (sigmoid(2z + m) - t), / N
    t = torch.nn.functional.one_hot(y, 5).double()
    p = torch.sigmoid(2 * z.detach() + torch.tensor(offset))
    torch.testing.assert_close(z.grad,
                               2 * torch.tensor(weight) * (p - t) / 12)


def test_large_logits_stay_finite():
    # the official exp form overflows in float32 beyond z ~ 88
    counts = ecm_counts(np.array([1, 3]), 1.0)
    z = torch.tensor([[100., -100., 95.]], requires_grad=True)
    loss = _ecm(z, torch.tensor([0]), counts).sum()
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_scores():
    z = torch.tensor([[0., 0., 0.], [2., -1., 1.]])
    s = ecm_scores(z)
    torch.testing.assert_close(s[0], torch.tensor([0.25, 0.25, 0.5]))
    p = torch.sigmoid(z[1])
    torch.testing.assert_close(
        s[1], torch.stack([p[0] * (1 - p[2]), p[1] * (1 - p[2]), p[2]]))


def test_module():
    from mmlongtail.models.losses import ECMLoss
    st = dict(
        num_images=10,
        categories=[
            dict(id=i + 1, name=f'c{i}', frequency='r', image_count=n,
                 instance_count=n) for i, n in enumerate([1, 3])
        ])
    loss = ECMLoss(2, st, fg_bg_ratio=1.0)
    offset, weight = ecm_margins(np.array([1., 3., 4.]))
    torch.testing.assert_close(loss.offset, torch.tensor(offset).float())
    torch.testing.assert_close(loss.class_weight,
                               torch.tensor(weight).float())
    assert loss.get_cls_channels(2) == 3
    layout = loss.classifier_layout(2)
    assert layout.rows('background').tolist() == [2]
    z = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 2, 1])
    torch.testing.assert_close(loss.get_activation(z), ecm_scores(z))
    torch.testing.assert_close(
        loss(z, y), ecm_loss(z, y, loss.offset, loss.class_weight))
    with pytest.raises(ValueError, match='channels'):
        loss(torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match='num_classes=3'):
        ECMLoss(3, st)
