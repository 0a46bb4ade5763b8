"""Every registered loss at V3Det's 13,204 classes (8 RoIs, forward and
backward).

Each loss is checked against itself at a small ``C`` (the contract suite's
5 classes and statistics): at ``C = 13,204`` the first 5 classes keep those
statistics and the other 13,199 are *padding* classes whose logits are -30
(their probability is ~1e-13, so they add ~1e-9 to any sum), and whose
statistics are chosen so that they change nothing the method computes for
the first 5 (``PAD``). The rows of the 5 classes and the extra rows
(background, objectness, BAGS "others") are placed where each layout puts
them (:func:`mmlongtail.models.losses.protocol.loss_layout`). Then the summed
loss and the gradient of the 5 classes' rows must equal the small-``C``
ones, and every gradient must be finite.

Three losses normalize over all classes, so padding changes their numbers
by design; they are checked against their formula instead, with the
normalization written out here (``FORMULA``): ECM's margins and weights (from
``n_neg = sum(n) - n_pos``), balanced softmax's background prior (a multiple
of the summed counts) and the class-balanced weights (scaled to sum to
``C``).

A loss registered without an entry in ``PAD`` or ``FORMULA`` fails
``test_every_registered_loss_is_checked_at_v3det_scale``.
"""
import math

import numpy as np
import pytest
import torch

import mmlongtail  # noqa: F401
from mmlongtail.models.losses.protocol import loss_layout
from mmlongtail.registry import MODELS

V3DET_CLASSES = 13204
SMALL = 5
N = 8
PAD_LOGIT = -30.0
NUM_IMAGES = 200
#: the contract suite's statistics of the 5 real classes
#: (id, frequency, image_count, instance_count)
REAL = [('r', 2, 3), ('c', 40, 50), ('f', 150, 500), ('f', 190, 4000),
        ('r', 5, 12)]


def stats(num_classes, pad_images=1, pad_instances=50):
    cats = [
        dict(id=i + 1, name=f'c{i}', frequency=f, image_count=ic,
             instance_count=nc) for i, (f, ic, nc) in enumerate(REAL)
    ]
    cats += [
        dict(id=i + 1, name=f'c{i}', frequency='r', image_count=pad_images,
             instance_count=pad_instances)
        for i in range(SMALL, num_classes)
    ]
    return dict(num_images=NUM_IMAGES, categories=cats)


#: Checked by padding: the loss's kwargs for C classes and statistics, and
#: the padding classes' (image_count, instance_count) that keep the 5 real
#: classes' numbers:
#: * FederatedLoss: 0 images, so never drawn (the 5 real classes are all
#:   drawn at both sizes, num_classes_sampled=50);
#: * GumbelLoss: 0 images, so only padding classes are rare and DropLoss's
#:   random draws drop nothing of the real classes;
#: * GroupSoftmaxLoss: 50 instances, in the group of class 1 (bins 10 / 100 /
#:   1000), so BAGS has the same groups at both sizes.
PAD = {
    'FocalLoss': (lambda C, s: dict(num_classes=C), (1, 50)),
    'EQLLoss': (lambda C, s: dict(num_classes=C, category_stats=s,
                                  freq_thr=0.05), (1, 50)),
    'EQLv2Loss': (lambda C, s: dict(num_classes=C), (1, 50)),
    'EqualizedFocalLoss': (lambda C, s: dict(num_classes=C), (1, 50)),
    'GroupSoftmaxLoss': (lambda C, s: dict(
        num_classes=C, category_stats=s, beta=1000), (1, 50)),
    'FederatedLoss': (lambda C, s: dict(num_classes=C, category_stats=s),
                      (0, 0)),
    'GumbelLoss': (lambda C, s: dict(num_classes=C, category_stats=s,
                                     lambda_=0.005), (0, 0)),
    'SeesawLoss': (lambda C, s: dict(num_classes=C), (1, 50)),
    # as GumbelLoss (its logits clamped at -4 too: p ~ 1e-23 at lambda 1e-3)
    'APALoss': (lambda C, s: dict(num_classes=C, category_stats=s,
                                  lambda_=0.005), (0, 0)),
    # LDAM's margins scale by the smallest count's n^(-1/4): the padding
    # classes' 50 instances are more than class 0's 3, so no margin moves
    'LDAMLoss': (lambda C, s: dict(num_classes=C, category_stats=s),
                 (1, 50)),
    # GAP ranks the positives against every other logit: a padding logit of
    # -30 lies below every ramp, so it adds no ranking error or gradient.
    # Its class weights (1 / n)^gamma are scaled to sum to C over every
    # class, the never-seen padding ones included, so gamma = 0 here (equal
    # weights at both sizes); the weights: test_gap_loss.py
    'GAPLoss': (lambda C, s: dict(num_classes=C, gamma=0.0), (1, 50)),
    # PCB acts once every class has been seen, which padding classes never
    # are, and from its start epoch, which it reads from mmengine's message
    # hub (another test's runner may have left one there): here it never
    # acts, so at both sizes it trains as its wrapped softmax CE (its own
    # numbers: test_pcb_loss.py); this checks that the wrapper and its
    # 13,204 x 13,204 confusion matrix (697 MB float32) run at this size
    'PCBLoss': (lambda C, s: dict(
        num_classes=C, alpha=0.4, start_epoch=10**6,
        loss=dict(type='CrossEntropyLoss', use_sigmoid=False)), (1, 50)),
}


