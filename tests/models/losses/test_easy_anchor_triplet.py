"""DCL's triplet loss with easy anchors: hand-computed loss and gradient
(easy-anchor selection, hard mining, margin), a loop-by-definition
reference on random batches, minority classes, reductions, errors."""
import itertools

import pytest
import torch

from mmlongtail.models.losses import EasyAnchorTriplet
from mmlongtail.models.losses.easy_anchor_triplet import (
    minority_classes, easy_anchor_triplet)

# 8 RoIs, C = 3 classes, label 3 = background. Class counts 4 / 2 / 1 of
# 7 foreground RoIs: the rarest classes up to half of them (3.5) are
# classes 2 (1) and 1 (1 + 2 = 3), so the minority classes are {1, 2}.
LABELS = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3])
SCORES = torch.tensor([
    # c0   c1    c2    bg
    [0.6, 0.30, 0.05, 0.05],  # 0: class 0
    [0.7, 0.10, 0.10, 0.10],  # 1: class 0
    [0.4, 0.50, 0.05, 0.05],  # 2: class 0, scored highest on class 1
    [0.8, 0.05, 0.10, 0.05],  # 3: class 0
    [0.1, 0.35, 0.10, 0.45],  # 4: class 1, top class: an easy anchor
    [0.6, 0.20, 0.10, 0.10],  # 5: class 1, wrong: the hard positive
    [0.2, 0.10, 0.60, 0.10],  # 6: class 2, right: an anchor, no positive
    [0.1, 0.90, 0.00, 0.00],  # 7: background, never a negative
])
# 2-d embeddings (normalize=False): anchor 4 at the origin
EMB = torch.tensor([[2., 0.], [9., 9.], [1., 0.], [9., -9.], [0., 0.],
                    [3., 4.], [5., 5.], [0., 0.5]])


def test_minority_classes_by_batch_counts():
    assert minority_classes(LABELS, 3, 0.5).tolist() == [False, True, True]
    # ties broken by class index; 3 classes of 2, half of 6 = 3
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    assert minority_classes(labels, 3, 0.5).tolist() == [True, False, False]
    assert minority_classes(labels, 3, 1.0).tolist() == [True] * 3
    # absent classes are never minority
    assert minority_classes(torch.tensor([1, 1, 3]), 3,
                            1.0).tolist() == [False, True, False]


def test_hand_computed_loss_and_gradient_topk1():
    """topk=1: the only triplet is (anchor 4, hard positive 5, hard negative
    2): d(4, 5) = 5, d(4, 2) = 1, loss = 0.5 + 5 - 1 = 4.5. Anchor 6 is its
    class's only RoI, so it has no positive; RoI 5 is misclassified, no
    anchor; class 0 is not a minority class."""
    emb = EMB.clone().requires_grad_()
    loss = EasyAnchorTriplet(margin=0.5, topk=1, normalize=False)(
        emb, LABELS, SCORES)
    assert loss.item() == pytest.approx(4.5)
    loss.backward()
    want = torch.zeros_like(EMB)
    want[4] = torch.tensor([-0.6, -0.8]) + torch.tensor([1., 0.])
    want[5] = torch.tensor([0.6, 0.8])  # (e5 - e4) / d(4, 5)
    want[2] = torch.tensor([-1., 0.])  # -(e2 - e4) / d(4, 2)
    torch.testing.assert_close(emb.grad, want)


def test_hand_computed_loss_topk2_and_margin():
    """topk=2: class 1's hard positives are 5 then 4 (4 is the anchor
    itself, skipped); its hard negatives the two other-class foreground
    RoIs scored highest on class 1: 2 (0.5), then 0 (0.3); RoI 7 scores 0.9
    but is background. Triplets (4, 5, 2): 0.5 + 5 - 1 = 4.5 and
    (4, 5, 0): 0.5 + 5 - 2 = 3.5; mean 4. Class 2's negatives are 3 and 1
    but its anchor has no positive."""
    m = EasyAnchorTriplet(margin=0.5, topk=2, normalize=False)
    assert m(EMB, LABELS, SCORES).item() == pytest.approx(4.0)
    assert m(EMB, LABELS, SCORES,
             reduction_override='sum').item() == pytest.approx(8.0)
    per = m(EMB, LABELS, SCORES, reduction_override='none')
    assert per.shape == (8, 2, 2)
    assert per[4, 0].tolist() == pytest.approx([4.5, 3.5])
    assert per.count_nonzero() == 2
    # a margin that the triplet already meets: 3.5 + margin - 4 -> hinge
    far = EMB.clone()
    far[2] = torch.tensor([7., 0.])  # d(4, 2) = 7 > 5 + 0.5
    far[0] = torch.tensor([0., 9.])  # d(4, 0) = 9
    assert m(far, LABELS, SCORES).item() == 0.0
    m2 = EasyAnchorTriplet(margin=2.5, topk=2, normalize=False,
                               loss_weight=2.0)
    assert m2(far, LABELS, SCORES).item() == pytest.approx(2 * 0.5 / 2)


