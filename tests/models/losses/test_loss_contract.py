"""Contract suite over every loss registered in ``mmlongtail.registry.MODELS``.

Every registered name ending in ``Loss`` must have an entry in ``SPECS`` (a
new loss without one fails ``test_every_registered_loss_has_a_spec``). Each
entry says how to build the loss for ``C`` classes and what its reductions
mean; the tests then check, for every loss:

* ``reduction_override`` ``'none'`` / ``'sum'`` / ``'mean'`` agree with each
  other, and anything else is refused;
* ``avg_factor`` divides the summed loss (or is documented as ignored);
* an empty batch gives a finite zero that backpropagates;
* all-one ``label_weights`` change nothing, zero weights equal dropping the
  proposals, and a per-proposal weight scales that proposal;
* ``loss_weight`` scales every reduction;
* gradients are finite and out-of-range labels are refused;
* the loss implements the classifier protocol and its layout describes the
  ``fc_cls`` of a real ``Shared2FCBBoxHead``: the head has that many outputs,
  the row the layout gives class ``j`` drives class ``j``'s test-time score
  and the background row (where there is one) the background column.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Union

import pytest
import torch

import mmlongtail  # noqa: F401
from mmlongtail.models.losses.protocol import ClassifierProtocol, loss_layout
from mmlongtail.registry import MODELS

C = 5
#: instance counts chosen so that every BAGS group (bins 10/100/1000) is used
STATS = dict(
    num_images=200,
    categories=[
        dict(
            id=i + 1,
            name=f'c{i}',
            frequency=f,
            image_count=ic,
            instance_count=nc) for i, (f, ic, nc) in enumerate([
                ('r', 2, 3), ('c', 40, 50), ('f', 150, 500), ('f', 190, 4000),
                ('r', 5, 12)
            ])
    ])


@dataclass
class Spec:
    """How to build and call one loss in the contract suite."""
    kwargs: dict
    channels: int
    none_shape: Callable[[int], tuple] = lambda n: (n, )
    # expected 'mean' from the raw 'none' output and the labels; None: the
    # loss normalizes itself (checked in its own test file)
    expected_mean: Optional[Callable] = lambda none, y: none.sum() / len(y)
    # 'divide': mean with avg_factor a == sum / a; 'ignored': no effect; a
    # dict output may give one of them per term
    avg_factor: Union[str, Dict[str, str]] = 'divide'
    # False where the loss counts every label in running statistics before
    # computing the loss (Seesaw's cum_samples, like mmdet), so that a
    # zero-weight proposal still changes the others' loss
    zero_weight_is_drop: bool = True
    extra: dict = field(default_factory=dict)


SPECS = {
    'FocalLoss':
    Spec(
        dict(),
        channels=C,
        none_shape=lambda n: (n, C),
        expected_mean=lambda none, y: none.sum() / (len(y) * C)),
    'EQLLoss':
    Spec(
        dict(num_classes=C, category_stats=STATS, freq_thr=0.05),
        channels=C),
    'EQLv2Loss':
    Spec(dict(num_classes=C), channels=C + 1),
    'EqualizedFocalLoss':
    Spec(
        dict(num_classes=C),
        channels=C,
        none_shape=lambda n: (n, C),
        expected_mean=lambda none, y: none.sum() / (len(y) * C)),
    # beta large enough that every "others" proposal is kept: deterministic
    'GroupSoftmaxLoss':
    Spec(
        dict(num_classes=C, category_stats=STATS, beta=1000),
        channels=C + 1 + 5,
        expected_mean=None,
        avg_factor='ignored'),
    'FederatedLoss':
    Spec(dict(num_classes=C, category_stats=STATS), channels=C),
    'ECMLoss':
    Spec(dict(num_classes=C, category_stats=STATS), channels=C + 1),
    # DropLoss draws at random: the suite seeds torch before every call
    'GumbelLoss':
    Spec(
        dict(num_classes=C, category_stats=STATS, lambda_=0.05),
        channels=C),
    'BalancedSoftmaxLoss':
    Spec(dict(num_classes=C, category_stats=STATS), channels=C + 1),
    # APA+GOL: learned APA activation with DropLoss (seeded like GumbelLoss)
    'APALoss':
    Spec(
        dict(num_classes=C, category_stats=STATS, lambda_=0.05,
             init_lambda=0.3, init_kappa=0.8),
        channels=C),
    # wrapping the focal loss: its (N, C) 'none' and element-wise mean
    'ClassBalancedLoss':
    Spec(
        dict(
            num_classes=C,
            category_stats=STATS,
            loss=dict(type='mmlongtail.FocalLoss', num_classes=C)),
        channels=C,
        none_shape=lambda n: (n, C),
        expected_mean=lambda none, y: none.sum() / (len(y) * C)),
    # dict output; like mmdet, the class term's mean is over positives
    'SeesawLoss':
    Spec(
        dict(num_classes=C),
        channels=C + 2,
        zero_weight_is_drop=False,
        expected_mean=lambda none, y: (
            none['loss_cls_objectness'].sum() / len(y) +
            none['loss_cls_classes'].sum() / (y < C).sum())),
    # plain LDAM (DRW needs the epoch from DRWHook; its own test file)
    'LDAMLoss':
    Spec(dict(num_classes=C, category_stats=STATS), channels=C + 1),
    # PCB on softmax cross entropy, acting from the first call (every class
    # is in the batch); the confusion matrix counts every positive, as the
    # official code does, so a zero-weight one changes the others' labels
    'PCBLoss':
    Spec(
        dict(
            num_classes=C,
            alpha=0.4,
            start_epoch=0,
            loss=dict(type='CrossEntropyLoss', use_sigmoid=False)),
        channels=C + 1,
        zero_weight_is_drop=False),
    # dict output: CE (mean over RoIs, avg_factor divides) + GAP ranking
    # term, which normalizes itself (its mean is its sum)
    'GAPLoss':
    Spec(
        dict(num_classes=C),
        channels=C + 1,
        expected_mean=lambda none, y: (none['loss_cls'].sum() / len(y) +
                                       none['loss_rank'].sum()),
        avg_factor=dict(loss_cls='divide', loss_rank='ignored')),
}


def registered_losses():
    import mmlongtail.models  # noqa: F401  (registers everything)
    return sorted(n for n in MODELS.module_dict if n.endswith('Loss'))


def test_every_registered_loss_has_a_spec():
    missing = [n for n in registered_losses() if n not in SPECS]
    assert not missing, f'add a contract spec for {missing}'


def _names():
    return sorted(SPECS)


def _build(name, **over):
    if name not in MODELS.module_dict:
        pytest.skip(f'{name} is not registered (yet)')
    cfg = dict(type=f'mmlongtail.{name}', **SPECS[name].kwargs)
    cfg.update(over)
    return MODELS.build(cfg)


def _total(out):
    """Seesaw returns a dict of losses; sum it."""
    if isinstance(out, dict):
        return sum(out.values())
    return out


def _call_raw(name, x, y, **kw):
    """Fresh loss for each call: some losses keep running statistics."""
    over = {k: kw.pop(k) for k in ('loss_weight', ) if k in kw}
    loss = _build(name, **over)
    torch.manual_seed(0)
    return loss(x, y, **kw)


def _call(name, x, y, **kw):
    return _total(_call_raw(name, x, y, **kw))


def _inputs(name, n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, SPECS[name].channels, generator=g) * 2
    y = torch.randint(0, C + 1, (n, ), generator=g)
    y[:C + 1] = torch.arange(C + 1)  # every class and background present
    return x, y


@pytest.mark.parametrize('name', _names())
def test_reductions_agree(name):
    spec = SPECS[name]
    x, y = _inputs(name)
    none = _call(name, x, y, reduction_override='none')
    assert none.shape == spec.none_shape(len(y))
    total = _call(name, x, y, reduction_override='sum')
    torch.testing.assert_close(total, none.sum())
    mean = _call(name, x, y, reduction_override='mean')
    assert mean.dim() == 0 and torch.isfinite(mean)
    if spec.expected_mean is not None:
        raw_none = _call_raw(name, x, y, reduction_override='none')
        torch.testing.assert_close(mean, spec.expected_mean(raw_none, y))
    with pytest.raises(AssertionError):
        _call(name, x, y, reduction_override='avg')


@pytest.mark.parametrize('name', _names())
def test_avg_factor(name):
    x, y = _inputs(name)
    with_avg = _call(name, x, y, avg_factor=7.0)
    if isinstance(SPECS[name].avg_factor, dict):  # per term of a dict
        with_avg = _call_raw(name, x, y, avg_factor=7.0)
        total = _call_raw(name, x, y, reduction_override='sum')
        mean = _call_raw(name, x, y)
        for key, rule in SPECS[name].avg_factor.items():
            ref = total[key] / 7.0 if rule == 'divide' else mean[key]
            torch.testing.assert_close(with_avg[key], ref)
    elif SPECS[name].avg_factor == 'divide':
        total = _call(name, x, y, reduction_override='sum')
        torch.testing.assert_close(with_avg, total / 7.0)
    else:
        torch.testing.assert_close(with_avg, _call(name, x, y))


@pytest.mark.parametrize('name', _names())
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_empty_input(name, reduction):
    x = torch.zeros(0, SPECS[name].channels, requires_grad=True)
    y = torch.zeros(0, dtype=torch.long)
    loss = _call(name, x, y, reduction_override=reduction)
    assert loss.shape == (SPECS[name].none_shape(0)
                          if reduction == 'none' else ())
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize('name', _names())
def test_label_weights(name):
    x, y = _inputs(name, n=16)
    ones = torch.ones(len(y))
    torch.testing.assert_close(
        _call(name, x, y, label_weights=ones), _call(name, x, y))
    # a zero-weight proposal contributes nothing ...
    w = ones.clone()
    w[-4:] = 0
    none_w = _call(name, x, y, label_weights=w, reduction_override='none')
    assert (none_w[-4:] == 0).all()
    # ... and is as if it were not there (for every reduction)
    for red in (('sum', 'mean') if SPECS[name].zero_weight_is_drop else ()):
        got = _call(name, x, y, label_weights=w, reduction_override=red)
        if red == 'mean' and SPECS[name].avg_factor != 'ignored':
            got = _call(
                name, x, y, label_weights=w, avg_factor=12.0,
                reduction_override='mean')
            ref = _call(name, x[:-4], y[:-4], avg_factor=12.0)
        else:
            ref = _call(name, x[:-4], y[:-4], reduction_override=red)
        torch.testing.assert_close(got, ref)
    # a per-proposal weight scales that proposal's loss
    w = ones.clone()
    w[3] = 2.5
    none_w = _call(name, x, y, label_weights=w, reduction_override='none')
    none = _call(name, x, y, reduction_override='none')
    torch.testing.assert_close(none_w[3], none[3] * 2.5)
    torch.testing.assert_close(none_w[4:], none[4:])


@pytest.mark.parametrize('name', _names())
@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_loss_weight(name, reduction):
    x, y = _inputs(name)
    one = _call(name, x, y, reduction_override=reduction)
    three = _call(name, x, y, reduction_override=reduction, loss_weight=3.0)
    torch.testing.assert_close(three, one * 3.0)


@pytest.mark.parametrize('name', _names())
def test_gradient_finite_and_nonzero(name):
    x, y = _inputs(name)
    x.requires_grad_(True)
    _call(name, x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize('name', _names())
def test_bad_labels_refused(name):
    x, y = _inputs(name)
    for bad in (C + 1, -1):
        y_bad = y.clone()
        y_bad[2] = bad
        with pytest.raises((ValueError, IndexError, RuntimeError)):
            _call(name, x, y_bad)


@pytest.mark.parametrize('name', _names())
def test_layout_describes_a_real_heads_classifier(name):
    from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
    if name not in MODELS.module_dict:
        pytest.skip(f'{name} is not registered (yet)')
    head = Shared2FCBBoxHead(
        in_channels=2, fc_out_channels=4, roi_feat_size=1, num_classes=C,
        loss_cls=dict(type=f'mmlongtail.{name}', **SPECS[name].kwargs))
    assert isinstance(head.loss_cls, ClassifierProtocol)
    layout = loss_layout(head.loss_cls, C)
    assert layout == head.loss_cls.classifier_layout(C)
    assert layout.num_classes == C
    assert head.fc_cls.out_features == layout.num_outputs == \
        SPECS[name].channels
    rows = layout.foreground_rows()
    assert rows.shape == (C, ) and len(set(rows.tolist())) == C
    background = layout.rows('background').tolist()
    # one probe per class (and one for the background row): the classifier
    # outputs a large logit on that row only, through the head's forward
    probes = [int(r) for r in rows] + background
    with torch.no_grad():
        head.fc_cls.weight.zero_()
        cls_scores = []
        for row in probes:
            head.fc_cls.bias.zero_()
            head.fc_cls.bias[row] = 12.0
            cls_score, _ = head(torch.randn(1, 2, 1, 1))
            cls_scores.append(cls_score)
        scores = head.loss_cls.get_activation(torch.cat(cls_scores))
    assert scores.shape == (len(probes), C + 1)
    assert scores[:C, :C].argmax(dim=1).tolist() == list(range(C))
    if background:
        assert scores[C:].argmax(dim=1).tolist() == [C]


#: Losses with the C-output query-head form (issue 24); every other one is
#: refused by a query-based head at build, naming what to use.
QUERY_HEAD_LOSSES = ('ClassBalancedLoss', 'EQLLoss', 'EQLv2Loss',
                     'EqualizedFocalLoss', 'FederatedLoss', 'FocalLoss',
                     'GumbelLoss')


@pytest.mark.parametrize('name', _names())
def test_query_head_mode_or_refusal(name):
    """In mmdet's DETRHead every loss either takes the query-head mode (C
    outputs, background = all-zero target: finite loss and gradient on
    (N, C) logits, (N, C) class probabilities in [0, 1]) or is refused at
    build naming FederatedLoss / EQLv2Loss / FocalLoss."""
    from mmdet.models.dense_heads import DETRHead
    from mmengine.registry import DefaultScope
    if name not in MODELS.module_dict:
        pytest.skip(f'{name} is not registered (yet)')
    cfg = dict(type=f'mmlongtail.{name}', **SPECS[name].kwargs)
    with DefaultScope.overwrite_default_scope('mmdet'):
        if name not in QUERY_HEAD_LOSSES:
            with pytest.raises(ValueError, match='query-based') as err:
                DETRHead(num_classes=C, embed_dims=8, loss_cls=cfg,
                         train_cfg=None)
            for hint in ('FederatedLoss', 'EQLv2Loss', 'FocalLoss'):
                assert f'mmlongtail.{hint}' in str(err.value)
            return
        head = DETRHead(num_classes=C, embed_dims=8, loss_cls=cfg,
                        train_cfg=None)
    loss = head.loss_cls
    assert loss.query_head and head.cls_out_channels == C
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(12, C, generator=g) * 2).requires_grad_()
    y = torch.randint(0, C + 1, (12, ), generator=g)
    torch.manual_seed(0)
    out = _total(loss(x, y, torch.ones(12), avg_factor=5.0))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()
    prob = loss.class_probabilities(x.detach())
    assert prob.shape == (12, C) and ((prob >= 0) & (prob <= 1)).all()
