"""Gumbel loss with DropLoss (Alexandridis et al., ECCV 2022): the Gumbel BCE
and its clamps by hand, the official gradient quirk, DropLoss's weights and
ratio in a tiny case, and the official DropLoss written out from its
definition under the same random draws."""
import math

import pytest
import torch

from mmlongtail.models.losses.gumbel_loss import (drop_loss_weights,
                                                  gumbel_activation,
                                                  gumbel_bce, gumbel_loss,
                                                  rare_positive_ratio)


def test_activation():
    z = torch.tensor([0., 1., -1.])
    torch.testing.assert_close(
        gumbel_activation(z),
        torch.tensor([math.exp(-1), math.exp(-math.exp(-1)),
                      math.exp(-math.e)]))


def test_hand_derived_bce_and_clamps():
    z = torch.tensor([[0., 0., -10., 20.]], requires_grad=True)
    t = torch.tensor([[1., 0., 1., 0.]])
    loss = gumbel_bce(z, t)
    # -log p = e^-z at the positive; -log(1 - p) at the negative; z = -10 is
    # clamped to -4, z = 20 to 10
    expected = [1.0, -math.log(1 - math.exp(-1)), math.exp(4),
                -math.log(1 - math.exp(-math.exp(-10)))]
    torch.testing.assert_close(loss[0], torch.tensor(expected), rtol=2e-4,
                               atol=0)
    loss.sum().backward()
    # no gradient through the clamps
    assert z.grad[0, 2] == 0 and z.grad[0, 3] == 0
    # d/dz: -e^-z for a positive, p e^-z / (1 - p) for a negative
    p = math.exp(-1)
    torch.testing.assert_close(z.grad[0, :2],
                               torch.tensor([-1.0, p / (1 - p)]))


def test_official_gradient_vanishes_for_very_low_positive_logits():
    # F.binary_cross_entropy divides by max(p (1 - p), 1e-12): a positive
    # with p < 1e-12 (z < -3.32) gets (p - 1) / 1e-12 * dp/dz instead of
    # -e^-z. Kept, as in the official code.
    z = torch.tensor([[-3.5, -3.0]], dtype=torch.float64,
                     requires_grad=True)
    gumbel_bce(z, torch.ones(1, 2)).sum().backward()
    zf = torch.tensor([-3.5, -3.0])  # the loss runs in float32
    p = torch.exp(-torch.exp(-zf))
    assert p[0] < 1e-12 < p[1]
    quirk = (p[0] - 1) / 1e-12 * p[0] * torch.exp(-zf[0])
    torch.testing.assert_close(z.grad[0, 0].float(), quirk, rtol=1e-4,
                               atol=0)
    assert abs(z.grad[0, 0]) < 0.2 < math.exp(3.5)
    torch.testing.assert_close(z.grad[0, 1].float(), -torch.exp(-zf[1]),
                               rtol=1e-4, atol=0)


def test_ratio():
    rare = torch.tensor([True, False, True])
    labels = torch.tensor([0, 1, 3, 3, 2, 1])  # fg: 0 (r), 1, 2 (r), 1
    assert rare_positive_ratio(labels, rare).item() == 0.5
    valid = torch.tensor([True, True, True, True, False, True])
    assert rare_positive_ratio(labels, rare, valid).item() == pytest.approx(
        1 / 3)
    # no foreground RoI: 1 (the official NaN ratio keeps every negative)
    assert rare_positive_ratio(torch.tensor([3, 3]), rare).item() == 1.0


def test_hand_derived_drop_weights():
    rare = torch.tensor([True, False, True])
    labels = torch.tensor([0, 1, 3, 3])
    ratio = rare_positive_ratio(labels, rare)  # 1 of 2 fg is rare: 0.5
    rand = torch.tensor([[0.9, 0.9, 0.9], [0.9, 0.9, 0.9],
                         [0.1, 0.7, 0.6], [0.9, 0.2, 0.4]])
    w = drop_loss_weights(labels, rare, ratio, rand)
    # fg rows: rare negatives dropped, the positive kept; bg rows: a rare
    # negative is dropped where rand > ratio
    assert w.tolist() == [[1, 1, 0], [0, 1, 0], [1, 1, 0], [0, 1, 1]]


