"""mmlongtail.EQLv2Loss (Tan et al., CVPR 2021) against the official
semantics: mmdet 3.3.0's EQLV2Loss (a port of tztztztztz/eqlv2's EQLv2) over
several iterations, the gradient a backward hook on the logits sees,
hand-derived weights, and checkpoint round trips."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmdet.models.losses import EQLV2Loss as MMDetEQLV2Loss

import mmlongtail  # noqa: F401
from mmlongtail.models.losses import EQLv2Loss

C = 6


def batches(num, n=32, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    for _ in range(num):
        x = torch.randn(n, C + 1, generator=g, dtype=dtype) * 2
        # skewed labels: class 0 frequent, class C-1 never seen
        y = torch.multinomial(
            torch.tensor([8., 4, 2, 1, 1, 0, 12]), n, True, generator=g)
        yield x.requires_grad_(True), y


def test_initial_weights_are_one_and_loss_is_bce_sum_over_n():
    loss = EQLv2Loss(C)
    pos_w, neg_w = loss.get_weights()
    assert torch.equal(pos_w, torch.ones(C + 1))
    assert torch.equal(neg_w, torch.ones(C + 1))
    x, y = next(batches(1))
    target = F.one_hot(y, C + 1).float()
    expected = F.binary_cross_entropy_with_logits(
        x, target, reduction='sum') / len(y)
    torch.testing.assert_close(loss(x, y), expected)


def test_hand_derived_weights():
    loss = EQLv2Loss(2, gamma=12, mu=0.8, alpha=4)
    # ratio 0.8 -> q = 0.5: negatives weigh 0.5, positives 1 + 4 * 0.5 = 3
    # ratio 0 -> q = 1 / (1 + e^9.6)
    loss.pos_neg.copy_(torch.tensor([0.8, 0.0]))
    pos_w, neg_w = loss.get_weights()
    q1 = 1 / (1 + math.exp(12 * 0.8))
    torch.testing.assert_close(neg_w, torch.tensor([0.5, q1, 1.0]))
    torch.testing.assert_close(pos_w, torch.tensor([3.0, 1 + 4 * (1 - q1),
                                                    1.0]))
    x = torch.zeros(2, 3)
    y = torch.tensor([0, 2])  # class 0, background
    ln2 = math.log(2)
    # row 0: pos class 0 (3), neg class 1 (q1), neg obj (1)
    # row 1: neg class 0 (0.5), neg class 1 (q1), pos obj (1)
    expected = ln2 * (3 + q1 + 1 + 0.5 + q1 + 1) / 2
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-6)
    # gradient statistics: |sigmoid(0) - y| = 0.5, times the weights
    torch.testing.assert_close(loss.pos_grad, torch.tensor([0.5 * 3, 0.0]))
    torch.testing.assert_close(loss.neg_grad,
                               torch.tensor([0.5 * 0.5, 0.5 * q1 * 2]))
    torch.testing.assert_close(loss.pos_neg,
                               loss.pos_grad / (loss.neg_grad + 1e-10))


def test_matches_mmdet_port_over_iterations():
    ours = EQLv2Loss(C)
    ref = MMDetEQLV2Loss(num_classes=C)
    for x, y in batches(6):
        # what mmdet's BBoxHead passes (all-one weights, avg_factor = N) ...
        a = ours(x, y, torch.ones(len(y)), avg_factor=float(len(y)))
        b = ref(x, y)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
        ga, = torch.autograd.grad(a, x)
        gb, = torch.autograd.grad(b, x)
        torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-9)
        # ... and the accumulated state is the same, bit for bit
        assert torch.equal(ours.pos_grad, ref.pos_grad)
        assert torch.equal(ours.neg_grad, ref.neg_grad)
        assert torch.equal(ours.pos_neg, ref.pos_neg)
    # the weights really moved away from 1
    pos_w, neg_w = ours.get_weights()
    assert neg_w[:C].min() < 0.5 and pos_w[:C].max() > 2
    # without label_weights/avg_factor too (the reference's own call)
    x, y = next(batches(1, seed=3))
    torch.testing.assert_close(ours(x, y), ref(x, y), rtol=1e-6, atol=0)


def test_statistics_equal_the_logit_gradient_a_hook_sees():
    """The closed form in forward == autograd's d(sum w BCE)/d logits."""
    loss = EQLv2Loss(C, reduction='sum')
    exp_pos = torch.zeros(C)
    exp_neg = torch.zeros(C)
    for x, y in batches(5, seed=1):
        seen = []
        x.register_hook(seen.append)
        out = loss(x, y)  # sum of w * BCE: its logit gradient is the stat
        out.backward()
        grad = seen[0].abs()
        target = F.one_hot(y, C + 1).float()
        exp_pos += (grad * target).sum(0)[:-1]
        exp_neg += (grad * (1 - target)).sum(0)[:-1]
        torch.testing.assert_close(loss.pos_grad, exp_pos)
        torch.testing.assert_close(loss.neg_grad, exp_neg)
        torch.testing.assert_close(loss.pos_neg, exp_pos / (exp_neg + 1e-10))


