"""Test-time scorers: components that change only the scores a box head
predicts (post-hoc calibration), selected in ``test_cfg.rcnn`` and applied by
:mod:`mmlongtail.models.roi_heads.bbox_predict`.

Every module of this package is imported here, so a new scorer is one file
that registers its class in ``mmlongtail.registry.MODELS``.
"""
import importlib
import pkgutil

from .base import TestTimeScorer

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f'{__name__}.{_module.name}')

__all__ = ['TestTimeScorer']
