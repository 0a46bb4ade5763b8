"""tools/install_probe.py (the probe of tools/install.sh) and the one place
that declares the faster-coco-eval window."""
import importlib.util
import os.path as osp
import re
import runpy
from importlib.metadata import version

import mmcv
import setuptools
import torch
from packaging.requirements import Requirement

from mmlongtail.version import FASTER_COCO_EVAL_REQUIREMENT

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


def test_probe_reports_ok_on_the_installed_stack(capsys):
    lines = _lines(capsys, _probe(), torch.__version__, mmcv.__version__)
    assert lines == [
        f'requirement {FASTER_COCO_EVAL_REQUIREMENT}', 'ok torch', 'ok build',
        'ok mmcv', 'ok rest'
    ]


def test_probe_says_which_check_failed_and_why(capsys, monkeypatch):
    probe = _probe()
    lines = _lines(capsys, probe, '0.1', '9.9.9')
    assert lines[1] == (f'failed torch: RuntimeError: torch '
                        f'{torch.__version__} is installed, 0.1 is needed')
    assert lines[3] == (f'failed mmcv: RuntimeError: mmcv {mmcv.__version__} '
                        'is installed, 9.9.9 is needed')
    assert lines[2] == 'ok build' and lines[4] == 'ok rest'
    # a faster-coco-eval outside the declared window
    monkeypatch.setattr(probe, 'declared_fce_requirement',
                        lambda: 'faster-coco-eval>=1.6,<1.8')
    lines = _lines(capsys, probe, torch.__version__, mmcv.__version__)
    assert lines[-1] == (
        'failed rest: RuntimeError: faster-coco-eval '
        f'{version("faster-coco-eval")} is installed, <1.8,>=1.6 is needed')

    # a module that does not import: the exception and its message
    def broken():
        raise ImportError('libfoo.so: cannot open shared object file\nmore')

    monkeypatch.setattr(probe, 'build_ok', broken)
    lines = _lines(capsys, probe, torch.__version__, mmcv.__version__)
    assert lines[2] == ('failed build: ImportError: libfoo.so: cannot open '
                        'shared object file | more')


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
