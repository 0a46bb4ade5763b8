"""mmlongtail.EqualizedFocalLoss (Li et al., CVPR 2022): hand-derived values
with the statistics set by hand, the official algorithm (ModelTC/EOD's
``EqualizedFocalLoss`` and its gradient hook, re-stated below from the
formula) over several iterations, focal loss at the start, when the
statistics move, checkpoint round trips and bf16 autocast."""
import io
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.losses import FocalLoss as MMDetFocalLoss

import mmlongtail  # noqa: F401
from mmlongtail.models.losses import EqualizedFocalLoss
from mmlongtail.models.losses.efl_loss import efl_logit_gradient

C = 6
LN2 = math.log(2)


def batches(num, n=64, seed=0, dtype=torch.float32):
    """Skewed labels (class 0 frequent, class C - 1 never seen), a tenth of
    the samples ignored (weight 0), as an anchor head gives them."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(num):
        x = (torch.randn(n, C, generator=g) * 2.5 - 2).to(dtype)
        y = torch.multinomial(
            torch.tensor([10., 5, 3, 1, 0.5, 0, 60]), n, True, generator=g)
        w = (torch.rand(n, generator=g) > 0.1).to(dtype)
        yield x.requires_grad_(True), y, w


class OfficialEFL:
    """The official algorithm, written from its definition (EOD's efl.py):
    labels 0 = background, 1..C classes, -1 ignored (dropped); the loss is
    ``-log(sigmoid) * (1 - p_t)^gamma_j * gamma_j / gamma_b * alpha_t``
    summed over the kept samples and divided by the normalizer; after
    backward, |d loss / d logit| of the kept samples is summed per class
    over positives and negatives, and ``pos_neg = clamp(pos / (neg +
    1e-10), 0, 1)`` (1 at the start). Autograd gives the gradient here, as
    the official backward hook does."""

    def __init__(self, gamma=2.0, scale=8.0, alpha=0.25):
        self.gamma, self.scale, self.alpha = gamma, scale, alpha
        self.pos = torch.zeros(C, dtype=torch.float64)
        self.neg = torch.zeros(C, dtype=torch.float64)
        self.pos_neg = torch.ones(C, dtype=torch.float64)

    def step(self, x, labels_eod, normalizer):
        x = x.detach().double().requires_grad_(True)
        keep = labels_eod != -1
        target = F.one_hot(labels_eod.clamp(min=0), C + 1)[:, 1:].double()
        xk, tk = x[keep], target[keep]
        pred = xk.sigmoid()
        pred_t = pred * tk + (1 - pred) * (1 - tk)
        gamma_j = self.gamma + self.scale * (1 - self.pos_neg)
        loss = -torch.log(pred_t) * (1 - pred_t).pow(gamma_j) * (
            gamma_j / self.gamma)
        loss = loss * (self.alpha * tk + (1 - self.alpha) * (1 - tk))
        loss = loss.sum() / normalizer
        loss.backward()
        grad = x.grad.abs()[keep]
        self.pos += (grad * tk).sum(0)
        self.neg += (grad * (1 - tk)).sum(0)
        self.pos_neg = (self.pos / (self.neg + 1e-10)).clamp(0, 1)
        return loss.detach(), x.grad


def to_official_labels(y, w):
    """mmdet's [0, C] (background C) and zero weights -> EOD's labels."""
    out = torch.where(y == C, torch.zeros_like(y), y + 1)
    out[w == 0] = -1
    return out


def test_hand_derived_values_with_statistics_set_by_hand():
    loss = EqualizedFocalLoss(3, gamma=2, scale_factor=8, alpha=0.25,
                              reduction='sum')
    # g = 1, 0.5, 0 -> gamma_j = 2, 6, 10 and weights 1, 3, 5
    loss.pos_neg.copy_(torch.tensor([1.0, 0.5, 0.0]))
    gammas, weights = loss.get_factors()
    assert gammas.tolist() == [2.0, 6.0, 10.0]
    assert weights.tolist() == [1.0, 3.0, 5.0]
    # zero logits: p_t = 1 - p_t = 1/2, -log p_t = ln 2
    x = torch.zeros(2, 3, requires_grad=True)
    y = torch.tensor([0, 3])  # class 0, background
    out = loss(x, y)
    neg = 0.75 * (1 * 0.5**2 + 3 * 0.5**6 + 5 * 0.5**10) * LN2
    expected = (0.25 * 0.5**2 * LN2 +  # row 0, class 0 positive
                0.75 * (3 * 0.5**6 + 5 * 0.5**10) * LN2 +  # row 0 negatives
                neg)  # row 1: background, every class negative
    assert out.item() == pytest.approx(expected, rel=1e-6)
    # factors of this batch stay as set until backward
    assert loss.pos_grad.sum() == 0 and loss.pos_neg[0] == 1
    out.backward()
    # |d/dx| at p_t = 1/2: alpha_t w 2^-gamma (1/2 + gamma ln2 / 2)
    def g(a, gamma, w):
        return a * w * 0.5**gamma * (0.5 + gamma * 0.5 * LN2)

    expected_grad = torch.tensor([
        [-g(0.25, 2, 1), g(0.75, 6, 3), g(0.75, 10, 5)],
        [g(0.75, 2, 1), g(0.75, 6, 3), g(0.75, 10, 5)]])
    torch.testing.assert_close(x.grad, expected_grad)
    torch.testing.assert_close(loss.pos_grad,
                               torch.tensor([g(0.25, 2, 1), 0, 0]))
    torch.testing.assert_close(
        loss.neg_grad,
        torch.tensor([g(0.75, 2, 1), 2 * g(0.75, 6, 3), 2 * g(0.75, 10, 5)]))
    # g_0 = pos / neg = (0.25 / 0.75) = 1/3; classes 1, 2 never positive
    torch.testing.assert_close(loss.pos_neg, torch.tensor([1 / 3, 0, 0]))


def test_ratio_is_clamped_to_one():
    """A class whose positives out-pull its negatives keeps g = 1 (the
    base focusing), however large the ratio."""
    loss = EqualizedFocalLoss(2, reduction='sum')
    # a hard positive (p = 0.018) and an easy negative of class 0
    x = torch.tensor([[-4.0, -4.0], [-4.0, -4.0]], requires_grad=True)
    loss(x, torch.tensor([0, 2])).backward()
    assert loss.pos_grad[0] > 100 * loss.neg_grad[0]
    assert loss.pos_neg.tolist() == [1.0, 0.0]


def test_starts_as_focal_loss():
    """g_j = 1 at the start: gamma_j = 2, weight 1, i.e. mmdet's focal."""
    ours = EqualizedFocalLoss(C)
    ref = MMDetFocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25)
    x, y, w = next(batches(1))
    a = ours(x, y, w, avg_factor=9.0)
    b = ref(x, y, w, avg_factor=9.0)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    ga, = torch.autograd.grad(a, x)
    gb, = torch.autograd.grad(b, x)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_equals_the_official_algorithm_over_iterations(dtype):
    ours = EqualizedFocalLoss(C)
    ref = OfficialEFL()
    tol = dict(rtol=1e-5, atol=1e-9) if dtype == torch.float32 else dict(
        rtol=1e-6, atol=1e-12)
    for x, y, w in batches(8, dtype=dtype):
        normalizer = float(((y < C) & (w > 0)).sum().clamp(min=1))
        out = ours(x, y, w, avg_factor=normalizer)
        ref_loss, ref_grad = ref.step(x, to_official_labels(y, w),
                                      normalizer)
        out.backward()
        torch.testing.assert_close(out.double(), ref_loss, **tol)
        torch.testing.assert_close(x.grad.double(), ref_grad, **tol)
        torch.testing.assert_close(ours.pos_grad.double(), ref.pos, **tol)
        torch.testing.assert_close(ours.neg_grad.double(), ref.neg, **tol)
        torch.testing.assert_close(ours.pos_neg.double(), ref.pos_neg, **tol)
    # the statistics really moved: frequent class 0 is equalized least,
    # class C - 1 (never positive) gets the strongest focusing
    gammas, _ = ours.get_factors()
    assert gammas[C - 1] == 10 and gammas[0] < gammas[3] < 10
    assert ours.pos_neg.dtype == torch.float32