def test_label_weights_enter_the_statistics():
    a, b = EQLv2Loss(C), EQLv2Loss(C)
    x, y = next(batches(1))
    w = torch.ones(len(y))
    w[:10] = 0
    a(x, y, w)
    b(x[10:], y[10:])
    torch.testing.assert_close(a.pos_grad, b.pos_grad)
    torch.testing.assert_close(a.neg_grad, b.neg_grad)


def test_state_dict_round_trip_resumes_exactly():
    it = list(batches(6, seed=2))
    a = EQLv2Loss(C)
    for x, y in it[:3]:
        a(x, y)
    state = a.state_dict()
    assert set(state) == {'pos_grad', 'neg_grad', 'pos_neg'}
    b = EQLv2Loss(C)
    b.load_state_dict(state)
    for x, y in it[3:]:
        torch.testing.assert_close(a(x, y), b(x, y), rtol=0, atol=0)
    for k in state:
        assert torch.equal(a.state_dict()[k], b.state_dict()[k])
    # and through torch.save / torch.load (weights_only)
    import io
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    c = EQLv2Loss(C)
    c.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(c.pos_neg, a.pos_neg)


def test_statistics_accumulate_in_float32():
    loss = EQLv2Loss(C)
    ref = EQLv2Loss(C)
    for x, y in batches(2, seed=4):
        out = loss(x.detach().bfloat16().requires_grad_(True), y)
        ref(x.detach().bfloat16().float(), y)
        assert out.dtype == torch.bfloat16
    for name in ('pos_grad', 'neg_grad', 'pos_neg'):
        assert getattr(loss, name).dtype == torch.float32
    # stats from bf16 logits equal the fp32 computation on the same values
    torch.testing.assert_close(loss.pos_grad, ref.pos_grad)


def test_activation_is_sigmoid_times_one_minus_objectness():
    loss = EQLv2Loss(C)
    x = torch.randn(5, C + 1)
    x_copy = x.clone()
    p = x.sigmoid()
    scores = loss.get_activation(x)
    assert torch.equal(x, x_copy)  # input untouched
    torch.testing.assert_close(scores[:, :C], p[:, :C] * (1 - p[:, C:]))
    torch.testing.assert_close(scores[:, C], p[:, C])
    assert not torch.allclose(scores, x.softmax(-1))
    no_obj = EQLv2Loss(C, test_with_obj=False).get_activation(x)
    torch.testing.assert_close(no_obj, p)
    assert loss.get_cls_channels(C) == C + 1
    with pytest.raises(ValueError, match=f'num_classes={C}.*num_classes=3'):
        loss.get_cls_channels(3)


def test_errors():
    loss = EQLv2Loss(C)
    with pytest.raises(ValueError, match=f'{C} channels, expected {C + 1}'):
        loss(torch.zeros(2, C), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r'\[0, 6\]'):
        loss(torch.zeros(2, C + 1), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match='use_sigmoid'):
        EQLv2Loss(C, use_sigmoid=False)