def _ecm_expected(x, y, s):
    """ECM (Cho and Krähenbühl, ECCV 2022): per RoI, sum over the C + 1
    outputs of w_j BCE(2 z + log(n_pos^(1/4) / n_neg^(1/4)), y), with n_pos
    the image counts and 6.3313 x their sum for background, n_neg = sum -
    n_pos, a = n_neg / n_pos, w = a log((1 + a) / a)."""
    n = np.array([c['image_count'] for c in s['categories']], np.float64)
    n = np.concatenate([n, [n.sum() * 6.3313]])
    neg = n.sum() - n
    offset = torch.from_numpy(0.25 * (np.log(n) - np.log(neg)))
    a = neg / n
    w = torch.from_numpy(a * np.log((1 + a) / a))
    t = torch.nn.functional.one_hot(y, n.size).double()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        2 * x.double() + offset, t, reduction='none')
    return (bce * w).sum(1)


def _cb_expected(x, y, s):
    """Class-balanced weights (Cui et al., CVPR 2019) on instance counts,
    beta 0.999: w_c = (1 - beta) / (1 - beta^n_c), scaled to sum to C,
    background 1; times the wrapped focal loss of each element."""
    n = np.array([c['instance_count'] for c in s['categories']], np.float64)
    w = (1 - 0.999) / (1 - 0.999**n)
    w = np.concatenate([w / w.sum() * len(n), [1.0]])
    xd = x.double()
    t = torch.nn.functional.one_hot(y, x.size(1) + 1)[:, :-1].double()
    p = xd.sigmoid()
    pt = p * t + (1 - p) * (1 - t)
    at = 0.25 * t + 0.75 * (1 - t)
    focal = -at * (1 - pt)**2 * torch.log(pt)
    return focal * torch.from_numpy(w)[y][:, None]


def _balanced_softmax_expected(x, y, s):
    """Balanced softmax (Ren et al., NeurIPS 2020), tau 1: per RoI, the
    softmax cross-entropy of z + log(pi), pi the image counts and 6.3313 x
    their sum for background, normalized to sum to 1."""
    n = np.array([c['image_count'] for c in s['categories']], np.float64)
    n = np.concatenate([n, [n.sum() * 6.3313]])
    prior = torch.from_numpy(np.log(n / n.sum()))
    return torch.nn.functional.cross_entropy(
        x.double() + prior, y, reduction='none')


#: Checked against the formula: kwargs for C classes and statistics, the
#: expected 'none' output, the padding classes' (image_count,
#: instance_count).
FORMULA = {
    'ECMLoss': (lambda C, s: dict(num_classes=C, category_stats=s),
                _ecm_expected, (7, 9)),
    'BalancedSoftmaxLoss': (lambda C, s: dict(
        num_classes=C, category_stats=s), _balanced_softmax_expected,
        (7, 9)),
    'ClassBalancedLoss': (lambda C, s: dict(
        num_classes=C, category_stats=s, beta=0.999, count='instance',
        loss=dict(type='mmlongtail.FocalLoss', num_classes=C)),
        _cb_expected, (7, 9)),
}