def test_statistics_are_the_logit_gradient_for_every_reduction():
    """The closed form equals autograd's gradient of the returned loss
    (loss_weight, avg_factor, label_weights and the reduction included)."""
    cases = [dict(reduction_override='mean'),
             dict(reduction_override='mean', avg_factor=7.0),
             dict(reduction_override='mean', avg_factor=torch.tensor(3.5)),
             dict(reduction_override='sum')]
    for kwargs in cases:
        loss = EqualizedFocalLoss(C, loss_weight=2.5)
        exp_pos, exp_neg = torch.zeros(C), torch.zeros(C)
        for x, y, w in batches(3, seed=1):
            seen = []
            x.register_hook(seen.append)
            loss(x, y, w, **kwargs).backward()
            grad = seen[0].abs()
            target = F.one_hot(y, C + 1)[:, :C].float()
            exp_pos += (grad * target).sum(0)
            exp_neg += (grad * (1 - target)).sum(0)
            torch.testing.assert_close(loss.pos_grad, exp_pos, rtol=1e-5,
                                       atol=1e-8)
            torch.testing.assert_close(loss.neg_grad, exp_neg, rtol=1e-5,
                                       atol=1e-8)


def test_calls_before_backward_share_the_factors():
    """Per-level calls of one step (RetinaNet, ATSS) all use the factors of
    the previous steps; the backward adds every level; a call that is not
    backpropagated adds nothing."""
    it = list(batches(3, seed=5))
    split = EqualizedFocalLoss(C)
    whole = EqualizedFocalLoss(C)
    for x, y, w in it:
        halves = [split(x[:20], y[:20], w[:20], reduction_override='sum'),
                  split(x[20:], y[20:], w[20:], reduction_override='sum')]
        full = whole(x, y, w, reduction_override='sum')
        torch.testing.assert_close(sum(halves), full)
        sum(halves).backward()
        full.backward()
        torch.testing.assert_close(split.pos_grad, whole.pos_grad)
        torch.testing.assert_close(split.neg_grad, whole.neg_grad)
    before = {k: v.clone() for k, v in split.state_dict().items()}
    x, y, w = it[0]
    split(x, y, w)  # never backpropagated
    with torch.no_grad():
        split(x, y, w)
    split(x.detach(), y, w)
    for k, v in split.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_state_dict_round_trip_resumes_exactly():
    it = list(batches(6, seed=2))
    a = EqualizedFocalLoss(C)
    for x, y, w in it[:3]:
        a(x, y, w, avg_factor=5.0).backward()
    state = a.state_dict()
    assert set(state) == {'pos_grad', 'neg_grad', 'pos_neg'}
    assert all(v.dtype == torch.float32 for v in state.values())
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    b = EqualizedFocalLoss(C)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for x, y, w in it[3:]:
        xb = x.detach().clone().requires_grad_(True)
        la, lb = a(x, y, w, avg_factor=5.0), b(xb, y, w, avg_factor=5.0)
        assert torch.equal(la, lb)
        la.backward()
        lb.backward()
        assert torch.equal(x.grad, xb.grad)
    for k in state:
        assert torch.equal(a.state_dict()[k], b.state_dict()[k]), k


