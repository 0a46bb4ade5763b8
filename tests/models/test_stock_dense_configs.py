"""mmlongtail's sigmoid losses dropped into mmdet's OWN RetinaNet config (the
one shipped inside the installed mmdet), with no ``dense_head`` flag and no
``LongTailConsistencyHook``: the loss takes the dense layout from the head
that builds it, trains with labels ``[0, C)`` (the last class is a class, not
background) and predicts every class, never a background column."""
import copy
import os.path as osp

import mmdet
import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

import mmlongtail  # noqa: F401

register_all_modules()

C = 3
IMG = 128
STOCK = osp.join(
    osp.dirname(mmdet.__file__), '.mim', 'configs', 'retinanet',
    'retinanet_r18_fpn_1x_coco.py')
STATS = dict(
    num_images=50,
    categories=[
        dict(id=i + 1, name=f'c{i}', frequency=f, image_count=ic,
             instance_count=2 * ic)
        for i, (f, ic) in enumerate([('f', 40), ('c', 6), ('r', 1)])
    ])
#: each loss as a user would write it in mmdet's config: no dense_head
LOSSES = {
    'FocalLoss': dict(type='mmlongtail.FocalLoss', use_sigmoid=True,
                      gamma=2.0, alpha=0.25, loss_weight=1.0),
    'EQLLoss': dict(type='mmlongtail.EQLLoss', use_sigmoid=True,
                    num_classes=C, category_stats=STATS, freq_thr=0.05),
    'EqualizedFocalLoss': dict(type='mmlongtail.EqualizedFocalLoss',
                               use_sigmoid=True, num_classes=C),
    'FederatedLoss': dict(type='mmlongtail.FederatedLoss', use_sigmoid=True,
                          num_classes=C, category_stats=STATS,
                          num_classes_sampled=2),
    'BalancedSoftmaxLoss': dict(type='mmlongtail.BalancedSoftmaxLoss',
                                use_sigmoid=True, num_classes=C,
                                category_stats=STATS),
}


def build_stock_retinanet(loss_cls):
    cfg = Config.fromfile(STOCK)
    assert 'custom_hooks' not in cfg  # no consistency hook anywhere
    cfg.model.backbone.init_cfg = None
    cfg.model.bbox_head.num_classes = C
    cfg.model.bbox_head.loss_cls = copy.deepcopy(loss_cls)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MMDET_MODELS.build(cfg.model)


def data(seed):
    """Two images whose boxes are all of the LAST class, ``C - 1``."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(
            torch.randint(0, 255, (3, IMG, IMG), generator=g,
                          dtype=torch.uint8))
        xy = torch.rand(2, 2, generator=g) * 60
        wh = torch.rand(2, 2, generator=g) * 40 + 24
        sample = DetDataSample(
            metainfo=dict(img_shape=(IMG, IMG), ori_shape=(IMG, IMG),
                          scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, (xy + wh).clamp(max=IMG)], 1),
            labels=torch.full((2, ), C - 1, dtype=torch.long))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_the_stock_config_is_the_one_shipped_with_mmdet():
    assert osp.isfile(STOCK), STOCK
    cfg = Config.fromfile(STOCK)
    assert cfg.model.bbox_head.type == 'RetinaHead'
    assert cfg.model.bbox_head.loss_cls.use_sigmoid is True


@pytest.mark.parametrize('name', sorted(LOSSES))
def test_sigmoid_loss_in_stock_retinanet_config(name):
    torch.manual_seed(0)
    model = build_stock_retinanet(LOSSES[name])
    head, loss = model.bbox_head, model.bbox_head.loss_cls
    # the layout came from the head: C outputs, plain sigmoid scoring
    assert head.cls_out_channels == C
    assert loss.dense_head and not loss.custom_cls_channels
    seen = []
    loss.register_forward_pre_hook(
        lambda mod, args: seen.append((args[0].shape[-1], args[1].clone())))

    # one training step
    model.train()
    batch = model.data_preprocessor(data(0), True)
    losses = model(**batch, mode='loss')
    total = sum(v if torch.is_tensor(v) else sum(v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert head.retina_cls.weight.grad.abs().sum() > 0
    labels = torch.cat([lab for _, lab in seen])
    assert all(width == C for width, _ in seen)
    # the last class's anchors are positives with label C - 1, background
    # anchors have label C: the last class is not background
    assert (labels == C - 1).any() and (labels == C).any()
    assert labels.max() == C
    if name == 'EqualizedFocalLoss':
        assert loss.pos_grad[C - 1] > 0 and loss.pos_grad[:C - 1].sum() == 0

    # predict: labels in [0, C); scores are plain sigmoids of the C logits.
    # Favour one class at a time: each of the C classes is predicted,
    # including the last one, and no column C exists.
    model.eval()
    batch = model.data_preprocessor(data(1), False)
    bias = head.retina_cls.bias
    for favoured in range(C):
        with torch.no_grad():
            bias.fill_(-6.0)
            bias.view(-1, C)[:, favoured] = 4.0
            results = model(**batch, mode='predict')
        for res in results:
            pred = res.pred_instances
            assert len(pred) > 0
            assert pred.labels.min() >= 0 and pred.labels.max() < C
            assert int(pred.labels[pred.scores.argmax()]) == favoured
            assert float(pred.scores.max()) <= 1.0


@pytest.mark.parametrize(
    'name', ['EQLLoss', 'EqualizedFocalLoss', 'FederatedLoss', 'FocalLoss'])
def test_a_contradicting_dense_head_flag_is_refused_at_build(name):
    with pytest.raises(ValueError, match=rf'{name} was built with '
                       r'dense_head=False.*RetinaHead, a dense head.*'
                       rf'background column as class {C}: drop dense_head'):
        build_stock_retinanet(dict(LOSSES[name], dense_head=False))


def test_class_balanced_wrapper_is_refused_in_a_dense_head():
    # the wrapper weights R-CNN RoIs; a dense head sizes C + 1 softmax
    # outputs from its config (no use_sigmoid there), which the wrapped
    # sigmoid loss cannot read: refused at build, naming what to use
    wrapped = dict(type='mmlongtail.ClassBalancedLoss',
                   loss=LOSSES['FocalLoss'], num_classes=C,
                   category_stats=STATS)
    with pytest.raises(ValueError, match=r'ClassBalancedLoss is the loss_cls '
                       r'of RetinaHead, a dense head.*EqualizedFocalLoss'):
        build_stock_retinanet(wrapped)


def test_class_balanced_wrapper_in_a_bbox_head_stops_the_watch():
    # in an R-CNN box head the wrapper is accepted, its wrapped sigmoid loss
    # keeps the BBoxHead protocol, and no loss is left waiting for a head
    from mmlongtail.models.losses import classifier
    head = MMDET_MODELS.build(
        dict(type='Shared2FCBBoxHead', in_channels=4, fc_out_channels=8,
             roi_feat_size=2, num_classes=C,
             loss_cls=dict(type='mmlongtail.ClassBalancedLoss',
                           loss=LOSSES['FocalLoss'], num_classes=C,
                           category_stats=STATS)))
    inner = head.loss_cls.loss
    assert not inner.dense_head and inner.custom_cls_channels
    assert head.fc_cls.out_features == C  # C sigmoid rows (BBoxHead layout)
    assert inner not in classifier._UNPLACED
    assert head.loss_cls not in classifier._UNPLACED
