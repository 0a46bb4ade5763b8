"""Shared fixtures: a small synthetic LVIS dataset made once per session."""
import os

import pytest
import torch

# Two cores: keep intra-op threads from oversubscribing the machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _synthetic(tmp_path_factory, name, **kwargs):
    from mmlongtail_bench.synthetic import (SyntheticLVISConfig,
                                            generate_synthetic_lvis)
    root = tmp_path_factory.mktemp(name)
    cfg = SyntheticLVISConfig(**kwargs)
    paths = generate_synthetic_lvis(str(root), cfg, show_progress=False)
    return dict(root=str(root), cfg=cfg, **paths)


@pytest.fixture(scope='session')
def tiny_lvis(tmp_path_factory):
    """A 12-class synthetic LVIS v1-format dataset (about 1 s to make)."""
    return _synthetic(
        tmp_path_factory, 'tiny_lvis', num_rare=4, num_common=4,
        num_frequent=4, num_train_images=48, val_images_per_class=2,
        image_size=64, min_size=10, max_size=24, rare_max=3, common_max=8,
        frequent_max_fraction=0.5, seed=3)


@pytest.fixture(scope='session')
def synthetic40(tmp_path_factory):
    """The 40 classes (12 r / 14 c / 14 f) of the demo and benchmark configs,
    in a small dataset: 120 train images of 96 px, one val image per class
    (about 2 s to make)."""
    return _synthetic(
        tmp_path_factory, 'synthetic40', num_train_images=120,
        val_images_per_class=1, image_size=96, min_size=10, max_size=24)


#: Runs the ``cuda``-marked tests that take the ``cuda_device`` fixture on
#: this device instead of skipping them without CUDA (``cpu`` develops the
#: suite on a machine without a GPU; ``cuda:1`` picks another GPU).
DEVICE_VAR = 'MMLT_TEST_DEVICE'


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'cuda: the CUDA suite; runs with -m cuda (make '
        'test-gpu) on a machine with CUDA, skipped otherwise; '
        f'${DEVICE_VAR}=cpu runs those that take the cuda_device fixture '
        'on the CPU')


def _override():
    """The device ``$MMLT_TEST_DEVICE`` names, or None."""
    value = os.environ.get(DEVICE_VAR, '').strip()
    if not value:
        return None
    try:
        device = torch.device(value)
    except RuntimeError as e:
        raise pytest.UsageError(
            f'${DEVICE_VAR}={value!r} is not a torch device ({e}); use cpu, '
            'cuda or cuda:<index>') from e
    if device.type not in ('cpu', 'cuda'):
        raise pytest.UsageError(
            f'${DEVICE_VAR}={value!r}: the suite runs on cpu or cuda only')
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise pytest.UsageError(
            f'${DEVICE_VAR}={value!r} but torch sees no CUDA device')
    return device


def pytest_collection_modifyitems(config, items):
    """Skip ``cuda``-marked tests, with the reason (reported as skipped,
    never as passed): outside the CUDA suite (``make test``; the suite is
    selected with ``-m cuda``, as ``make test-gpu`` does, or by
    ``$MMLT_TEST_DEVICE``), and without CUDA unless the override applies."""
    cuda = torch.cuda.is_available()
    override = _override()
    selected = 'cuda' in (config.option.markexpr or '') or \
        override is not None
    for item in items:
        if item.get_closest_marker('cuda') is None:
            continue
        if not selected:
            reason = ('CUDA suite: run by make test-gpu (pytest -m cuda) or '
                      f'with ${DEVICE_VAR}')
        elif cuda or (override is not None
                      and 'cuda_device' in item.fixturenames):
            continue
        else:
            reason = 'needs CUDA (torch.cuda.is_available() is False)'
            if override is not None:
                reason += (f'; ${DEVICE_VAR} applies only to tests taking '
                           'the cuda_device fixture')
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope='session')
def cuda_device():
    """The device of the ``cuda``-marked tests: ``$MMLT_TEST_DEVICE`` if set,
    else ``cuda`` (such tests are skipped without CUDA)."""
    return _override() or torch.device('cuda')
