"""NormedLinear / NormedConv2d: identical to mmdet 3.3.0's given the same
weights, hand-derived values, the deprecated ``tempearture`` alias, and
construction through the registries mmdet's heads use."""
import logging

import pytest
import torch
from mmcv.cnn import build_conv_layer
from mmdet.models.layers import NormedConv2d as MMDetNormedConv2d
from mmdet.models.layers import NormedLinear as MMDetNormedLinear
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

import mmlongtail  # noqa: F401
from mmlongtail.models.layers import NormedConv2d, NormedLinear


class _Records(logging.Handler):

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def log_records():
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)


@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(temperature=10, power=2.0),
    dict(temperature=5, eps=1e-2, bias=False),
])
def test_linear_matches_mmdet(kwargs):
    torch.manual_seed(0)
    ours = NormedLinear(16, 7, **kwargs)
    ref_kwargs = dict(kwargs)
    if 'temperature' in ref_kwargs:
        ref_kwargs['tempearture'] = ref_kwargs.pop('temperature')
    ref = MMDetNormedLinear(16, 7, **ref_kwargs)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(9, 16)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, out_ref = ours(x_ours), ref(x_ref)
    assert torch.equal(out, out_ref)
    out.pow(2).sum().backward()
    out_ref.pow(2).sum().backward()
    assert torch.equal(x_ours.grad, x_ref.grad)
    assert torch.equal(ours.weight.grad, ref.weight.grad)


@pytest.mark.parametrize('kwargs', [
    dict(),
    dict(norm_over_kernel=True),
    dict(temperature=10, power=2.0, norm_over_kernel=True),
    dict(temperature=3, power=2.0, padding=1),
])
def test_conv_matches_mmdet(kwargs):
    torch.manual_seed(0)
    ours = NormedConv2d(8, 5, 3, **kwargs)
    ref_kwargs = dict(kwargs)
    if 'temperature' in ref_kwargs:
        ref_kwargs['tempearture'] = ref_kwargs.pop('temperature')
    ref = MMDetNormedConv2d(8, 5, 3, **ref_kwargs)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 6, 6)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, out_ref = ours(x_ours), ref(x_ref)
    assert torch.equal(out, out_ref)
    out.pow(2).sum().backward()
    out_ref.pow(2).sum().backward()
    assert torch.equal(x_ours.grad, x_ref.grad)
    assert torch.equal(ours.weight.grad, ref.weight.grad)


def test_linear_by_hand():
    layer = NormedLinear(2, 2, temperature=10, eps=0.0)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [3.0, 4.0]]))
        layer.bias.copy_(torch.tensor([0.5, -1.0]))
    out = layer(torch.tensor([[3.0, 4.0]]))
    # x/|x| = (.6, .8); rows/|row| = (1, 0), (.6, .8) -> cosines .6 and 1
    torch.testing.assert_close(out, torch.tensor([[10 * 0.6 + 0.5,
                                                   10 * 1.0 - 1.0]]))
    # power 2: x / |x|^2 = (.12, .16); rows / |row|^2 = (1, 0), (.12, .16)
    layer.power = 2.0
    out = layer(torch.tensor([[3.0, 4.0]]))
    torch.testing.assert_close(
        out, torch.tensor([[10 * 0.12 + 0.5, 10 * 0.04 - 1.0]]))


def test_conv_by_hand():
    layer = NormedConv2d(2, 1, 1, temperature=2, eps=0.0, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.0, 5.0]).view(1, 2, 1, 1))
    # two pixels whose channel vectors are (3, 4) and (0, -2)
    x = torch.tensor([[3.0, 4.0], [0.0, -2.0]]).t().reshape(1, 2, 1, 2)
    assert x[0, :, 0, 0].tolist() == [3.0, 4.0]
    out = layer(x)
    # filter (0, 5) / 5 = (0, 1): cosines 4/5 and -1, times temperature 2
    torch.testing.assert_close(out, torch.tensor([[[[2 * 0.8, 2 * -1.0]]]]))


def test_defaults_and_init():
    layer = NormedLinear(64, 32)
    assert layer.temperature == 20.0 and layer.power == 1.0
    assert layer.eps == 1e-6
    assert layer.bias.abs().sum() == 0
    assert 0.005 < layer.weight.std().item() < 0.015
    assert NormedConv2d(4, 4, 1).temperature == 20.0


@pytest.mark.parametrize('cls', [NormedLinear, NormedConv2d])
def test_misspelled_temperature_is_a_logged_deprecated_alias(
        cls, log_records):
    args = (4, 3) if cls is NormedLinear else (4, 3, 1)
    layer = cls(*args, tempearture=7)
    assert layer.temperature == 7.0
    warnings = [r for r in log_records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert 'tempearture' in warnings[0].getMessage()
    assert 'temperature=7' in warnings[0].getMessage()
    # the right spelling logs nothing
    log_records.clear()
    cls(*args, temperature=7)
    assert not [r for r in log_records if r.levelno >= logging.WARNING]
    # both, agreeing: accepted; disagreeing: refused
    assert cls(*args, temperature=7, tempearture=7).temperature == 7.0
    with pytest.raises(ValueError, match='temperature=5.*tempearture=7'):
        cls(*args, temperature=5, tempearture=7)


def test_built_by_scoped_name_through_mmdet_registries():
    # bbox heads build cls_predictor_cfg with mmdet's MODELS
    linear = MMDET_MODELS.build(
        dict(type='mmlongtail.NormedLinear', in_features=8, out_features=3,
             temperature=10))
    assert type(linear) is NormedLinear and linear.temperature == 10
    # mmdet's own names are untouched
    assert type(MMDET_MODELS.build(
        dict(type='NormedLinear', in_features=8,
             out_features=3))) is MMDetNormedLinear


@pytest.mark.parametrize('scope', [None, 'mmdet'])
def test_build_conv_layer_resolves_the_scoped_name(scope):
    """FCNMaskHead builds predictor_cfg with mmcv's build_conv_layer, which
    looks the type up from the current default scope's registry; the
    ``mmlongtail.`` prefix resolves from there (root-first search), so no
    mmdet or mmcv name is shadowed."""
    cfg = dict(type='mmlongtail.NormedConv2d', temperature=20)
    if scope is None:
        layer = build_conv_layer(cfg, 8, 3, 1)
    else:
        with DefaultScope.overwrite_default_scope(scope):
            layer = build_conv_layer(cfg, 8, 3, 1)
    assert type(layer) is NormedConv2d
    assert layer.in_channels == 8 and layer.out_channels == 3
    # the plain names still give plain convolutions
    assert not isinstance(build_conv_layer(dict(type='Conv'), 8, 3, 1),
                          NormedConv2d)


def test_fcn_mask_head_with_normed_predictor():
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = FCNMaskHead(
            num_convs=1,
            in_channels=8,
            conv_out_channels=8,
            num_classes=5,
            predictor_cfg=dict(type='mmlongtail.NormedConv2d',
                               temperature=20))
    head.init_weights()
    assert type(head.conv_logits) is NormedConv2d
    x = torch.randn(3, 8, 14, 14, requires_grad=True)
    out = head(x)
    assert out.shape == (3, 5, 28, 28)
    # cosine logits are bounded by the temperature
    assert out.abs().max() <= 20 + 1e-4
    out.sum().backward()
    assert head.conv_logits.weight.grad.abs().sum() > 0
