"""The lean focal-family kernel (mmlongtail.models.losses.sigmoid_kernels)
against today's autograd formula, re-stated here independently: outputs and
gradients at several sizes (several blocks), float32 and float64, weights,
avg_factor, reductions, ignored anchors and background labels; FocalLoss
and EqualizedFocalLoss lean vs ``lean=False`` (EFL's statistics over several
iterations); what autograd keeps between forward and backward; the backend
dispatch; and, on CUDA, mmcv's fused kernel against the torch path."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.losses import FocalLoss as MMDetFocalLoss
from mmdet.models.losses.utils import weight_reduce_loss

import mmlongtail  # noqa: F401
from mmlongtail.models.losses import EqualizedFocalLoss, FocalLoss
from mmlongtail.models.losses.sigmoid_kernels import (Terms, focal_backend,
                                                      lean_focal_loss,
                                                      lean_sigmoid_sum)


def reference_focal(x, labels, weight, gamma, alpha, class_weight,
                    reduction, avg_factor):
    """Today's formula through autograd: one-hot target, probabilities,
    focusing weight, BCE, class weight, mmdet's weighted reduction."""
    C = x.size(1)
    t = F.one_hot(labels, C + 1)[:, :C].to(x.dtype)
    p = x.sigmoid()
    one_minus_pt = (1 - p) * t + p * (1 - t)
    loss = F.binary_cross_entropy_with_logits(x, t, reduction='none') * (
        alpha * t + (1 - alpha) * (1 - t)) * one_minus_pt.pow(gamma)
    if class_weight is not None:
        loss = loss * class_weight
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def make_case(n, c, dtype, seed=0, bg=0.7, ignored=0.1):
    """Logits around RetinaNet's (mostly negative), labels with a fraction
    ``bg`` of background, ``(N,)`` weights with ``ignored`` zeros."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=g, dtype=torch.float64) * 3 - 2)
    labels = torch.randint(0, c, (n, ), generator=g)
    labels[torch.rand(n, generator=g) < bg] = c
    w = (torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
    w[torch.rand(n, generator=g) < ignored] = 0
    return x.to(dtype), labels, w.to(dtype)


def weights_of(kind, w, n, c, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    full = torch.rand(n, c, generator=g, dtype=torch.float64).to(dtype)
    return dict(none=None, rows=w.view(-1, 1), full=full)[kind]


REDUCTIONS = [('none', None), ('mean', None), ('sum', None), ('mean', 37.5),
              ('mean', 'tensor')]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-13),
       torch.float32: dict(rtol=2e-5, atol=2e-7)}


def compare(dtype, n, c, wkind, reduction, avg, per_class, block):
    x, labels, w = make_case(n, c, dtype, seed=n + c)
    weight = weights_of(wkind, w, n, c, dtype)
    if avg == 'tensor':
        avg = torch.tensor(n * 0.3, dtype=dtype)
    if per_class:
        g = torch.Generator().manual_seed(5)
        gamma = 2 + 8 * torch.rand(c, generator=g, dtype=dtype)
        class_weight = gamma / 2
    else:
        gamma, class_weight = 2.0, None
    g = torch.Generator().manual_seed(7)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    ref = reference_focal(x1, labels, weight, gamma, 0.25, class_weight,
                          reduction, avg)
    ours, _ = lean_focal_loss(x2, labels, weight, gamma, 0.25, class_weight,
                              reduction, avg, block_elements=block)
    up = torch.randn(ref.shape, generator=g, dtype=torch.float64).to(dtype)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    gr, = torch.autograd.grad(ref, x1, up)
    go, = torch.autograd.grad(ours, x2, up)
    scale = gr.abs().max().item()
    tol = TOL[dtype]
    torch.testing.assert_close(go, gr, rtol=tol['rtol'],
                               atol=tol['atol'] * max(scale, 1) * 10)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('n,c,block', [(1, 1, 1), (37, 5, 64), (300, 80,
                                                                2048),
                                       (160, 1203, 1 << 16)])
@pytest.mark.parametrize('per_class', [False, True])
def test_lean_equals_todays_formula(dtype, n, c, block, per_class):
    for wkind in ('none', 'rows', 'full'):
        for reduction, avg in REDUCTIONS:
            compare(dtype, n, c, wkind, reduction, avg, per_class, block)


def test_blocks_do_not_change_the_result():
    x, labels, w = make_case(501, 13, torch.float64)
    gamma = torch.linspace(2, 10, 13, dtype=torch.float64)
    out = []
    for block in (13, 100, 1000, 1 << 21):
        xi = x.clone().requires_grad_(True)
        loss, (pos, neg) = lean_focal_loss(
            xi, labels, w.view(-1, 1), gamma, 0.25, gamma / 2, 'sum',
            stats_scale=0.5, block_elements=block)
        loss.backward()
        out.append((loss, xi.grad, pos, neg))
    for other in out[1:]:
        for a, b in zip(out[0][:2], other[:2]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        for a, b in zip(out[0][2:], other[2:]):  # float32 statistics
            torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


def test_statistics_are_the_gradient_magnitudes():
    """pos / neg sums = |autograd gradient| of today's formula summed over
    positive / negative elements."""
    x, labels, w = make_case(400, 9, torch.float64)
    gamma = torch.linspace(2, 10, 9, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    ref = reference_focal(xr, labels, w.view(-1, 1), gamma, 0.25, gamma / 2,
                          'mean', 123.0)
    grad, = torch.autograd.grad(ref, xr)
    t = F.one_hot(labels, 10)[:, :9].bool()
    _, (pos, neg) = lean_focal_loss(
        x.clone().requires_grad_(True), labels, w.view(-1, 1), gamma, 0.25,
        gamma / 2, 'mean', 123.0, stats_scale=1 / (123.0 + 1.1920929e-07),
        block_elements=500)
    assert pos.dtype == neg.dtype == torch.float32
    torch.testing.assert_close(pos, (grad.abs() * t).sum(0).float())
    torch.testing.assert_close(neg, (grad.abs() * ~t).sum(0).float())


def test_extreme_logits_stay_finite_and_accurate():
    x = torch.tensor([[-200., 0., 50., 100.], [200., -50., 3., -3.]],
                     requires_grad=True)
    labels = torch.tensor([0, 4])
    loss, _ = lean_focal_loss(x, labels, reduction='none')
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all()
    ref = reference_focal(x.detach().double(), labels, None, 2.0, 0.25, None,
                          'none', None)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-30)


def saved_numel(fn):
    """Elements of the tensors autograd saves for backward during ``fn``,
    leaving out the input logits themselves (the head holds them anyway)."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return saved


