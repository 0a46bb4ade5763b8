"""Registries of mmlongtail, children of MMDetection's.

Every registry here has scope ``'mmlongtail'`` and a parent in
``mmdet.registry``, so a config in any OpenMMLab scope (mmdet, mmpretrain,
mmyolo, ...) resolves ``type='mmlongtail.SeesawLoss'``: mmengine walks up to the
root registry and finds the child whose scope is ``mmlongtail``. Because our
names live in our own registries, they never clash with mmdet's ``SeesawLoss``,
``NormedLinear`` or ``FocalLoss``.

``locations`` makes the lookup lazy: the first ``get`` on a registry imports the
modules that register into it.
"""
from mmdet.registry import DATA_SAMPLERS as MMDET_DATA_SAMPLERS
from mmdet.registry import DATASETS as MMDET_DATASETS
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import METRICS as MMDET_METRICS
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.registry import TRANSFORMS as MMDET_TRANSFORMS
from mmengine.registry import Registry

SCOPE = 'mmlongtail'

MODELS = Registry(
    'model',
    parent=MMDET_MODELS,
    scope=SCOPE,
    locations=['mmlongtail.models'])
DATASETS = Registry(
    'dataset',
    parent=MMDET_DATASETS,
    scope=SCOPE,
    locations=['mmlongtail.datasets'])
DATA_SAMPLERS = Registry(
    'data sampler',
    parent=MMDET_DATA_SAMPLERS,
    scope=SCOPE,
    locations=['mmlongtail.datasets'])
TRANSFORMS = Registry(
    'transform',
    parent=MMDET_TRANSFORMS,
    scope=SCOPE,
    locations=['mmlongtail.datasets'])
METRICS = Registry(
    'metric',
    parent=MMDET_METRICS,
    scope=SCOPE,
    locations=['mmlongtail.evaluation'])
HOOKS = Registry(
    'hook', parent=MMDET_HOOKS, scope=SCOPE, locations=['mmlongtail.engine'])
