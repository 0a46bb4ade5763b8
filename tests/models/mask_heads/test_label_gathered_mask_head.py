"""LabelGatheredFCNMaskHead against mmdet 3.3.0's FCNMaskHead with the same
weights: checkpoints load both ways, equal loss, gradients and predicted
masks (plain conv and Norm Mask predictors, and a predictor it has no
shortcut for), Cascade's stage averaging, RLE output, bad labels."""
import types

import pycocotools.mask as mask_util
import numpy as np
import pytest
import torch
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.models.test_time_augs import merge_aug_masks
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope

import mmlongtail  # noqa: F401

C = 37
PREDICTORS = {
    'conv': dict(type='Conv'),
    'normed': dict(type='mmlongtail.NormedConv2d', temperature=20),
    'mmdet_normed': dict(type='NormedConv2d', tempearture=20),  # fallback
}


def _heads(predictor, seed=0):
    cfg = dict(num_convs=2, in_channels=8, conv_out_channels=8,
               num_classes=C, predictor_cfg=PREDICTORS[predictor],
               loss_mask=dict(type='CrossEntropyLoss', use_mask=True,
                              loss_weight=1.0))
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(seed)
        ref = MMDET_MODELS.build(dict(type='FCNMaskHead', **cfg))
        ours = MMDET_MODELS.build(
            dict(type='mmlongtail.LabelGatheredFCNMaskHead', **cfg))
    ref.init_weights()
    # non-zero biases, so gathering them is tested too
    with torch.no_grad():
        if ref.conv_logits.bias is not None:
            ref.conv_logits.bias.normal_()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def test_checkpoints_interchangeable():
    ref, ours = _heads('normed')
    assert {k: v.shape for k, v in ref.state_dict().items()} == {
        k: v.shape for k, v in ours.state_dict().items()}
    torch.manual_seed(5)
    with DefaultScope.overwrite_default_scope('mmdet'):
        other = MMDET_MODELS.build(dict(
            type='FCNMaskHead', num_convs=2, in_channels=8,
            conv_out_channels=8, num_classes=C,
            predictor_cfg=PREDICTORS['normed']))
    other.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 8, 14, 14)
    assert torch.equal(other(x), ours(x))


@pytest.mark.parametrize('predictor', list(PREDICTORS))
def test_forward_loss_grad_equal(predictor, monkeypatch):
    ref, ours = _heads(predictor)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(11, 8, 14, 14, generator=g)
    labels = torch.randint(0, C, (11, ), generator=g)
    targets = (torch.rand(11, 28, 28, generator=g) > 0.5).float()
    # all classes without labels: mmdet's forward, bit for bit
    assert torch.equal(ours(x), ref(x))
    gathered = ours(x, labels)
    assert gathered.shape == (11, 1, 28, 28)
    torch.testing.assert_close(
        gathered[:, 0], ref(x)[torch.arange(11), labels], rtol=1e-5,
        atol=1e-5)
    results = [types.SimpleNamespace(pos_gt_labels=labels[:6]),
               types.SimpleNamespace(pos_gt_labels=labels[6:])]
    losses = []
    for head, preds_fn in ((ref, lambda xx: ref(xx)),
                           (ours, lambda xx: ours(xx, labels))):
        monkeypatch.setattr(head, 'get_targets', lambda *a, **k: targets)
        xx = x.clone().requires_grad_(True)
        head.zero_grad()
        out = head.loss_and_target(preds_fn(xx), results, None, None)
        out['loss_mask']['loss_mask'].backward()
        losses.append((out['loss_mask']['loss_mask'].detach(), xx.grad,
                       {k: p.grad.clone()
                        for k, p in head.named_parameters()}))
    (l_ref, gx_ref, gp_ref), (l_ours, gx_ours, gp_ours) = losses
    torch.testing.assert_close(l_ours, l_ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(gx_ours, gx_ref, rtol=1e-4, atol=1e-7)
    assert gp_ours.keys() == gp_ref.keys()
    for k in gp_ref:
        torch.testing.assert_close(gp_ours[k], gp_ref[k], rtol=1e-4,
                                   atol=1e-7)
    # only the labels' rows of the predictor receive gradient, in both
    rows = gp_ours['conv_logits.weight'].flatten(1).abs().sum(1) > 0
    assert set(rows.nonzero().view(-1).tolist()) <= set(labels.tolist())


def _meta(h=50, w=60):
    return dict(scale_factor=(1.25, 1.25), ori_shape=(h, w),
                img_shape=(62, 75))


@pytest.mark.parametrize('predictor', ['conv', 'normed'])
def test_predicted_masks_equal(predictor):
    ref, ours = _heads(predictor, seed=2)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 8, 14, 14, generator=g)
    labels = torch.randint(0, C, (9, ), generator=g)
    boxes = torch.rand(9, 4, generator=g) * 40
    boxes[:, 2:] += boxes[:, :2] + 2
    boxes[0] = torch.tensor([0., 0., 75., 62.])
    cfg = ConfigDict(mask_thr_binary=0.5)
    with torch.no_grad():
        full = ref._predict_by_feat_single(ref(x), boxes.clone(), labels,
                                           _meta(), cfg, rescale=True)
        gathered = ours(x, labels)
        bitmaps = ours._predict_by_feat_single(gathered, boxes.clone(),
                                               labels, _meta(), cfg,
                                               rescale=True)
        rles = ours._predict_by_feat_single(
            gathered, boxes.clone(), labels, _meta(),
            ConfigDict(mask_thr_binary=0.5, mask_format='rle'),
            rescale=True)
    assert full.any()
    assert torch.equal(bitmaps, full)
    expected = mask_util.encode(np.asfortranarray(
        full.numpy().astype(np.uint8).transpose(1, 2, 0)))
    assert rles == expected
    with pytest.raises(ValueError, match='mask_format'):
        ours._predict_by_feat_single(gathered, boxes.clone(), labels,
                                     _meta(), ConfigDict(mask_thr_binary=0.5,
                                                         mask_format='png'))


