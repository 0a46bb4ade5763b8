"""mmlongtail.models.losses.protocol: the checks (one exception type per
kind), ClassifierLayout's own consistency and layouts of losses that do not
implement the protocol."""
import pytest
import torch
import torch.nn as nn

import mmlongtail  # noqa: F401
from mmlongtail.models.losses.protocol import (ClassifierLayout,
                                               check_cls_score,
                                               check_label_weights,
                                               check_labels,
                                               check_num_classes,
                                               check_reduction, loss_layout)


def test_checks_raise_value_error_naming_the_problem():
    with pytest.raises(ValueError, match='positive int, got 0'):
        check_num_classes(0, 'X')
    with pytest.raises(ValueError, match='positive int, got True'):
        check_num_classes(True, 'X')
    with pytest.raises(ValueError, match='X was built with num_classes=3, '
                       'but the head has num_classes=4'):
        check_num_classes(3, 'X', 4)
    assert check_num_classes(3, 'X', 3) == 3
    with pytest.raises(ValueError, match="reduction must be .* got 'avg'"):
        check_reduction('avg', 'X')
    with pytest.raises(ValueError, match='3 channels, expected 4 channels '
                       r'\(C \+ 1\): cls_score must be \(N, 4\)'):
        check_cls_score(torch.zeros(2, 3), 4, 'X', 'C + 1')
    with pytest.raises(ValueError, match=r'must be \(N, 4\), got 4 channels '
                       r'in shape \(4,\)'):
        check_cls_score(torch.zeros(4), 4, 'X')
    check_cls_score(torch.zeros(2, 3, 4), 4, 'X', batched=False)
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\] '
                       r'.*got \[-1, 7\]'):
        check_labels(torch.tensor([0, 7, -1, 3]), 4, 3, 'X')
    with pytest.raises(ValueError, match=r'labels must have shape \(5,\)'):
        check_labels(torch.tensor([0, 1]), 5, 3, 'X')
    with pytest.raises(ValueError, match='integer tensor'):
        check_labels(torch.tensor([0., 1.]), 2, 3, 'X')
    with pytest.raises(ValueError, match=r'label_weights must have shape '
                       r'\(2,\), got \(3,\)'):
        check_label_weights(torch.ones(3), 2, 'X')


def test_layout_describes_every_row_once():
    layout = ClassifierLayout(
        owner='toy', num_classes=2, num_outputs=4, class_rows=(3, 1),
        extra_rows=(('others', (0, )), ('background', (2, ))),
        groups=((0, 1), (2, 3)))
    assert layout.foreground_rows().tolist() == [3, 1]
    assert layout.rows('background').tolist() == [2]
    assert layout.rows('objectness').tolist() == []
    assert layout.extra == {'others': (0, ), 'background': (2, )}
    with pytest.raises(ValueError, match='exactly once'):
        ClassifierLayout('toy', 2, 4, (0, 1), (('background', (1, )), ))
    with pytest.raises(ValueError, match='2 class rows for num_classes=3'):
        ClassifierLayout('toy', 3, 3, (0, 1))
    with pytest.raises(ValueError, match='groups must cover'):
        ClassifierLayout('toy', 2, 3, (0, 1), (('background', (2, )), ),
                         groups=((0, 1), ))
    with pytest.raises(ValueError, match='fc_cls has 5 outputs, but toy lays '
                       'out 4 for num_classes=2'):
        layout.check_outputs(5)


def test_layouts_of_losses_without_the_protocol():
    ce = loss_layout(dict(type='CrossEntropyLoss'), 3)
    assert (ce.num_outputs, ce.foreground_rows().tolist(),
            ce.rows('background').tolist()) == (4, [0, 1, 2], [3])
    # a BBoxHead gives a sigmoid CE C + 1 rows; a dense head C
    sig = dict(type='CrossEntropyLoss', use_sigmoid=True)
    assert loss_layout(sig, 3).num_outputs == 4
    assert loss_layout(sig, 3, dense=True).num_outputs == 3
    seesaw = loss_layout(dict(type='SeesawLoss', num_classes=3), 3)
    assert seesaw.rows('objectness').tolist() == [3]
    assert seesaw.rows('background').tolist() == [4]

    class Undescribed(nn.Module):
        custom_cls_channels = True

    with pytest.raises(ValueError, match='Undescribed sizes its classifier '
                       'itself'):
        loss_layout(Undescribed(), 3)
    ours = loss_layout(dict(type='mmlongtail.FocalLoss'), 3)
    assert ours.num_outputs == 3 and ours.owner == 'FocalLoss'


