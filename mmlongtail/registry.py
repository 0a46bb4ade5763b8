"""Registries of mmlongtail, children of MMDetection's.

Every registry here has scope ``'mmlongtail'`` and a parent in
``mmdet.registry``, so a config in any OpenMMLab scope (mmdet, mmpretrain,
mmyolo, ...) resolves ``type='mmlongtail.SeesawLoss'``: mmengine walks up to
the root registry and finds the child whose scope is ``mmlongtail``. Because
our names live in our own registries, they never clash with mmdet's
``SeesawLoss``, ``NormedLinear`` or ``FocalLoss``.

``locations`` makes the lookup lazy: the first ``get`` on a registry imports
the modules that register into it.

mmengine resolves a scoped key by looking in the current registry's children,
then in the root's children, one level deep. A grandchild of the root (ours,
under mmdet's) would then be found from mmdet's scope but not from mmengine's
root nor from a sibling scope such as mmpretrain or mmyolo. So each registry is
also *listed* among its root's children (its parent stays mmdet's registry, so
unscoped names still fall back to mmdet's modules).
"""
from mmdet.registry import DATA_SAMPLERS as MMDET_DATA_SAMPLERS
from mmdet.registry import DATASETS as MMDET_DATASETS
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import METRICS as MMDET_METRICS
from mmdet.registry import MODEL_WRAPPERS as MMDET_MODEL_WRAPPERS
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.registry import TASK_UTILS as MMDET_TASK_UTILS
from mmdet.registry import TRANSFORMS as MMDET_TRANSFORMS
from mmengine.registry import Registry

SCOPE = 'mmlongtail'


def _listed_under_root(registry: Registry) -> Registry:
    """List ``registry`` among its root registry's children (see above)."""
    root = registry._get_root_registry()
    if root.children.get(registry.scope, registry) is not registry:
        raise RuntimeError(f'another {registry.name!r} registry already has '
                           f'the scope {registry.scope!r}')
    root.children[registry.scope] = registry
    return registry


MODELS = _listed_under_root(Registry(
    'model',
    parent=MMDET_MODELS,
    scope=SCOPE,
    locations=['mmlongtail.models']))
DATASETS = _listed_under_root(Registry(
    'dataset',
    parent=MMDET_DATASETS,
    scope=SCOPE,
    locations=['mmlongtail.datasets']))
DATA_SAMPLERS = _listed_under_root(Registry(
    'data sampler',
    parent=MMDET_DATA_SAMPLERS,
    scope=SCOPE,
    locations=['mmlongtail.datasets']))
TRANSFORMS = _listed_under_root(Registry(
    'transform',
    parent=MMDET_TRANSFORMS,
    scope=SCOPE,
    locations=['mmlongtail.datasets']))
METRICS = _listed_under_root(Registry(
    'metric',
    parent=MMDET_METRICS,
    scope=SCOPE,
    locations=['mmlongtail.evaluation']))
HOOKS = _listed_under_root(Registry(
    'hook', parent=MMDET_HOOKS, scope=SCOPE, locations=['mmlongtail.engine']))
MODEL_WRAPPERS = _listed_under_root(Registry(
    'model_wrapper',
    parent=MMDET_MODEL_WRAPPERS,
    scope=SCOPE,
    locations=['mmlongtail.engine']))
TASK_UTILS = _listed_under_root(Registry(
    'task util',
    parent=MMDET_TASK_UTILS,
    scope=SCOPE,
    locations=['mmlongtail.models']))