def test_cascade_stage_average_commutes_with_gather():
    """Cascade averages the stages' sigmoid masks: averaging the gathered
    channels equals gathering from the averaged all-class masks."""
    stages = [_heads('normed', seed=s) for s in range(3)]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 8, 14, 14, generator=g)
    labels = torch.randint(0, C, (5, ), generator=g)
    meta = dict(flip=False)
    with torch.no_grad():
        full = merge_aug_masks([ref(x).sigmoid() for ref, _ in stages],
                               meta)
        ours = merge_aug_masks(
            [o(x, labels).sigmoid() for _, o in stages], meta)
    torch.testing.assert_close(ours[:, 0], full[torch.arange(5), labels],
                               rtol=1e-5, atol=1e-6)


def test_bad_labels_raise():
    _, ours = _heads('conv')
    x = torch.randn(2, 8, 14, 14)
    with pytest.raises(ValueError, match=r'\[0, 37\)'):
        ours(x, torch.tensor([0, C]))
    with pytest.raises(ValueError, match='3 labels for 2'):
        ours(x, torch.tensor([0, 1, 2]))


def test_class_agnostic_ignores_labels():
    with DefaultScope.overwrite_default_scope('mmdet'):
        ours = MMDET_MODELS.build(dict(
            type='mmlongtail.LabelGatheredFCNMaskHead', num_convs=1,
            in_channels=8, conv_out_channels=8, num_classes=C,
            class_agnostic=True))
    x = torch.randn(2, 8, 14, 14)
    assert torch.equal(ours(x, torch.tensor([3, 4])), ours(x))
    assert isinstance(ours, FCNMaskHead)


def _logits_conv_calls(monkeypatch, head):
    """Counts the convolutions run with the predictor's own weight."""
    calls = []
    original = torch.nn.Conv2d._conv_forward

    def spy(self, x, weight, bias):
        if self is head.conv_logits:
            calls.append(tuple(weight.shape))
        return original(self, x, weight, bias)

    monkeypatch.setattr(torch.nn.Conv2d, '_conv_forward', spy)
    return calls


@pytest.mark.parametrize('predictor,mode', [('conv', 'plain'),
                                            ('normed', 'normed'),
                                            ('mmdet_normed', 'full')])
def test_gather_mode_decides_by_what_the_predictor_computes(
        predictor, mode, monkeypatch):
    """mmcv's ``Conv`` is its own nn.Conv2d subclass: it is gathered (no
    convolution over all classes), as Norm Mask is; mmdet's NormedConv2d
    (another forward) runs in full."""
    _, ours = _heads(predictor)
    assert ours.gather_mode() == mode
    calls = _logits_conv_calls(monkeypatch, ours)
    x = torch.randn(4, 8, 14, 14)
    with torch.no_grad():
        ours(x, torch.tensor([0, 5, 36, 5]))
    if mode == 'full':
        assert calls == [(C, 8, 1, 1)]
    else:
        assert calls == []  # never the (C, 8, 1, 1) convolution


