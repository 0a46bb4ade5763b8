"""Every LVIS config initialises its backbone through the real path.

The configs name torchvision's ImageNet-1k ResNet files by URL
(``init_cfg=dict(type='Pretrained', checkpoint='https://download.pytorch.org/
models/resnet50-0676ba61.pth')``, the file ``torchvision://resnet50`` resolves
to), so no package beyond the stack is needed: the init goes through mmengine's
``PretrainedInit`` and HTTP checkpoint loader and torch.hub's download and
cache, and works without torchvision. Only the network download itself
(``torch.hub.download_url_to_file``) is replaced: it records the URL and writes
a randomised torchvision ResNet state dict of the depth that URL names, and the
test checks that the backbone holds exactly those tensors afterwards.

A full detector is built and initialised once per distinct (detector type,
backbone config); every other config is checked cheaply: its only
``Pretrained`` init is on its backbone, and its backbone config equals one
that was built and initialised here (building 35 Mask R-CNNs with 1203
classes would take minutes on 2 cores).
"""
import glob
import os
import os.path as osp
import sys
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import torch
import torch.hub
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.registry import DefaultScope

from mmlongtail.apis import build_runner_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
NOT_LVIS = {'_base_', 'demo', 'benchmark'}
LVIS_CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                         recursive=True)
    if not NOT_LVIS & set(osp.relpath(p, ROOT).split(os.sep)[1:-1]))

# torchvision's ImageNet-1k V1 weights: what mmengine resolves
# torchvision://resnet50 and torchvision://resnet101 to
TORCHVISION_URLS = {
    50: 'https://download.pytorch.org/models/resnet50-0676ba61.pth',
    101: 'https://download.pytorch.org/models/resnet101-63fe2227.pth',
}

register_all_modules(init_default_scope=False)

_injected: Dict[int, Dict[str, torch.Tensor]] = {}
_initialised: Dict[Tuple[str, str], str] = {}


def _random_resnet_state(depth: int) -> Dict[str, torch.Tensor]:
    """A state dict laid out as torchvision's ``resnet{depth}`` file (mmdet's
    ResNet has torchvision's parameter names; the file adds the 1000-class
    ``fc``), every floating point tensor redrawn from U(0.5, 1.5) (seeded), so
    that no tensor equals what a module's own initialisation gives (BN
    weights 1, biases 0)."""
    if depth not in _injected:
        from mmdet.models.backbones import ResNet
        state = ResNet(depth).state_dict()
        state['fc.weight'] = torch.zeros(1000, 2048)
        state['fc.bias'] = torch.zeros(1000)
        gen = torch.Generator().manual_seed(depth)
        _injected[depth] = {
            key: torch.rand(value.shape, generator=gen) + 0.5
            if value.is_floating_point() else value.clone()
            for key, value in state.items()
        }
    return _injected[depth]


@pytest.fixture(scope='module')
def saved_states(tmp_path_factory) -> Dict[int, str]:
    """Where :func:`_random_resnet_state` of each depth is saved once (the
    download links to it rather than writing 100-200 MB per config)."""
    return dict(folder=str(tmp_path_factory.mktemp('torchvision_states')))


@pytest.fixture
def hub(monkeypatch, tmp_path, saved_states) -> List[str]:
    """torch.hub with an empty cache in ``tmp_path`` and no network: the
    download gives :func:`_random_resnet_state`. Returns the URLs asked."""
    asked = []
    depths = {url: depth for depth, url in TORCHVISION_URLS.items()}

    def download(url, dst, hash_prefix=None, progress=True):
        asked.append(url)
        if url not in depths:
            raise RuntimeError(f'{url} is not a torchvision ResNet URL')
        depth = depths[url]
        if depth not in saved_states:
            saved = osp.join(saved_states['folder'], f'resnet{depth}.pth')
            torch.save(_random_resnet_state(depth), saved)
            saved_states[depth] = saved
        os.symlink(saved_states[depth], dst)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    return asked