def test_one_helper_per_activation_and_background_rule():
    """The background-column rule and the objectness-scaled sigmoid are
    written once; the losses score through them (hand-derived values)."""
    import mmlongtail.models.losses.ecm_loss as ecm
    import mmlongtail.models.losses.eqlv2_loss as eqlv2
    import mmlongtail.models.losses.gumbel_loss as gumbel
    import mmlongtail.models.roi_heads.bbox_predict as bbox_predict
    from mmlongtail.models.losses.protocol import (
        sigmoid_scores_times_objectness, with_max_background)
    prob = torch.tensor([[0.2, 0.7], [0.1, 0.3]])
    torch.testing.assert_close(
        with_max_background(prob),
        torch.tensor([[0.2, 0.7, 0.3], [0.1, 0.3, 0.7]]))
    assert with_max_background(prob[:0]).shape == (0, 3)
    z = torch.tensor([[0.0, 2.0, -1.0]])
    s = torch.sigmoid(z)
    torch.testing.assert_close(
        sigmoid_scores_times_objectness(z),
        torch.stack([s[0, 0] * (1 - s[0, 2]), s[0, 1] * (1 - s[0, 2]),
                     s[0, 2]])[None])
    assert ecm.ecm_scores is sigmoid_scores_times_objectness
    assert eqlv2.sigmoid_scores_times_objectness is \
        sigmoid_scores_times_objectness
    assert gumbel.with_max_background is with_max_background
    assert not hasattr(bbox_predict, 'head_layout_for_scoring')


def test_one_num_classes_check_for_losses_and_category_stats():
    """CategoryStats.check_num_classes goes through the protocol's check:
    same validation, same mismatch message naming both numbers."""
    from mmlongtail.datasets import category_stats
    from mmlongtail.models.losses import protocol
    assert protocol.check_num_classes is category_stats.check_num_classes
    stats = category_stats.load_category_stats(dict(
        num_images=4,
        categories=[
            dict(id=i + 1, name=f'c{i}', frequency='r', image_count=1,
                 instance_count=1) for i in range(3)
        ]))
    stats.check_num_classes(3, 'X')
    with pytest.raises(ValueError, match='positive int, got True'):
        stats.check_num_classes(True, 'X')
    with pytest.raises(ValueError, match=r'num_classes mismatch: X has '
                       r'num_classes=4, but the category statistics from '
                       r'<dict> describe 3 classes\. .*set num_classes=3'):
        stats.check_num_classes(4, 'X')


def test_every_loss_is_written_in_the_one_frame():
    """Every registered loss inherits ClassificationLoss's forward (mmdet's
    signature, reduction assert, input checks, loss_weight) and EQLv2 / EFL
    share one gradient-statistics buffer helper."""
    import mmlongtail.registry
    from mmlongtail.models.losses import (ClassificationLoss, EQLv2Loss,
                                          EqualizedFocalLoss,
                                          GradientStatistics)
    losses = {name: cls for name, cls in
              mmlongtail.registry.MODELS.module_dict.items()
              if name.endswith('Loss')}
    assert len(losses) >= 11
    for name, cls in losses.items():
        assert issubclass(cls, ClassificationLoss), name
        assert cls.forward is ClassificationLoss.forward, name
        assert '__init__' in vars(cls) and '_loss' in vars(cls), name
    for cls in (EQLv2Loss, EqualizedFocalLoss):
        assert issubclass(cls, GradientStatistics)
        loss = cls(num_classes=3)
        assert [n for n, _ in loss.named_buffers()] == [
            'pos_grad', 'neg_grad', 'pos_neg']