def test_normalized_embeddings():
    out = EasyAnchorTriplet(margin=0.2, topk=1)(EMB + 1, LABELS, SCORES)
    e = torch.nn.functional.normalize(EMB + 1, dim=1)
    want = 0.2 + (e[4] - e[5]).norm() - (e[4] - e[2]).norm()
    assert out.item() == pytest.approx(max(want.item(), 0.0), abs=1e-6)


def _reference(emb, labels, scores, margin, topk, ratio):
    """The definitions, one triplet at a time."""
    n, c = len(labels), scores.shape[1] - 1
    counts = {j: int((labels == j).sum()) for j in range(c)}
    fg = int((labels < c).sum())
    minority, cum = set(), 0
    for j in sorted((j for j in range(c) if counts[j]),
                    key=lambda j: (counts[j], j)):
        cum += counts[j]
        if cum <= ratio * fg:
            minority.add(j)
    terms = []
    for a in range(n):
        j = int(labels[a])
        if j == c or j not in minority or int(scores[a, :c].argmax()) != j:
            continue
        same = sorted((i for i in range(n) if labels[i] == j),
                      key=lambda i: (float(scores[i, j]), i))[:topk]
        other = sorted((i for i in range(n) if labels[i] not in (j, c)),
                       key=lambda i: -float(scores[i, j]))[:topk]
        for p, q in itertools.product(same, other):
            if p != a:
                terms.append(torch.relu(margin + (emb[a] - emb[p]).norm() -
                                        (emb[a] - emb[q]).norm()))
    return torch.stack(terms).mean() if terms else emb.sum() * 0


@pytest.mark.parametrize('seed', range(4))
def test_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n, c = 40, 6
    labels = torch.multinomial(
        torch.tensor([8., 6, 3, 2, 1, 1, 10]), n, True, generator=g)
    # continuous scores: no ties in the hard mining
    scores = torch.softmax(3 * torch.randn(n, c + 1, generator=g), 1)
    emb = torch.randn(n, 5, generator=g, dtype=torch.float64)
    e1 = emb.clone().requires_grad_()
    e2 = emb.clone().requires_grad_()
    got = EasyAnchorTriplet(0.7, 3, 0.5, normalize=False)(
        e1, labels, scores)
    want = _reference(e2, labels, scores, 0.7, 3, 0.5)
    torch.testing.assert_close(got, want)
    got.backward()
    want.backward()
    torch.testing.assert_close(e1.grad, e2.grad)


def test_no_triplet_and_empty_give_zero_with_graph():
    emb = torch.randn(3, 4, requires_grad=True)
    labels = torch.tensor([3, 3, 3])  # background only
    loss = EasyAnchorTriplet()(emb, labels, torch.rand(3, 4))
    loss.backward()
    assert loss.item() == 0 and torch.equal(emb.grad, torch.zeros(3, 4))
    empty = EasyAnchorTriplet()(emb[:0], labels[:0], torch.rand(0, 4))
    assert empty.item() == 0
    loss, valid = easy_anchor_triplet(emb[:0], labels[:0], torch.rand(0, 4))
    assert loss.shape == (0, 5, 0) and not valid.any()


def test_bad_config_and_inputs_raise():
    for kwargs, match in [(dict(margin=0), 'margin must be > 0'),
                          (dict(topk=0), 'topk must be an int'),
                          (dict(topk=2.5), 'topk must be an int'),
                          (dict(minority_ratio=0), 'minority_ratio'),
                          (dict(minority_ratio=1.5), 'minority_ratio'),
                          (dict(reduction='avg'), 'reduction')]:
        with pytest.raises(ValueError, match=match):
            EasyAnchorTriplet(**kwargs)
    m = EasyAnchorTriplet()
    with pytest.raises(ValueError, match='same N'):
        m(EMB[:5], LABELS, SCORES)
    with pytest.raises(ValueError, match='labels'):
        m(EMB, LABELS + 1, SCORES)