def test_bf16_autocast_keeps_float32_statistics():
    lin = torch.nn.Linear(8, C)
    ours, ref = EqualizedFocalLoss(C), EqualizedFocalLoss(C)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        feats = torch.randn(40, 8, generator=g)
        y = torch.randint(0, C + 1, (40, ), generator=g)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            logits = lin(feats)
            assert logits.dtype == torch.bfloat16
            out = ours(logits, y)
        assert torch.isfinite(out) and out.dtype == torch.float32
        out.backward()
        assert torch.isfinite(lin.weight.grad).all()
        # the same bf16 logits in float32 give the same statistics
        x = logits.detach().float().requires_grad_(True)
        ref(x, y).backward()
    for name in ('pos_grad', 'neg_grad', 'pos_neg'):
        assert getattr(ours, name).dtype == torch.float32
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name))
    assert ours.pos_grad.sum() > 0


def test_large_logits_stay_finite():
    """The official -log(sigmoid(x)) is inf for confident mistakes."""
    x = torch.tensor([[-120.0, 120.0]], requires_grad=True)
    loss = EqualizedFocalLoss(2, reduction='sum')
    out = loss(x, torch.tensor([0]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()
    assert torch.isfinite(loss.pos_neg).all()


def test_empty_batch():
    loss = EqualizedFocalLoss(C)
    x = torch.zeros(0, C, requires_grad=True)
    out = loss(x, torch.zeros(0, dtype=torch.long))
    out.backward()
    assert out.item() == 0 and loss.pos_grad.sum() == 0


def test_closed_form_gradient_sign_free_of_labels_outside_classes():
    pos, neg = efl_logit_gradient(
        torch.zeros(1, 2), torch.tensor([2]), torch.full((2, ), 2.0),
        torch.ones(2), alpha=0.25)
    assert pos.sum() == 0  # background: every class negative
    torch.testing.assert_close(neg, torch.full((2, ),
                                               0.75 * 0.25 * (0.5 + LN2)))


def test_errors():
    loss = EqualizedFocalLoss(C)
    with pytest.raises(ValueError,
                       match=f'{C + 1} channels, expected {C} channels'):
        loss(torch.zeros(2, C + 1), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r'\[0, 6\].*got \[7\]'):
        loss(torch.zeros(2, C), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r'labels must have shape \(2,\)'):
        loss(torch.zeros(2, C), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match='label_weights'):
        loss(torch.zeros(2, C), torch.tensor([0, 1]), torch.ones(3))
    with pytest.raises(ValueError, match=r'must be \(N, 6\).*\(2, 1, 6\)'):
        loss(torch.zeros(2, 1, C), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match='use_sigmoid'):
        EqualizedFocalLoss(C, use_sigmoid=False)
    with pytest.raises(ValueError, match='gamma must be > 0'):
        EqualizedFocalLoss(C, gamma=0)
    with pytest.raises(ValueError, match='num_classes'):
        EqualizedFocalLoss(0)