def _pretrained_inits(cfg: Any, where: str = '') -> Iterator[Tuple[str, Any]]:
    """``(where, init_cfg)`` for every ``Pretrained`` init in a model config
    (``where`` is the dotted path of the module that holds it)."""
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            if key == 'init_cfg':
                for init in value if isinstance(value, list) else [value]:
                    if isinstance(init, dict) and init.get(
                            'type') == 'Pretrained':
                        yield where, init
            else:
                yield from _pretrained_inits(value,
                                             f'{where}.{key}'.lstrip('.'))
    elif isinstance(cfg, (list, tuple)):
        for i, value in enumerate(cfg):
            yield from _pretrained_inits(value, f'{where}.{i}')


def _config(path: str, tmp_path):
    return build_runner_config(path, work_dir=str(tmp_path / 'work_dir'))


def _check_inits(cfg) -> int:
    """The config's only ``Pretrained`` init is its backbone's, from
    torchvision's ResNet file of the backbone's depth; returns the depth."""
    inits = list(_pretrained_inits(cfg.model))
    assert [where for where, _ in inits] == ['backbone'], inits
    depth = cfg.model.backbone.depth
    assert inits[0][1]['checkpoint'] == TORCHVISION_URLS[depth]
    return depth


def _init_and_check(cfg, asked: List[str], full: bool, tmp_path) -> None:
    """Build the config's detector (``full``) or backbone with its real
    ``init_cfg``, run ``init_weights()`` and check what it loaded."""
    depth = _check_inits(cfg)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model if full else cfg.model.backbone)
    model.init_weights()
    url = TORCHVISION_URLS[depth]
    assert asked == [url]
    # torch.hub's cache: $TORCH_HOME/hub/checkpoints/<the URL's file name>
    assert osp.isfile(tmp_path / 'hub' / 'checkpoints' / osp.basename(url))
    backbone = model.backbone if full else model
    injected = _random_resnet_state(depth)
    state = backbone.state_dict()
    assert set(state) <= set(injected), set(state) - set(injected)
    differ = [k for k, v in state.items() if not torch.equal(v, injected[k])]
    assert not differ, f'not the loaded weights after init: {differ[:5]}'


def test_lvis_configs_found():
    names = {osp.relpath(p, ROOT) for p in LVIS_CONFIGS}
    assert 'configs/seesaw_mask_rcnn_lvis.py' in names
    assert len(names) >= 30
    assert not any(
        n.startswith(('configs/demo/', 'configs/benchmark/',
                      'configs/_base_/')) for n in names)


@pytest.mark.parametrize('path', LVIS_CONFIGS,
                         ids=[osp.relpath(p, ROOT) for p in LVIS_CONFIGS])
def test_lvis_config_initialises_backbone_from_imagenet_weights(
        path, hub, tmp_path):
    cfg = _config(path, tmp_path)
    kind = (cfg.model.type, repr(cfg.model.backbone.to_dict()))
    if kind in _initialised:
        # the same detector type and backbone config as a config whose
        # detector was built and initialised above
        _check_inits(cfg)
        return
    _init_and_check(cfg, hub, True, tmp_path)
    _initialised[kind] = path


def test_lvis_config_init_needs_no_torchvision(hub, tmp_path, monkeypatch):
    # torchvision is optional (make install adds it only where a build of
    # torch's kind can be had): the configs' init must not import it
    monkeypatch.setitem(sys.modules, 'torchvision', None)
    _init_and_check(
        _config(osp.join(ROOT, 'configs', 'seesaw_mask_rcnn_lvis.py'),
                tmp_path), hub, False, tmp_path)


def test_torchvision_scheme_is_what_stock_configs_need(hub, tmp_path,
                                                       monkeypatch):
    # the test is not vacuous: the scheme stock mmdet configs use would need
    # torchvision's model table, and fails without it before any download
    monkeypatch.setitem(sys.modules, 'torchvision', None)
    cfg = _config(osp.join(ROOT, 'configs', 'seesaw_mask_rcnn_lvis.py'),
                  tmp_path)
    cfg.model.backbone.init_cfg.checkpoint = 'torchvision://resnet50'
    with DefaultScope.overwrite_default_scope('mmdet'):
        backbone = MODELS.build(cfg.model.backbone)
    with pytest.raises(ImportError, match='torchvision'):
        backbone.init_weights()
    assert hub == []