@pytest.mark.parametrize('make', ['focal', 'efl'])
def test_lean_keeps_no_n_by_c_tensor_between_forward_and_backward(make):
    n, c = 500, 40
    x, labels, w = make_case(n, c, torch.float32)
    x.requires_grad_(True)
    if make == 'focal':
        lean, old = FocalLoss(), FocalLoss(lean=False)
    else:
        lean = EqualizedFocalLoss(num_classes=c, dense_head=True)
        old = EqualizedFocalLoss(num_classes=c, dense_head=True, lean=False)
    kept = saved_numel(lambda: lean(x, labels, w, avg_factor=10.0))
    big = [t for t in kept if t.numel() >= n * c]
    # the logits themselves, saved by reference, and nothing else of N x C
    assert all(t.data_ptr() == x.data_ptr() for t in big)
    assert sum(t.numel() for t in kept if t.data_ptr() != x.data_ptr()) \
        <= 2 * n + 3 * c
    kept_old = saved_numel(lambda: old(x, labels, w, avg_factor=10.0))
    assert sum(t.numel() >= n * c and t.data_ptr() != x.data_ptr()
               for t in kept_old) >= 4  # what the lean path saves


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_focal_module_lean_equals_lean_false_and_mmdet(dtype):
    x, labels, w = make_case(700, 30, dtype, seed=3)
    kw = dict(gamma=2.0, alpha=0.25, loss_weight=1.3)
    for reduction, avg in REDUCTIONS[:4]:
        xs = [x.clone().requires_grad_(True) for _ in range(3)]
        outs = [
            FocalLoss(**kw)(xs[0], labels, w, avg, reduction),
            FocalLoss(lean=False, **kw)(xs[1], labels, w, avg, reduction),
            MMDetFocalLoss(**kw)(xs[2], labels, w, avg, reduction)
        ]
        assert torch.equal(outs[1], outs[2])  # lean=False is today's path
        torch.testing.assert_close(outs[0], outs[1], **TOL[dtype])
        grads = [torch.autograd.grad(o.sum(), xi)[0]
                 for o, xi in zip(outs, xs)]
        torch.testing.assert_close(grads[0], grads[1], rtol=TOL[dtype][
            'rtol'], atol=TOL[dtype]['atol'] * 10)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_efl_lean_equals_lean_false_over_iterations(dtype):
    """Loss, gradient and the statistics (pos_grad, neg_grad, pos_neg) stay
    the same over several training steps, each with two FPN-level calls."""
    c = 11
    lean = EqualizedFocalLoss(num_classes=c, dense_head=True, loss_weight=2)
    old = EqualizedFocalLoss(num_classes=c, dense_head=True, loss_weight=2,
                             lean=False)
    tol = dict(rtol=1e-5, atol=1e-8) if dtype == torch.float32 else dict(
        rtol=1e-6, atol=1e-12)  # statistics are float32 in both
    for step in range(6):
        levels = [make_case(n, c, dtype, seed=step * 10 + n, bg=0.85)
                  for n in (600, 150)]
        results = []
        for loss in (lean, old):
            xs = [x.clone().requires_grad_(True) for x, _, _ in levels]
            avg = torch.tensor(37.0)
            total = sum(
                loss(xi, y, w, avg_factor=avg)
                for xi, (_, y, w) in zip(xs, levels))
            total.backward()
            results.append((total, [xi.grad for xi in xs]))
        torch.testing.assert_close(results[0][0], results[1][0], **tol)
        for a, b in zip(results[0][1], results[1][1]):
            torch.testing.assert_close(a, b, **tol)
        for name in ('pos_grad', 'neg_grad', 'pos_neg'):
            torch.testing.assert_close(getattr(lean, name),
                                       getattr(old, name), **tol)
    assert (lean.pos_neg < 1).any()  # the statistics did move


