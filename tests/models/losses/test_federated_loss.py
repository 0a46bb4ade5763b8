"""Federated loss (Zhou et al., 2021; detectron2's ``use_fed_loss``):
sampling weights, the drawn-class set under a fixed seed, hand-derived loss
values and gradients, and detectron2's formula written out element by
element."""
import math

import numpy as np
import pytest
import torch

from mmlongtail.models.losses.federated_loss import (federated_class_mask,
                                                     federated_classes,
                                                     federated_loss,
                                                     fed_loss_class_weights)


def bce(x, t):
    """Binary cross-entropy of one logit, from the definition."""
    p = 1 / (1 + math.exp(-x))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_class_weights_are_image_count_to_the_power():
    w = fed_loss_class_weights(np.array([1, 4, 9, 16]), 0.5)
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, torch.tensor([1., 2., 3., 4.]))
    # power 1 (detectron2's helper default) is the raw count
    torch.testing.assert_close(
        fed_loss_class_weights(np.array([1, 4, 9, 16]), 1.0),
        torch.tensor([1., 4., 9., 16.]))


def test_drawn_classes_under_a_fixed_seed():
    weights = torch.tensor([1., 2., 3., 4.])
    labels = torch.tensor([0, 4, 4, 0])  # U = {0, background}
    # |U| = 2 (background counts, as in detectron2): one class drawn from
    # [0, 2, 3, 4, 0] (U zeroed). Pinned for torch's CPU generator.
    torch.manual_seed(0)
    assert federated_classes(labels, 4, 3, weights).tolist() == [0, 4, 2]
    torch.manual_seed(1)
    assert federated_classes(labels, 4, 3, weights).tolist() == [0, 4, 3]
    torch.manual_seed(0)
    assert federated_classes(labels, 4, 4, weights).tolist() == [0, 4, 2, 1]
    # the same seed gives the same draw
    torch.manual_seed(7)
    a = federated_classes(labels, 4, 3, weights)
    torch.manual_seed(7)
    assert torch.equal(a, federated_classes(labels, 4, 3, weights))


def test_draw_frequencies_follow_the_weights():
    weights = torch.tensor([1., 2., 3., 4.])
    labels = torch.tensor([0, 4])
    torch.manual_seed(0)
    drawn = [federated_classes(labels, 4, 3, weights)[-1].item()
             for _ in range(3000)]
    freq = np.bincount(drawn, minlength=4) / len(drawn)
    assert freq[0] == 0  # a ground-truth class is never drawn
    np.testing.assert_allclose(freq[1:], [2 / 9, 3 / 9, 4 / 9], atol=0.03)


def test_no_draw_when_enough_classes_and_cap_when_too_few():
    weights = torch.tensor([1., 2., 3., 4.])
    labels = torch.tensor([2, 0, 1, 2])
    assert federated_classes(labels, 4, 3, weights).tolist() == [0, 1, 2]
    # 50 wanted but only class 3 (and the zero-weight ones) left: class 3
    # is taken, zero-weight classes never
    weights0 = torch.tensor([1., 2., 3., 0.])
    assert federated_classes(labels, 4, 50, weights).tolist() == [0, 1, 2, 3]
    assert federated_classes(labels, 4, 50, weights0).tolist() == [0, 1, 2]


def test_class_mask_ignores_background():
    mask = federated_class_mask(torch.tensor([0, 4, 2]), 4)
    assert mask.tolist() == [1., 0., 1., 0.]


def test_hand_derived_loss_and_gradient():
    x = torch.tensor([[1.0, -1.0, 2.0, 0.5], [0.5, 0.0, -2.0, 1.0],
                      [-0.5, 1.5, 0.0, -1.0]],
                     requires_grad=True)
    y = torch.tensor([0, 4, 2])
    mask = torch.tensor([1., 0., 1., 0.])  # S = {0, 2}
    none = federated_loss(x, y, mask, reduction='none')
    expected = [
        bce(1.0, 1) + bce(2.0, 0),
        bce(0.5, 0) + bce(-2.0, 0),
        bce(-0.5, 0) + bce(0.0, 1),
    ]
    torch.testing.assert_close(none, torch.tensor(expected))
    mean = federated_loss(x, y, mask)
    torch.testing.assert_close(mean, torch.tensor(sum(expected) / 3))
    mean.backward()
    # d/dx BCE = sigmoid(x) - t on the classes of S, 0 elsewhere; / N
    t = torch.tensor([[1., 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]])
    grad = (x.detach().sigmoid() - t) * mask / 3
    torch.testing.assert_close(x.grad, grad)
    assert (x.grad[:, [1, 3]] == 0).all()


