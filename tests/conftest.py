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


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'cuda: needs a CUDA device; skipped without one')