def test_efl_statistics_only_from_backpropagated_calls():
    c = 7
    loss = EqualizedFocalLoss(num_classes=c, dense_head=True)
    x, y, w = make_case(50, c, torch.float32)
    with torch.no_grad():
        loss(x.clone().requires_grad_(True), y, w)
    loss(x, y, w)  # no grad required
    out = loss(x.clone().requires_grad_(True), y, w)
    assert loss.pos_grad.sum() == 0 and loss.neg_grad.sum() == 0
    out.backward()
    assert loss.neg_grad.sum() > 0


def test_empty_and_background_only():
    x = torch.zeros(0, 5, requires_grad=True)
    y = torch.zeros(0, dtype=torch.long)
    for loss in (FocalLoss(), EqualizedFocalLoss(num_classes=5)):
        assert loss(x, y).item() == 0
        assert loss(x, y, reduction_override='none').shape == (0, 5)
    x, _, _ = make_case(20, 5, torch.float64)
    y = torch.full((20, ), 5)
    compare_bg = reference_focal(x, y, None, 2.0, 0.25, None, 'sum', None)
    torch.testing.assert_close(
        FocalLoss(reduction='sum')(x, y), compare_bg, rtol=1e-12, atol=0)


def test_backend_dispatch():
    """mmcv's kernel only on CUDA, for one scalar gamma and no class
    weights (EFL never), and only when mmcv's ops are compiled."""
    assert focal_backend('cpu', per_class=False) == 'torch'
    assert focal_backend('cuda', per_class=False, mmcv_available=True) == \
        'mmcv'
    assert focal_backend('cuda', per_class=True, mmcv_available=True) == \
        'torch'
    assert focal_backend('cuda', per_class=False, mmcv_available=False) == \
        'torch'
    x, y, _ = make_case(10, 4, torch.float32)
    with pytest.raises(ValueError, match='mmcv only for a scalar gamma'):
        lean_focal_loss(x, y, gamma=torch.ones(4), backend='mmcv')
    with pytest.raises(ValueError, match='backend must be one of'):
        lean_focal_loss(x, y, backend='triton')
    with pytest.raises(ValueError, match='avg_factor can not be used'):
        lean_focal_loss(x, y, reduction='sum', avg_factor=2.0)


@pytest.mark.parametrize('output', ['sum', 'elements', 'rows'])
def test_gradcheck_every_output_and_term(output):
    x, y, w = make_case(10, 4, torch.float64, bg=0.5)
    x.requires_grad_(True)
    row = torch.tensor([[0.3, 1.0, 2.0, 0.0]], dtype=torch.float64)
    terms = [
        Terms(2.0, 0.25 * row, 0.75 * row, None, None, 0.25, 'torch'),
        Terms(row * 3, row, row + 1, None, None, 0.25, 'torch'),
        Terms(0.0, row, row, 1 - row, -row, 1.0, 'torch'),
    ]
    for t in terms:
        assert torch.autograd.gradcheck(
            lambda a, t=t: lean_sigmoid_sum(a, y, w.view(-1, 1), t, output,
                                            block_elements=12)[0], (x, ))


