"""Balanced softmax / logit-adjusted CE (Ren et al., NeurIPS 2020; Menon et
al., ICLR 2021) and BALMS's sigmoid variant: priors, hand-derived values and
gradients of tiny cases, and the formulas written out element by element."""
import math

import numpy as np
import pytest
import torch

from mmlongtail.models.losses.balanced_softmax_loss import (
    balanced_sigmoid_loss, balanced_softmax_loss, sigmoid_log_odds,
    softmax_log_prior)


def test_log_prior_with_background():
    # counts [1, 3], background 4 x 4 = 16: pi = [1, 3, 16] / 20
    np.testing.assert_allclose(
        softmax_log_prior(np.array([1, 3]), 4.0),
        np.log([1 / 20, 3 / 20, 16 / 20]))
    with pytest.raises(ValueError, match=r'classes \[0\]'):
        softmax_log_prior(np.array([0, 3]), 4.0)
    with pytest.raises(ValueError, match='fg_bg_ratio'):
        softmax_log_prior(np.array([1, 3]), -1.0)


def test_hand_derived_softmax():
    log_prior = torch.tensor(np.log([1 / 20, 3 / 20, 16 / 20]))
    z = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2])
    none = balanced_softmax_loss(z, y, log_prior, reduction='none')
    # zero logits: the softmax of z + log pi is pi itself
    torch.testing.assert_close(
        none, torch.tensor([math.log(20), math.log(20 / 3),
                            math.log(20 / 16)], dtype=torch.float64))
    # tau = 0.5: weights sqrt(pi)
    half = balanced_softmax_loss(z[:1], y[:1], log_prior, tau=0.5,
                                 reduction='none')[0]
    s = math.sqrt(1 / 20) + math.sqrt(3 / 20) + math.sqrt(16 / 20)
    assert half.item() == pytest.approx(-math.log(math.sqrt(1 / 20) / s))
    # gradient: softmax(z + log pi) - onehot, / N
    balanced_softmax_loss(z, y, log_prior).backward()
    pi = torch.tensor([1 / 20, 3 / 20, 16 / 20], dtype=torch.float64)
    torch.testing.assert_close(
        z.grad, (pi[None, :] - torch.eye(3, dtype=torch.float64)) / 3)


def test_softmax_formula_and_tau_zero():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 4, generator=g, dtype=torch.float64) * 2
    y = torch.tensor([0, 1, 2, 3, 3, 3, 0, 1])
    log_prior = torch.tensor(softmax_log_prior(np.array([2, 10, 50]), 6.0))
    got = balanced_softmax_loss(z, y, log_prior, tau=0.7, reduction='none')
    ref = []
    for zi, yi in zip(z.tolist(), y.tolist()):
        a = [v + 0.7 * lp for v, lp in zip(zi, log_prior.tolist())]
        ref.append(math.log(sum(math.exp(v) for v in a)) - a[yi])
    torch.testing.assert_close(got, torch.tensor(ref, dtype=torch.float64))
    # tau = 0 is plain softmax cross entropy
    torch.testing.assert_close(
        balanced_softmax_loss(z, y, log_prior, tau=0.0),
        torch.nn.functional.cross_entropy(z, y))


def test_log_odds():
    np.testing.assert_allclose(
        sigmoid_log_odds(np.array([0.2, 0.5])), [math.log(4), 0.0])
    with pytest.raises(ValueError, match=r'classes \[1\]'):
        sigmoid_log_odds(np.array([0.2, 0.0]))


def bce(x, t):
    return math.log(1 + math.exp(-x)) if t else math.log(1 + math.exp(x))


def test_hand_derived_sigmoid_variant():
    log_odds = torch.tensor([math.log(4), 0.0])  # f = [0.2, 0.5]
    z = torch.zeros(3, 2, requires_grad=True)
    y = torch.tensor([0, 1, 2])
    none = balanced_sigmoid_loss(z, y, log_odds, reduction='none')
    # fg RoIs: logits shifted by -log 4 on class 0; background untouched
    expected = [bce(-math.log(4), 1) + bce(0, 0),
                bce(-math.log(4), 0) + bce(0, 1),
                2 * bce(0, 0)]
    torch.testing.assert_close(none, torch.tensor(expected))
    assert expected[0] == pytest.approx(math.log(5) + math.log(2))
    balanced_sigmoid_loss(z, y, log_odds).backward()
    p = torch.sigmoid(torch.tensor([[-math.log(4), 0.], [-math.log(4), 0.],
                                    [0., 0.]]))
    t = torch.tensor([[1., 0.], [0., 1.], [0., 0.]])
    torch.testing.assert_close(z.grad, (p - t) / 3)


def test_sigmoid_variant_formula():
    """BALMS's balanced_softmax_loss from its definition: fg rows get
    z - log((1 - f) / f); BCE summed over classes and RoIs, / N."""
    freq = torch.tensor([0.001, 0.3, 0.02, 0.6])
    g = torch.Generator().manual_seed(1)
    z = torch.randn(10, 4, generator=g) * 3
    y = torch.randint(0, 5, (10, ), generator=g)
    adj = z.clone()
    fg = y != 4
    adj[fg] = (z - ((1 - freq) / freq).log())[fg]
    target = torch.zeros(10, 5)
    target[torch.arange(10), y] = 1
    ref = torch.nn.functional.binary_cross_entropy_with_logits(
        adj, target[:, :4], reduction='none').sum() / 10
    got = balanced_sigmoid_loss(
        z, y, torch.tensor(sigmoid_log_odds(freq.double().numpy())).float())
    torch.testing.assert_close(got, ref)


def _stats(image_counts, instance_counts, num_images=100):
    return dict(
        num_images=num_images,
        categories=[
            dict(id=i + 1, name=f'c{i}', frequency='r', image_count=n,
                 instance_count=m)
            for i, (n, m) in enumerate(zip(image_counts, instance_counts))
        ])


def test_module_priors_and_checks():
    from mmlongtail.models.losses import BalancedSoftmaxLoss
    st = _stats([1, 3], [2, 30])
    soft = BalancedSoftmaxLoss(2, st, fg_bg_ratio=4.0)
    torch.testing.assert_close(
        soft.adjustment,
        torch.tensor(np.log([1 / 20, 3 / 20, 16 / 20])).float())
    inst = BalancedSoftmaxLoss(2, st, fg_bg_ratio=1.0, count='instance')
    torch.testing.assert_close(
        inst.adjustment,
        torch.tensor(np.log([2 / 64, 30 / 64, 32 / 64])).float())
    sig = BalancedSoftmaxLoss(2, st, use_sigmoid=True)
    torch.testing.assert_close(
        sig.adjustment, torch.tensor([math.log(99), math.log(97 / 3)]))
    assert soft.get_cls_channels(2) == 3 and sig.get_cls_channels(2) == 2
    z = torch.randn(4, 3)
    torch.testing.assert_close(soft.get_activation(z), z.softmax(-1))
    with pytest.raises(ValueError, match="count must be 'image'"):
        BalancedSoftmaxLoss(2, st, use_sigmoid=True, count='instance')
    with pytest.raises(ValueError, match='num_classes=3'):
        BalancedSoftmaxLoss(3, st)
    y = torch.tensor([0, 1, 2, 2])
    torch.testing.assert_close(
        soft(z, y), balanced_softmax_loss(z, y, soft.adjustment))
