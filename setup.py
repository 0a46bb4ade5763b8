"""Packaging for mmlongtail.

The dependency window is the one the test suite runs against. torch is
deliberately *not* pinned to an exact build here: ``make install`` installs
``torch==2.13.0`` (the CPU build) before this package, so the requirement below
is already satisfied and pip never reaches for CUDA wheels.

``mmlongtail/csrc/repeat_factors.c`` is built as an *optional* extension: a
machine without a C compiler still installs, and repeat factors then take a
slower NumPy path.
"""
from setuptools import Extension, find_packages, setup


def read_version() -> str:
    namespace: dict = {}
    with open('mmlongtail/version.py', encoding='utf-8') as f:
        exec(f.read(), namespace)
    return namespace['__version__']


setup(
    name='mmlongtail',
    version=read_version(),
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
        'faster-coco-eval>=1.6',
        'numpy>=1.24',
        'matplotlib>=3.7',
    ],
    # A small C helper of compute_repeat_factors. Optional: without a C
    # compiler the install still succeeds and a NumPy path is used instead.
    ext_modules=[
        Extension(
            'mmlongtail.datasets._rfs_ext',
            sources=['mmlongtail/csrc/repeat_factors.c'],
            extra_compile_args=['-O3'],
            optional=True)
    ],
    extras_require={'tests': ['pytest>=7']},
    zip_safe=False,
)
