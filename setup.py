"""Packaging for mmlongtail.

The dependency window is the one the test suite runs against. torch is
deliberately *not* pinned to an exact build here: ``make install`` installs
the torch release declared in ``mmlongtail/version.py`` (the CPU build) before
this package, so the requirement below is already satisfied and pip never
reaches for CUDA wheels.

torchvision (optional: stock mmdet configs initialise from
``torchvision://resnet50``; this project's configs name the weights' URL) is
not a requirement here either: pip would resolve it to the
default (CUDA) build of the declared release, which fails to import next to a
CPU torch. ``make install`` installs the torchvision release declared together
with torch in ``mmlongtail/version.py``, of the installed torch's build, with
``--no-deps``, and checks it.

The faster-coco-eval window is declared once, in ``mmlongtail/version.py``
(``tools/install.sh`` reads the same line).
"""
from setuptools import find_packages, setup


def read_version_file() -> dict:
    """The names ``mmlongtail/version.py`` defines (without importing the
    package, whose dependencies may not be installed yet)."""
    namespace: dict = {}
    with open('mmlongtail/version.py', encoding='utf-8') as f:
        exec(f.read(), namespace)
    return namespace


VERSION_FILE = read_version_file()

setup(
    name='mmlongtail',
    version=VERSION_FILE['__version__'],
    description='Long-tailed detection and instance segmentation for '
    'MMDetection: Seesaw, EQL, EQLv2, BAGS, focal, Norm Mask, RFS, LVIS '
    'evaluation.',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    package_data={'mmlongtail': ['data/*.json']},
    include_package_data=True,
    install_requires=[
        'torch>=2.0,<3',
        'mmengine==0.10.7',
        'mmcv==2.1.0',
        'mmdet==3.3.0',
        'lvis==0.5.3',
        'pycocotools>=2.0.7',
        VERSION_FILE['FASTER_COCO_EVAL_REQUIREMENT'],
        'numpy>=1.24',
        'matplotlib>=3.7',
    ],
    extras_require={'tests': ['pytest>=7']},
    zip_safe=False,
)
