"""Which parts of mmlongtail's stack are installed: the probe of install.sh.

Prints what ``mmlongtail/version.py`` declares, ``requirement REQ`` (the
faster-coco-eval window), ``pin torch VERSION`` and ``pin torchvision
VERSION``, then one line per check, ``ok NAME`` or ``failed NAME: Exception:
message``, so that ``tools/install.sh`` installs only what is missing and says
why. It only imports, compares versions and runs one tiny op; it installs
nothing.

Usage::

    python tools/install_probe.py MMCV_VERSION
"""
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def declared() -> dict:
    """The names ``mmlongtail/version.py`` defines (read, not imported: the
    package's dependencies may not be installed yet)."""
    namespace: dict = {}
    with open(osp.join(ROOT, 'mmlongtail', 'version.py'),
              encoding='utf-8') as f:
        exec(f.read(), namespace)
    return namespace


def declared_fce_requirement() -> str:
    """The faster-coco-eval window declared in ``mmlongtail/version.py``."""
    return declared()['FASTER_COCO_EVAL_REQUIREMENT']


def declared_torch_versions() -> tuple:
    """``(torch, torchvision)``, the pair declared in
    ``mmlongtail/version.py``."""
    names = declared()
    return names['TORCH_VERSION'], names['TORCHVISION_VERSION']


def _local_label(version: str) -> str:
    """The build label of a version: ``'cpu'`` for ``1.2.3+cpu``, ``''``
    when there is none."""
    return version.partition('+')[2]


def _want(name: str, have: str, want: str) -> None:
    if have != want:
        raise RuntimeError(f'{name} {have} is installed, {want} is needed')


def torch_ok(torch_version: str) -> None:
    import torch
    if not torch.__version__.startswith(torch_version):
        raise RuntimeError(f'torch {torch.__version__} is installed, '
                           f'{torch_version} is needed')


def torchvision_ok(torchvision_version: str) -> None:
    """torchvision is the declared release, of torch's build (``+cpu`` with
    ``+cpu``), and its compiled ops run."""
    import torch
    import torchvision
    have = torchvision.__version__
    if have.partition('+')[0] != torchvision_version:
        raise RuntimeError(f'torchvision {have} is installed, '
                           f'{torchvision_version} is needed')
    if _local_label(have) != _local_label(torch.__version__):
        raise RuntimeError(
            f'torchvision {have} is installed, a build for torch '
            f'{torch.__version__} is needed (build label '
            f"'{_local_label(torch.__version__)}')")
    # two boxes with IoU 0.81: the second is suppressed
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
    if keep.tolist() != [0]:
        raise RuntimeError('torchvision.ops.nms returned '
                           f'{keep.tolist()}, [0] expected')


def build_ok() -> None:
    import mmengine
    import ninja  # noqa: F401
    import setuptools
    import wheel  # noqa: F401
    _want('mmengine', mmengine.__version__, '0.10.7')
    major = int(setuptools.__version__.split('.')[0])
    if not 77 <= major < 81:
        raise RuntimeError(f'setuptools {setuptools.__version__} is '
                           'installed, >=77,<81 is needed')


def mmcv_ok(mmcv_version: str) -> None:
    import mmcv
    _want('mmcv', mmcv.__version__, mmcv_version)
    from mmcv.ops import RoIAlign, nms  # noqa: F401


def rest_ok() -> None:
    from importlib.metadata import version

    import lvis  # noqa: F401
    import matplotlib  # noqa: F401
    import mmdet
    import pycocotools  # noqa: F401
    import pytest  # noqa: F401
    from packaging.requirements import Requirement
    _want('mmdet', mmdet.__version__, '3.3.0')
    req = Requirement(declared_fce_requirement())
    have = version(req.name)
    if not req.specifier.contains(have, prereleases=True):
        raise RuntimeError(f'{req.name} {have} is installed, '
                           f'{req.specifier} is needed')
    # both packages of setup.py, found where they are installed (run as a
    # script, this probe does not see the checkout): a venv installed before
    # mmlongtail_bench existed gets `pip install -e .` again
    import mmlongtail  # noqa: F401
    import mmlongtail_bench  # noqa: F401


def _one_line(e: BaseException) -> str:
    text = ' | '.join(str(e).strip().splitlines()) or repr(e)
    return f'{type(e).__name__}: {text[:300]}'


def main(argv) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    mmcv_version, = argv
    torch_version, torchvision_version = declared_torch_versions()
    print(f'requirement {declared_fce_requirement()}', flush=True)
    print(f'pin torch {torch_version}', flush=True)
    print(f'pin torchvision {torchvision_version}', flush=True)
    checks = (('torch', lambda: torch_ok(torch_version)),
              ('torchvision', lambda: torchvision_ok(torchvision_version)),
              ('build', build_ok), ('mmcv', lambda: mmcv_ok(mmcv_version)),
              ('rest', rest_ok))
    for name, check in checks:
        try:
            check()
        except Exception as e:  # reported, never swallowed
            print(f'failed {name}: {_one_line(e)}', flush=True)
        else:
            print(f'ok {name}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