def detectron2_formula(x, y, num_sampled, weights):
    """detectron2's sigmoid_cross_entropy_loss with use_fed_loss, from its
    definition: BCE over the C class logits, masked to U + drawn, summed,
    divided by N (its C + 1-th, unused logit left out)."""
    num, c = x.shape
    unique = torch.unique(y)
    prob = torch.ones(c + 1)
    prob[-1] = 0
    prob[:c] = weights
    prob[unique] = 0
    drawn = torch.multinomial(prob, num_sampled - len(unique), False)
    keep = torch.zeros(c + 1)
    keep[torch.cat([unique, drawn])] = 1
    target = torch.zeros(num, c + 1)
    target[range(num), y] = 1
    elem = torch.nn.functional.binary_cross_entropy_with_logits(
        x, target[:, :c], reduction='none')
    return torch.sum(elem * keep[:c].expand(num, c)) / num


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_equals_detectron2_bit_for_bit(seed):
    c = 60
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, c, generator=g) * 3
    y = torch.randint(0, 12, (64, ), generator=g)
    y[16:] = c
    weights = fed_loss_class_weights(
        torch.randint(1, 500, (c, ), generator=g).numpy(), 0.5)
    torch.manual_seed(seed)
    ref = detectron2_formula(x, y, 50, weights)
    torch.manual_seed(seed)
    mask = federated_class_mask(federated_classes(y, c, 50, weights), c)
    assert int(mask.sum()) == 50 - 1  # background counts in U
    # mmdet's BBoxHead passes avg_factor = N
    got = federated_loss(x, y, mask, avg_factor=64.0)
    assert torch.equal(got, ref)
    assert torch.equal(federated_loss(x, y, mask), ref)


def test_empty_batch():
    x = torch.zeros(0, 4, requires_grad=True)
    loss = federated_loss(x, torch.zeros(0, dtype=torch.long), torch.ones(4))
    assert loss.item() == 0
    loss.backward()


def _stats(image_counts):
    return dict(
        num_images=1000,
        categories=[
            dict(id=i + 1, name=f'c{i}', frequency='r', image_count=n,
                 instance_count=n) for i, n in enumerate(image_counts)
        ])


def test_module_equals_detectron2_as_bbox_head_calls_it():
    from mmlongtail.models.losses import FederatedLoss
    c = 60
    g = torch.Generator().manual_seed(3)
    counts = torch.randint(1, 500, (c, ), generator=g)
    loss = FederatedLoss(c, _stats(counts.tolist()))
    x = torch.randn(64, c, generator=g) * 3
    y = torch.randint(0, 12, (64, ), generator=g)
    y[16:] = c
    torch.manual_seed(5)
    ref = detectron2_formula(x, y, 50, counts.float()**0.5)
    torch.manual_seed(5)
    got = loss(x, y, torch.ones(64), avg_factor=64.0)
    assert torch.equal(got, ref)


def test_module_draws_from_weighted_rois_only():
    from mmlongtail.models.losses import FederatedLoss
    loss = FederatedLoss(4, _stats([1, 4, 9, 16]), num_classes_sampled=3)
    x = torch.randn(4, 4)
    y = torch.tensor([0, 4, 3, 2])
    w = torch.tensor([1., 1., 0., 0.])
    # U = {0, 4} from the weighted RoIs, as if RoIs 2 and 3 were absent
    torch.manual_seed(0)
    got = loss(x, y, w, reduction_override='sum')
    torch.manual_seed(0)
    assert torch.equal(got, loss(x[:2], y[:2], reduction_override='sum'))
    torch.manual_seed(0)
    assert federated_classes(y[:2], 4, 3,
                             loss.class_weights).tolist() == [0, 4, 2]


def test_module_checks():
    from mmlongtail.models.losses import FederatedLoss
    with pytest.raises(ValueError, match='num_classes=3'):
        FederatedLoss(3, _stats([1, 2]))
    with pytest.raises(ValueError, match='num_classes_sampled'):
        FederatedLoss(2, _stats([1, 2]), num_classes_sampled=0)
    loss = FederatedLoss(2, _stats([1, 2]))
    assert loss.get_cls_channels(2) == 2
    assert loss.state_dict() == {}  # derived from the statistics only
    with pytest.raises(ValueError, match='channels'):
        loss(torch.zeros(3, 3), torch.tensor([0, 1, 2]))