def test_gather_mode_refuses_unknown_computations(caplog):
    """A predictor whose output is not the plain/normalized convolution of
    its weight falls back, with the reason logged once."""
    from mmengine.logging import MMLogger

    from mmlongtail.models.mask_heads.label_gathered_mask_head import \
        predictor_gather_mode

    class Doubled(torch.nn.Conv2d):

        def forward(self, x):
            return 2 * super().forward(x)

    assert predictor_gather_mode(torch.nn.Conv2d(8, C, 1)) == ('plain', '')
    mode, why = predictor_gather_mode(Doubled(8, C, 1))
    assert mode == 'full' and 'own forward' in why
    mode, why = predictor_gather_mode(torch.nn.Conv2d(8, C, 3, padding=1))
    assert mode == 'full' and 'kernel (3, 3)' in why
    hooked = torch.nn.Conv2d(8, C, 1)
    hooked.register_forward_hook(lambda m, i, o: o * 0)
    mode, why = predictor_gather_mode(hooked)
    assert mode == 'full' and 'hooks' in why

    _, ours = _heads('conv')
    ref_conv = ours.conv_logits
    ours.conv_logits = Doubled(8, C, 1)
    ours.conv_logits.load_state_dict(ref_conv.state_dict())
    x = torch.randn(3, 8, 28, 28)
    labels = torch.tensor([1, 2, 3])
    logger = MMLogger.get_current_instance()
    records = []
    handler = type('H', (__import__('logging').Handler, ), {
        'emit': lambda self, r: records.append(r.getMessage())})()
    logger.addHandler(handler)
    try:
        for _ in range(2):
            out = ours.gathered_logits(x, labels)
    finally:
        logger.removeHandler(handler)
    torch.testing.assert_close(
        out[:, 0], 2 * ref_conv(x)[torch.arange(3), labels])
    warned = [r for r in records if 'picks each RoI' in r]
    assert len(warned) == 1 and 'own forward' in warned[0]


def _lvis_configs():
    import glob
    import os.path as osp
    root = osp.dirname(osp.dirname(osp.dirname(osp.dirname(
        osp.abspath(__file__)))))
    paths = sorted(glob.glob(osp.join(root, 'configs', '**', '*.py'),
                             recursive=True))
    skip = (osp.join(root, 'configs', '_base_'),
            osp.join(root, 'configs', 'benchmark'))
    return [p for p in paths if not p.startswith(skip)], root


LVIS_CONFIGS, ROOT = _lvis_configs()


def test_every_lvis_mask_config_builds_a_gathering_mask_head():
    """The mask head each config builds (only the head, from its
    ``model.roi_head.mask_head``) computes only the label channels, and
    those equal its full output's."""
    import os.path as osp

    from mmengine.config import Config
    checked = []
    for path in LVIS_CONFIGS:
        model = Config.fromfile(path).get('model', {})
        mask_cfg = model.get('roi_head', {}).get('mask_head')
        if mask_cfg is None:
            continue
        for cfg in (mask_cfg if isinstance(mask_cfg, list) else [mask_cfg]):
            with DefaultScope.overwrite_default_scope('mmdet'):
                head = MMDET_MODELS.build(cfg)
            name = f'{osp.relpath(path, ROOT)}: {cfg["type"]}'
            assert head.gather_mode() in ('plain', 'normed'), (
                name, head.conv_logits)
            x = torch.randn(2, head.conv_logits.in_channels, 4, 4)
            labels = torch.tensor([0, head.num_classes - 1])
            with torch.no_grad():
                torch.testing.assert_close(
                    head.gathered_logits(x, labels)[:, 0],
                    head.conv_logits(x)[torch.arange(2), labels],
                    rtol=1e-4, atol=1e-4)
            checked.append((name, head.gather_mode()))
    modes = {m for _, m in checked}
    # both predictors occur among the configs users run
    assert modes == {'plain', 'normed'}, checked
    assert any('seesaw_mask_rcnn_lvis.py' in n for n, _ in checked)


@pytest.mark.parametrize('predictor', ['conv', 'normed'])
def test_inference_chunks_bound_the_forward(predictor, monkeypatch):
    """Without gradients the gathered forward runs chunk by chunk (at most
    inference_chunk_size RoIs through the convs), with the one-pass result;
    with gradients (training) it is one pass."""
    ref, ours = _heads(predictor)
    ours.inference_chunk_size = 4
    x = torch.randn(11, 8, 14, 14)
    labels = torch.randint(0, C, (11, ))
    sizes, layouts = [], []
    original = ours.forward_features

    def spy(f):
        sizes.append(f.size(0))
        layouts.append(f.is_contiguous(memory_format=torch.channels_last))
        return original(f)

    monkeypatch.setattr(ours, 'forward_features', spy)
    ours.eval()
    with torch.no_grad():
        chunked = ours(x, labels)
        with ours.labels_for_forward(labels):
            assert torch.equal(ours(x), chunked)
        full = ref(x)[torch.arange(11), labels]
    assert sizes == [4, 4, 3] * 2
    assert all(layouts)  # test time: channels-last convolutions
    torch.testing.assert_close(chunked[:, 0], full, rtol=1e-5, atol=1e-5)
    ours.inference_channels_last = False
    with torch.no_grad():
        torch.testing.assert_close(ours(x, labels), chunked, rtol=1e-5,
                                   atol=1e-5)
    sizes.clear()
    layouts.clear()
    ours(x, labels)  # gradients enabled: one pass, as given
    assert sizes == [11] and layouts == [False]
    with pytest.raises(ValueError, match='inference_chunk_size'):
        with DefaultScope.overwrite_default_scope('mmdet'):
            MMDET_MODELS.build(dict(
                type='mmlongtail.LabelGatheredFCNMaskHead', num_classes=C,
                inference_chunk_size=0))