def registered_losses():
    import mmlongtail.models  # noqa: F401  (registers everything)
    return sorted(n for n in MODELS.module_dict if n.endswith('Loss'))


def test_every_registered_loss_is_checked_at_v3det_scale():
    missing = [
        n for n in registered_losses() if n not in PAD and n not in FORMULA
    ]
    assert not missing, (f'add {missing} to PAD or FORMULA in '
                         'tests/models/losses/test_losses_v3det_scale.py')


def _build(name, kwargs):
    return MODELS.build(dict(type=f'mmlongtail.{name}', **kwargs))


def _labels(num_classes):
    """Every real class and background (label ``num_classes``) twice."""
    return torch.tensor([0, 1, 2, 3, 4, num_classes, 1, num_classes])


def _embed(x_small, small_layout, big_layout):
    """Logits of the big layout: the small layout's rows where the big one
    puts the same class or extra row, PAD_LOGIT elsewhere."""
    x = torch.full((x_small.size(0), big_layout.num_outputs), PAD_LOGIT,
                   dtype=x_small.dtype)
    src = list(small_layout.class_rows)
    dst = list(big_layout.class_rows[:SMALL])
    for name, rows in small_layout.extra_rows:
        big_rows = big_layout.rows(name)
        assert len(big_rows) == len(rows), (
            f'{name}: {len(rows)} rows at C={SMALL}, {len(big_rows)} at '
            f'C={V3DET_CLASSES}: padding changed the layout')
        src += list(rows)
        dst += big_rows.tolist()
    x[:, dst] = x_small[:, src]
    return x, src, dst


def _total(out):
    return sum(out.values()) if isinstance(out, dict) else out


@pytest.mark.parametrize('name', sorted(PAD))
def test_loss_at_v3det_scale_equals_small_c(name):
    kwargs, (pad_ic, pad_nc) = PAD[name]
    small_stats = stats(SMALL)
    big_stats = stats(V3DET_CLASSES, pad_ic, pad_nc)
    small = _build(name, kwargs(SMALL, small_stats))
    big = _build(name, kwargs(V3DET_CLASSES, big_stats))
    small_layout = loss_layout(small, SMALL)
    big_layout = loss_layout(big, V3DET_CLASSES)
    g = torch.Generator().manual_seed(0)
    x_small = torch.randn(N, small_layout.num_outputs, generator=g) * 2
    x_big, src, dst = _embed(x_small, small_layout, big_layout)
    x_small.requires_grad_()
    x_big.requires_grad_()
    torch.manual_seed(0)
    out_small = _total(
        small(x_small, _labels(SMALL), reduction_override='sum'))
    torch.manual_seed(0)
    out_big = _total(
        big(x_big, _labels(V3DET_CLASSES), reduction_override='sum'))
    out_small.backward()
    out_big.backward()
    assert torch.isfinite(out_big) and out_big.abs() > 0
    torch.testing.assert_close(out_big, out_small, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(x_big.grad).all()
    torch.testing.assert_close(x_big.grad[:, dst], x_small.grad[:, src],
                               rtol=1e-4, atol=1e-6)
    # the padding rows get (almost) no gradient
    pad = torch.ones(big_layout.num_outputs, dtype=torch.bool)
    pad[dst] = False
    assert x_big.grad[:, pad].abs().max() < 1e-6


@pytest.mark.parametrize('name', sorted(FORMULA))
def test_loss_at_v3det_scale_equals_formula(name):
    kwargs, expected_fn, (pad_ic, pad_nc) = FORMULA[name]
    s = stats(V3DET_CLASSES, pad_ic, pad_nc)
    loss = _build(name, kwargs(V3DET_CLASSES, s))
    layout = loss_layout(loss, V3DET_CLASSES)
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(N, layout.num_outputs, generator=g) * 2).double()
    x.requires_grad_()
    y = _labels(V3DET_CLASSES)
    none = loss(x, y, reduction_override='none')
    expected = expected_fn(x.detach(), y, s)
    torch.testing.assert_close(none.double(), expected, rtol=1e-6,
                               atol=1e-9)
    total = loss(x, y, reduction_override='sum')
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(x.grad).all()
    assert math.isclose(float(total), float(expected.sum()), rel_tol=1e-6)
