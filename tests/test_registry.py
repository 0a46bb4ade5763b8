"""``type='mmlongtail.X'`` resolves from every scope, without shadowing."""
import subprocess
import sys

import mmdet.models.layers as mmdet_layers
import mmdet.models.losses as mmdet_losses
import pytest
from mmdet.registry import DATA_SAMPLERS as MMDET_DATA_SAMPLERS
from mmdet.registry import DATASETS as MMDET_DATASETS
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import METRICS as MMDET_METRICS
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.utils import register_all_modules
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope, Registry

import mmlongtail
from mmlongtail import registry as lt

register_all_modules(init_default_scope=False)

EXPECTED = {
    'MODELS': [
        'SeesawLoss', 'NormedLinear', 'NormedConv2d', 'EQLLoss', 'EQLv2Loss',
        'FocalLoss', 'GroupSoftmaxLoss', 'StandardRoIHead', 'CascadeRoIHead',
        'ClassScoreWeights'
    ],
    'DATA_SAMPLERS': ['RepeatFactorSampler'],
    'METRICS': ['LVISMetric'],
    'DATASETS': ['LVISFormatDataset', 'LVISV1Dataset'],
    'HOOKS': ['CrashSafeCheckpointHook', 'NonFiniteGuardHook'],
}


def test_registries_are_children_of_mmdet():
    pairs = [(lt.MODELS, MMDET_MODELS), (lt.DATASETS, MMDET_DATASETS),
             (lt.DATA_SAMPLERS, MMDET_DATA_SAMPLERS),
             (lt.METRICS, MMDET_METRICS), (lt.HOOKS, MMDET_HOOKS)]
    for ours, parent in pairs:
        assert ours.scope == 'mmlongtail'
        assert ours.parent is parent
        assert parent.children['mmlongtail'] is ours


@pytest.mark.parametrize('reg_name, names', sorted(EXPECTED.items()))
def test_resolves_from_mmdet_and_root(reg_name, names):
    import mmengine.registry as root
    ours = getattr(lt, reg_name)
    for name in names:
        cls = ours.get(name)
        assert cls is not None, f'{name} is not registered in {reg_name}'
        assert cls.__module__.startswith('mmlongtail.')
        assert getattr(sys.modules['mmdet.registry'],
                       reg_name).get(f'mmlongtail.{name}') is cls
        assert getattr(root, reg_name).get(f'mmlongtail.{name}') is cls


def test_mmdet_names_not_shadowed():
    assert MMDET_MODELS.get('SeesawLoss') is mmdet_losses.SeesawLoss
    assert MMDET_MODELS.get('FocalLoss') is mmdet_losses.FocalLoss
    assert MMDET_MODELS.get('NormedLinear') is mmdet_layers.NormedLinear
    ours = MMDET_MODELS.get('mmlongtail.SeesawLoss')
    assert ours is not mmdet_losses.SeesawLoss
    # no mmlongtail class was registered into mmdet's own registry
    for name, cls in MMDET_MODELS.module_dict.items():
        assert not cls.__module__.startswith('mmlongtail'), name


def test_build_from_mmdet_scope():
    with DefaultScope.overwrite_default_scope('mmdet'):
        loss = MMDET_MODELS.build(
            dict(type='mmlongtail.SeesawLoss', num_classes=5))
    assert type(loss).__module__ == 'mmlongtail.models.losses.seesaw_loss'
    assert loss.num_classes == 5


def test_build_from_a_sibling_scope():
    """A registry of another OpenMMLab project (mmpretrain-like)."""
    sibling = Registry('model', parent=ROOT_MODELS, scope='mmsibling_test')
    with DefaultScope.overwrite_default_scope('mmsibling_test'):
        layer = sibling.build(
            dict(type='mmlongtail.NormedLinear', in_features=4,
                 out_features=3, temperature=10))
    assert type(layer).__module__.startswith('mmlongtail.')
    assert layer.temperature == 10


def test_import_only_registers():
    """Importing has no side effect beyond registration and the allow-list:
    no logger output, no files, no default scope."""
    code = ('import os, mmengine.registry as r; before = set(os.listdir()); '
            'import mmlongtail; '
            'assert r.DefaultScope.get_current_instance() is None; '
            'assert set(os.listdir()) == before; print("ok")')
    out = subprocess.run([sys.executable, '-c', code],
                         capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == 'ok'
    assert 'mmengine - INFO' not in out.stderr


def test_custom_imports_in_a_config(tmp_path):
    """What users write: custom_imports in an mmdet config."""
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(
        "custom_imports = dict(imports=['mmlongtail'], "
        'allow_failed_imports=False)\n'
        "loss = dict(type='mmlongtail.EQLv2Loss', num_classes=3)\n")
    code = (
        'from mmengine.config import Config; '
        'from mmdet.registry import MODELS; '
        'from mmdet.utils import register_all_modules; '
        'register_all_modules(); '
        f'cfg = Config.fromfile({str(cfg_file)!r}); '
        'loss = MODELS.build(cfg.loss); '
        'print(type(loss).__module__)')
    out = subprocess.run([sys.executable, '-c', code],
                         capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == \
        'mmlongtail.models.losses.eqlv2_loss'


def test_version():
    assert mmlongtail.__version__.count('.') == 2