def stats_dict(c, seed=0):
    """``c`` classes with image counts from 1 to 600 out of 1000 images."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 600, (c, ), generator=g).tolist()
    return dict(num_images=1000, categories=[
        dict(id=i + 1, name=f'c{i}', frequency='r', image_count=n,
             instance_count=2 * n) for i, n in enumerate(counts)])


def bce_family(name, c, **kw):
    """The loss in its dense mode and today's autograd path (``lean=False``
    in a dense head), same configuration."""
    from mmlongtail.models.losses import (BalancedSoftmaxLoss, EQLLoss,
                                          FederatedLoss)
    st = stats_dict(c)
    make = dict(
        eql=lambda **k: EQLLoss(c, st, freq_thr=0.3, **k),
        federated=lambda **k: FederatedLoss(c, st, num_classes_sampled=c // 3,
                                            **k),
        balanced=lambda **k: BalancedSoftmaxLoss(c, st, use_sigmoid=True,
                                                 tau=0.7, **k))[name]
    return make(dense_head=True, **kw), make(dense_head=True, lean=False,
                                             **kw)


@pytest.mark.parametrize('name', ['eql', 'federated', 'balanced'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('n,c', [(1, 3), (90, 7), (60, 1203)])
def test_bce_family_dense_mode_equals_todays_path(name, dtype, n, c):
    lean, old = bce_family(name, c, loss_weight=1.5)
    x, labels, w = make_case(n, c, dtype, seed=n, bg=0.6)
    for weight in (None, w):
        for reduction, avg in REDUCTIONS:
            if avg == 'tensor':
                avg = torch.tensor(n * 0.3, dtype=dtype)
            outs, grads = [], []
            for loss in (lean, old):
                torch.manual_seed(11)  # federated draws its classes
                xi = x.clone().requires_grad_(True)
                out = loss(xi, labels, weight, avg, reduction)
                up = torch.linspace(-1, 2, out.numel(), dtype=dtype)
                out.backward(up.view(out.shape))
                outs.append(out)
                grads.append(xi.grad)
            assert outs[0].shape == outs[1].shape
            torch.testing.assert_close(outs[0], outs[1], **TOL[dtype])
            torch.testing.assert_close(grads[0], grads[1], rtol=TOL[dtype][
                'rtol'], atol=TOL[dtype]['atol'] * 10)


def test_bce_family_keeps_no_n_by_c_tensor():
    n, c = 400, 30
    x, labels, w = make_case(n, c, torch.float32)
    x.requires_grad_(True)
    for name in ('eql', 'federated', 'balanced'):
        lean, old = bce_family(name, c)
        kept = saved_numel(lambda f=lean: f(x, labels, w, avg_factor=9.0))
        assert sum(t.numel() for t in kept
                   if t.data_ptr() != x.data_ptr()) <= 2 * n + 3 * c, name
        kept_old = saved_numel(
            lambda f=old: f(x, labels, w, avg_factor=9.0))
        assert any(t.numel() >= n * c and t.data_ptr() != x.data_ptr()
                   for t in kept_old), name


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_cuda_mmcv_kernel_equals_lean_torch_path(dtype):
    n, c = 5000, 1203
    x, labels, w = make_case(n, c, dtype)
    x, labels, w = x.cuda(), labels.cuda(), w.cuda().view(-1, 1)
    assert focal_backend('cuda', per_class=False) == 'mmcv'
    outs = []
    for backend in ('mmcv', 'torch'):
        xi = x.clone().requires_grad_(True)
        loss, _ = lean_focal_loss(xi, labels, w, 2.0, 0.25,
                                  reduction='mean', avg_factor=321.0,
                                  backend=backend)
        loss.backward()
        outs.append((loss, xi.grad))
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == torch.float32 else dict(
        rtol=1e-10, atol=1e-13)
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, **tol)
    ref = reference_focal(x.double().cpu(), labels.cpu(), w.double().cpu(),
                          2.0, 0.25, None, 'mean', 321.0)
    torch.testing.assert_close(outs[0][0].double().cpu(), ref, rtol=1e-5,
                               atol=0)


@pytest.mark.parametrize('lean', [True, False])
def test_efl_empty_batch_still_makes_its_collective(lean, monkeypatch):
    """Every rank must make the same all-reduce calls: a rank whose batch is
    empty (an R-CNN head without RoIs) still reduces its (zero) statistics,
    in the lean path as in the autograd one."""
    c = 4
    loss = EqualizedFocalLoss(num_classes=c, dense_head=True, lean=lean)
    calls = []
    original = loss.reduce_gradient_sums

    def counted(pos, neg):
        calls.append((pos.clone(), neg.clone()))
        return original(pos, neg)

    monkeypatch.setattr(loss, 'reduce_gradient_sums', counted)
    x = torch.zeros(0, c, requires_grad=True)
    out = loss(x, torch.zeros(0, dtype=torch.long), reduction_override='sum')
    out.backward()
    assert len(calls) == 1
    assert all(t.shape == (c, ) and not t.any() for t in calls[0])
    assert not loss.pos_grad.any() and not loss.neg_grad.any()


def test_lean_kernel_refuses_labels_out_of_range():
    x = torch.zeros(3, 4)
    for bad in (-1, 5):
        labels = torch.tensor([0, bad, 4])
        with pytest.raises(ValueError, match=r'labels must lie in \[0, 4\]'):
            lean_focal_loss(x, labels, None, 2.0, 0.25)
