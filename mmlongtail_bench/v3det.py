"""V3Det-scale inputs for ``tools/benchmark_v3det_scale.py``: synthetic
category statistics with V3Det's class count and every registered
classification loss's config at that size.

V3Det v1 (Wang et al., ICCV 2023): 13,204 categories, 183,354 training and
29,821 validation images. Its real per-category counts are not shipped
here; :func:`v3det_like_stats` draws a long tail of that size (a power law
of the category rank, every category in at least one image) whose r/c/f
follow LVIS's rule, as :mod:`mmlongtail.datasets.category_stats` derives
them for a V3Det file.
"""
from typing import Callable, Dict

import numpy as np

from mmlongtail.datasets.category_stats import frequency_group

V3DET_NUM_CLASSES = 13204
V3DET_TRAIN_IMAGES = 183354
V3DET_VAL_IMAGES = 29821


def v3det_like_stats(num_classes: int = V3DET_NUM_CLASSES,
                     num_images: int = V3DET_TRAIN_IMAGES,
                     power: float = 0.8,
                     max_fraction: float = 0.1,
                     seed: int = 0) -> dict:
    """Compact category statistics (``load_category_stats`` form) of a
    synthetic long-tailed training set.

    Args:
        num_classes (int): ``C``. Defaults to V3Det's 13,204.
        num_images (int): Training images. Defaults to V3Det's 183,354.
        power (float): Image count of the category of rank ``k`` is
            ``max_fraction * num_images * k ** -power``.
        max_fraction (float): Share of images holding the commonest class.
        seed (int): Shuffles which id gets which count, and draws
            instances per image (1 to 3).

    Returns:
        dict: ``num_images``, ``frequency_from='lvis_rule'`` and
        ``categories`` (ids ``1..C``).
    """
    rng = np.random.default_rng(seed)
    rank = np.arange(1, num_classes + 1, dtype=np.float64)
    images = np.maximum(1, np.round(max_fraction * num_images *
                                    rank**-power)).astype(np.int64)
    images = images[rng.permutation(num_classes)]
    instances = np.round(images * rng.uniform(1, 3, num_classes)).astype(
        np.int64)
    return dict(
        num_images=int(num_images),
        frequency_from='lvis_rule',
        categories=[
            dict(id=i + 1, name=f'v3det_like_{i}',
                 frequency=frequency_group(int(n)), image_count=int(n),
                 instance_count=int(m))
            for i, (n, m) in enumerate(zip(images.tolist(),
                                           instances.tolist()))
        ])


#: Each registered loss's config for ``C`` classes and statistics ``s``, as
#: its method config sets it (defaults elsewhere). A loss registered later
#: without an entry is reported by :func:`rcnn_loss_configs`.
LOSS_CONFIGS: Dict[str, Callable[[int, dict], dict]] = {
    'FocalLoss': lambda C, s: dict(num_classes=C),
    'EQLLoss': lambda C, s: dict(num_classes=C, category_stats=s,
                                 freq_thr=1.1e-3),
    'EQLv2Loss': lambda C, s: dict(num_classes=C, gamma=12, mu=0.8,
                                   alpha=4.0),
    'EqualizedFocalLoss': lambda C, s: dict(num_classes=C),
    'GroupSoftmaxLoss': lambda C, s: dict(num_classes=C, category_stats=s),
    'FederatedLoss': lambda C, s: dict(num_classes=C, category_stats=s,
                                       num_classes_sampled=50),
    'ECMLoss': lambda C, s: dict(num_classes=C, category_stats=s),
    'GumbelLoss': lambda C, s: dict(num_classes=C, category_stats=s),
    'BalancedSoftmaxLoss': lambda C, s: dict(num_classes=C,
                                             category_stats=s),
    'ClassBalancedLoss': lambda C, s: dict(
        num_classes=C, category_stats=s,
        loss=dict(type='mmlongtail.FocalLoss', num_classes=C)),
    'SeesawLoss': lambda C, s: dict(num_classes=C),
    'APALoss': lambda C, s: dict(num_classes=C, category_stats=s),
    'LDAMLoss': lambda C, s: dict(num_classes=C, category_stats=s),
    'GAPLoss': lambda C, s: dict(num_classes=C),
    'PCBLoss': lambda C, s: dict(
        num_classes=C, alpha=0.05, start_epoch=17,
        loss=dict(type='mmlongtail.SeesawLoss', num_classes=C)),
}


def registered_losses() -> list:
    """Names of the classification losses in mmlongtail's registry."""
    import mmlongtail.models  # noqa: F401  (registers everything)
    from mmlongtail.registry import MODELS
    return sorted(n for n in MODELS.module_dict if n.endswith('Loss'))


def rcnn_loss_configs(num_classes: int, stats: dict) -> Dict[str, dict]:
    """``{name: config}`` of every registered loss, for an R-CNN box head
    with ``num_classes`` classes and category statistics ``stats``.

    Raises:
        KeyError: A registered loss has no entry in :data:`LOSS_CONFIGS`.
    """
    missing = [n for n in registered_losses() if n not in LOSS_CONFIGS]
    if missing:
        raise KeyError(f'no V3Det-scale config for {missing}: add it to '
                       'mmlongtail_bench.v3det.LOSS_CONFIGS')
    return {
        name: dict(type=f'mmlongtail.{name}',
                   **LOSS_CONFIGS[name](num_classes, stats))
        for name in registered_losses()
    }
