"""How much a virtual feature weighs (issue 26). SMOTE's interpolants and
the feature cloud's rotations are real RoIs of a few tail classes: each
must weigh what one real RoI weighs in ``loss_cls`` (the loss divided by
the step's RoI count). Averaged over the few virtual features instead,
their loss alone put a gradient of norm about ``|f|`` on ``fc_cls`` and the
benchmark's SGD overshot: ``loss_cls_aug`` rose from 4 to 7-9 and box AP
fell to 0. FASA keeps the official average over its virtual features."""
import copy

import torch
import torch.nn.functional as F
from helpers import C, STATS, roi_head
from mmengine.logging import MessageHub

from mmlongtail.models.feature_augment import FASA, SMOTE, FeatureCloud

NORMED = dict(type='mmlongtail.NormedLinear', temperature=20)


def _step(n_bg=96, norm=25., seed=0):
    """``(N, 16)`` ReLU features of norm ``norm``, all RoIs of a class equal
    (so SMOTE's interpolants are the real features), and labels: 96
    background, 8 RoIs each of the tail classes 0 and 1, 8 each of the head
    classes 2 and 3."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.rand(C + 1, 16, generator=g), dim=1) * norm
    labels = torch.cat([torch.arange(C).repeat_interleave(8),
                        torch.full((n_bg, ), C)])
    return centres[labels].clone(), labels


def test_a_smote_interpolant_weighs_one_roi():
    MessageHub.get_current_instance().update_info('epoch', 0)
    head = roi_head(dict(type='mmlongtail.SMOTE', category_stats=STATS))
    feats, labels = _step()
    bbox_head = head.bbox_head
    loss = head.feature_augment.loss(feats, labels, bbox_head)['loss_cls_aug']
    ce = F.cross_entropy(bbox_head.fc_cls(feats), labels, reduction='none')
    tail = labels < 2  # the 16 RoIs of classes 0 and 1, interpolants of
    # equal features: each virtual feature is its RoI's feature
    # by hand: what these 16 RoIs add to loss_cls (divided by N = 128)
    torch.testing.assert_close(loss, ce[tail].sum() / len(labels))
    assert SMOTE.average_over_rois and not FASA.average_over_rois


def test_a_cloud_feature_weighs_one_roi():
    MessageHub.get_current_instance().update_info('epoch', 0)
    head = roi_head(dict(type='mmlongtail.FeatureCloud',
                         category_stats=STATS), cls_predictor_cfg=NORMED)
    aug = head.feature_augment
    aug.angles.count.fill_(10)  # a positive gap from the start
    aug.angles.var.copy_(torch.tensor([[.01], [.01], [.09], [.09]]))
    feats, labels = _step()
    pos = labels < C
    # the same draws by hand, on a copy
    ref = copy.deepcopy(aug)
    fc_cls = head.bbox_head.fc_cls
    ref.observe(feats[pos], labels[pos], fc_cls)
    virt, vlab = ref.generate(feats[pos], labels[pos], fc_cls,
                              ref.generator(feats.device))
    assert len(vlab) == 16
    loss = aug.loss(feats, labels, head.bbox_head)['loss_cls_aug']
    expected = F.cross_entropy(fc_cls(virt), vlab, reduction='sum') / 128
    torch.testing.assert_close(loss, expected)
    assert FeatureCloud.average_over_rois

