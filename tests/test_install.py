"""tools/install_probe.py (the probe of tools/install.sh) and the one place
that declares the faster-coco-eval window and the torch/torchvision pair."""
import importlib.util
import os.path as osp
import re
import runpy
import sys
import types
from importlib.metadata import version

import mmcv
import setuptools
import torch
from packaging.requirements import Requirement

from mmlongtail.version import (FASTER_COCO_EVAL_REQUIREMENT, TORCH_VERSION,
                                TORCHVISION_VERSION)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _probe():
    spec = importlib.util.spec_from_file_location(
        'install_probe', osp.join(ROOT, 'tools', 'install_probe.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lines(capsys, probe, *argv):
    assert probe.main(list(argv)) == 0
    return capsys.readouterr().out.splitlines()


HEADER = [
    f'requirement {FASTER_COCO_EVAL_REQUIREMENT}',
    f'pin torch {TORCH_VERSION}', f'pin torchvision {TORCHVISION_VERSION}'
]


def test_probe_reports_ok_on_the_installed_stack(capsys):
    # the installed stack is what `make install` makes; torchvision is
    # optional (installed where a build of torch's kind can be had)
    lines = _lines(capsys, _probe(), mmcv.__version__)
    assert lines[:3] == HEADER
    assert lines[3:] == [
        'ok torch', lines[4], 'ok build', 'ok mmcv', 'ok rest'
    ]
    if importlib.util.find_spec('torchvision') is not None:
        assert lines[4] == 'ok torchvision'
    else:
        assert lines[4].startswith(
            'failed torchvision: ModuleNotFoundError: '), lines[4]


def test_probe_says_which_check_failed_and_why(capsys, monkeypatch):
    probe = _probe()
    monkeypatch.setattr(probe, 'declared_torch_versions',
                        lambda: ('0.1', TORCHVISION_VERSION))
    lines = _lines(capsys, probe, '9.9.9')
    assert lines[1] == 'pin torch 0.1'
    assert lines[3] == (f'failed torch: RuntimeError: torch '
                        f'{torch.__version__} is installed, 0.1 is needed')
    assert lines[6] == (f'failed mmcv: RuntimeError: mmcv {mmcv.__version__} '
                        'is installed, 9.9.9 is needed')
    assert lines[5] == 'ok build' and lines[7] == 'ok rest'
    # a faster-coco-eval outside the declared window
    monkeypatch.undo()
    monkeypatch.setattr(probe, 'declared_fce_requirement',
                        lambda: 'faster-coco-eval>=1.6,<1.8')
    lines = _lines(capsys, probe, mmcv.__version__)
    assert lines[-1] == (
        'failed rest: RuntimeError: faster-coco-eval '
        f'{version("faster-coco-eval")} is installed, <1.8,>=1.6 is needed')

    # a module that does not import: the exception and its message
    def broken():
        raise ImportError('libfoo.so: cannot open shared object file\nmore')

    monkeypatch.setattr(probe, 'build_ok', broken)
    lines = _lines(capsys, probe, mmcv.__version__)
    assert lines[5] == ('failed build: ImportError: libfoo.so: cannot open '
                        'shared object file | more')


def _fake_torchvision(monkeypatch, version, nms):
    """Put a stand-in ``torchvision`` (version string, ``ops.nms``) in
    ``sys.modules``, so the check is tested whatever is installed."""
    module = types.ModuleType('torchvision')
    module.__version__ = version
    module.ops = types.SimpleNamespace(nms=nms)
    monkeypatch.setitem(sys.modules, 'torchvision', module)


def _greedy_nms(boxes, scores, iou_threshold):
    """A correct NMS for the probe's two boxes (IoU 0.81)."""
    from mmcv.ops import nms
    return nms(boxes, scores, iou_threshold)[1]


def _probe_torchvision(capsys, monkeypatch, version, nms=_greedy_nms):
    probe = _probe()
    _fake_torchvision(monkeypatch, version, nms)
    lines = _lines(capsys, probe, mmcv.__version__)
    assert lines[3] == 'ok torch'
    return lines[4]


def test_probe_checks_torchvision(capsys, monkeypatch):
    label = torch.__version__.partition('+')[2]
    build = f'+{label}' if label else ''
    other = '+cu130' if label != 'cu130' else '+cpu'
    # the declared release, torch's build, ops that run: ok
    assert _probe_torchvision(capsys, monkeypatch,
                              TORCHVISION_VERSION + build) == 'ok torchvision'
    # another release
    assert _probe_torchvision(capsys, monkeypatch, '0.29.1' + build) == (
        f'failed torchvision: RuntimeError: torchvision 0.29.1{build} is '
        f'installed, {TORCHVISION_VERSION} is needed')
    # the declared release of another build than torch's (CUDA for CPU)
    assert _probe_torchvision(
        capsys, monkeypatch, TORCHVISION_VERSION + other) == (
            f'failed torchvision: RuntimeError: torchvision '
            f'{TORCHVISION_VERSION}{other} is installed, a build for torch '
            f"{torch.__version__} is needed (build label '{label}')")

    # compiled ops that do not load, or compute something else
    def no_ops(*args):
        raise RuntimeError("Couldn't load custom C++ ops")

    assert _probe_torchvision(
        capsys, monkeypatch, TORCHVISION_VERSION + build, no_ops) == (
            "failed torchvision: RuntimeError: Couldn't load custom C++ ops")
    assert _probe_torchvision(
        capsys, monkeypatch, TORCHVISION_VERSION + build,
        lambda *a: torch.tensor([0, 1])) == (
            'failed torchvision: RuntimeError: torchvision.ops.nms returned '
            '[0, 1], [0] expected')
    # not installed at all
    monkeypatch.setitem(sys.modules, 'torchvision', None)
    line = _lines(capsys, _probe(), mmcv.__version__)[4]
    assert line.startswith('failed torchvision: ModuleNotFoundError: '
                           'import of torchvision halted'), line


def test_torch_and_torchvision_are_declared_once():
    # the pair lives in mmlongtail/version.py; install.sh and the probe ask it
    assert _probe().declared_torch_versions() == (TORCH_VERSION,
                                                 TORCHVISION_VERSION)
    # the suite runs against the declared torch
    assert torch.__version__.partition('+')[0] == TORCH_VERSION
    for path in ('setup.py', 'tools/install.sh', 'tools/install_probe.py'):
        with open(osp.join(ROOT, path), encoding='utf-8') as f:
            text = f.read()
        for name in ('torch', 'torchvision'):
            assert not re.search(rf'\b{name}==\d', text), (path, name)
        for pinned in (TORCH_VERSION, TORCHVISION_VERSION):
            assert pinned not in text, (path, pinned)


def test_faster_coco_eval_window_has_one_owner(monkeypatch):
    req = Requirement(FASTER_COCO_EVAL_REQUIREMENT)
    assert req.name == 'faster-coco-eval'
    # the suite runs against a version inside the declared window
    assert req.specifier.contains(version('faster-coco-eval'))
    # setup.py and install.sh read it; neither spells a version of it
    for path in ('setup.py', 'tools/install.sh', 'tools/install_probe.py'):
        with open(osp.join(ROOT, path), encoding='utf-8') as f:
            text = f.read()
        assert not re.search(r'faster[-_]coco[-_]eval\s*[<>=~!]', text), path
    assert _probe().declared_fce_requirement() == FASTER_COCO_EVAL_REQUIREMENT
    # setup.py declares exactly that requirement, and no compiled extension
    seen = {}
    monkeypatch.setattr(setuptools, 'setup', lambda **kw: seen.update(kw))
    monkeypatch.chdir(ROOT)
    runpy.run_path(osp.join(ROOT, 'setup.py'))
    fce = [r for r in seen['install_requires'] if 'coco-eval' in r]
    assert fce == [FASTER_COCO_EVAL_REQUIREMENT]
    assert 'ext_modules' not in seen