def official_droploss(x, y, freq, lam, rand):
    """kostas1515/GOL DropLoss(use_classif='gumbel') from its definition,
    with the random draws passed in."""
    n, c = x.shape
    target = torch.zeros(n, c + 1)
    target[torch.arange(n), y] = 1
    target = target[:, :c]
    tail = (freq < lam).float().expand(n, c)
    fgm = y != c
    ratio = torch.mean((freq[y[fgm]] < lam).float())
    fg = fgm.float().view(n, 1).expand(n, c)
    keep_rand = rand * (1 - fg)
    keep_rand = torch.where(keep_rand > ratio, 1.0, 0.0)
    drop_w = 1 - (keep_rand + fg) * tail * (1 - target)
    p = 1 / torch.exp(torch.exp(-x.clamp(-4, 10)))
    elem = torch.nn.functional.binary_cross_entropy(p, target,
                                                    reduction='none')
    return torch.sum(elem * drop_w) / n


@pytest.mark.parametrize('seed', [0, 1])
@pytest.mark.parametrize('with_fg', [True, False])
def test_equals_official_under_the_same_draws(seed, with_fg):
    c, lam = 6, 0.01
    freq = torch.tensor([0.001, 0.5, 0.005, 0.2, 0.009, 0.05])
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(20, c, generator=g) * 4).requires_grad_(True)
    y = torch.randint(0, c + 1, (20, ), generator=g)
    if not with_fg:
        y[:] = c
    rand = torch.rand(20, c, generator=g)
    ref = official_droploss(x, y, freq, lam, rand)
    ref_grad, = torch.autograd.grad(ref, x)
    rare = freq < lam
    w = drop_loss_weights(y, rare, rare_positive_ratio(y, rare), rand)
    got = gumbel_loss(x, y, w)
    got_grad, = torch.autograd.grad(got, x)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got_grad, ref_grad)


def test_without_drop_and_under_autocast():
    x = torch.randn(5, 3) * 3
    y = torch.tensor([0, 1, 2, 3, 3])
    plain = gumbel_loss(x, y, reduction='none')
    t = torch.nn.functional.one_hot(y, 4)[:, :3].float()
    torch.testing.assert_close(plain, gumbel_bce(x, t).sum(1))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = gumbel_loss(x.bfloat16(), y)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, plain.mean(), rtol=2e-2, atol=0)


def _stats(image_counts, num_images=1000):
    return dict(
        num_images=num_images,
        categories=[
            dict(id=i + 1, name=f'c{i}', frequency='r', image_count=n,
                 instance_count=n) for i, n in enumerate(image_counts)
        ])


def test_module_equals_official_under_one_seed():
    from mmlongtail.models.losses import GumbelLoss
    counts = [1, 500, 5, 200, 9, 50]
    freq = torch.tensor(counts) / 1000
    loss = GumbelLoss(6, _stats(counts), lambda_=0.01)
    assert loss.rare_mask.tolist() == [True, False, True, False, True,
                                       False]
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(24, 6, generator=g) * 4).requires_grad_(True)
    y = torch.randint(0, 7, (24, ), generator=g)
    torch.manual_seed(11)
    ref = official_droploss(x, y, freq, 0.01, torch.rand(24, 6))
    ref_grad, = torch.autograd.grad(ref, x)
    torch.manual_seed(11)
    got = loss(x, y, torch.ones(24), avg_factor=24.0)
    got_grad, = torch.autograd.grad(got, x)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(got_grad, ref_grad)
    # test-time class scores are the official (unclamped) Gumbel ones
    s = loss.get_activation(x.detach())
    torch.testing.assert_close(s[:, :6], 1 / torch.exp(torch.exp(-x)))
    torch.testing.assert_close(s[:, 6], 1 - s[:, :6].max(1).values)


def test_module_checks():
    from mmlongtail.models.losses import GumbelLoss
    with pytest.raises(ValueError, match='category_stats'):
        GumbelLoss(3)
    plain = GumbelLoss(3, drop_loss=False)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 3])
    t = torch.nn.functional.one_hot(y, 4)[:, :3].float()
    torch.testing.assert_close(plain(x, y), gumbel_bce(x, t).sum() / 4)
    with pytest.raises(ValueError, match='num_classes=4'):
        GumbelLoss(4, _stats([1, 2, 3]))
