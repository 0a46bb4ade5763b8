"""Which component of a config a calibration parameter names, and whether
the model is one the sweep can calibrate.

``gamma`` is :class:`~mmlongtail.models.scorers.NorCal`'s ``gamma`` and
``beta`` its class-balanced ``beta`` (in ``model.test_cfg.rcnn.
score_calibration`` or a Cascade's ``stage_score_calibration``); ``tau`` is
:class:`~mmlongtail.models.scorers.LogitAdjustment`'s ``tau`` there, or
:class:`~mmlongtail.engine.TauNormalizationHook`'s in ``custom_hooks``;
``fractal_l`` is :class:`~mmlongtail.models.scorers.fracal.FRACAL`'s
exponent of the fractal dimension. A name matching nothing, or several
places, is refused naming what was found; the qualified names
(``NorCal.gamma``, ``LogitAdjustment.tau``, ``TauNormalizationHook.tau``,
``FRACAL.fractal_l``) pick one kind.
"""
import copy
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

from mmengine.config import Config

from mmlongtail.utils import unwrap_model

#: Qualified parameter -> (kind, component class name, config key).
TARGETS: Dict[str, Tuple[str, str, str]] = {
    'NorCal.gamma': ('scorer', 'NorCal', 'gamma'),
    'NorCal.beta': ('scorer', 'NorCal', 'beta'),
    'LogitAdjustment.tau': ('scorer', 'LogitAdjustment', 'tau'),
    'TauNormalizationHook.tau': ('hook', 'TauNormalizationHook', 'tau'),
    'FRACAL.fractal_l': ('scorer', 'FRACAL', 'fractal_l'),
    'NCMClassifierHook.temperature': ('hook', 'NCMClassifierHook',
                                      'temperature'),
}
#: Hooks the sweep keeps in the config (they prepare the model before the
#: test epoch; each row then only changes the value) rather than removing
#: them and applying the value itself, as for ``TauNormalizationHook``.
KEPT_HOOKS = ('NCMClassifierHook.temperature', )
#: Short names and the qualified ones each may mean.
SHORT_PARAMS: Dict[str, Tuple[str, ...]] = {
    'gamma': ('NorCal.gamma', ),
    'beta': ('NorCal.beta', ),
    'tau': ('LogitAdjustment.tau', 'TauNormalizationHook.tau'),
    'fractal_l': ('FRACAL.fractal_l', ),
}
#: NorCal refuses the other of gamma / beta.
_EXCLUSIVE = {'gamma': 'beta', 'beta': 'gamma'}


@dataclass(frozen=True)
class Target:
    """Where a swept parameter lives in the config.

    Attributes:
        name (str): Qualified name, e.g. ``'NorCal.gamma'``.
        kind (str): ``'scorer'`` or ``'hook'``.
        key (str): The parameter's key in the component's config.
        path (tuple): Scorer: ``('score_calibration', i)`` or
            ``('stage_score_calibration', stage, i)`` within
            ``model.test_cfg.rcnn``; hook: ``('custom_hooks', i)``.
        component (dict): The component's config as the config gives it.
    """
    name: str
    kind: str
    key: str
    path: tuple
    component: dict

    @property
    def where(self) -> str:
        head = 'model.test_cfg.rcnn.' if self.kind == 'scorer' else ''
        return head + self.path[0] + ''.join(f'[{i}]' for i in self.path[1:])


def component_type_name(cfg: Any) -> str:
    """The class name a component config's ``type`` gives, without scope
    (``'mmlongtail.NorCal'`` -> ``'NorCal'``); ``''`` without one."""
    t = cfg.get('type', '') if isinstance(cfg, dict) else ''
    return (t if isinstance(t, str) else getattr(t, '__name__', '')).split(
        '.')[-1]


def candidates(cfg: Config) -> List[Tuple[str, tuple, dict]]:
    """Every scorer / hook config: ``(kind, path, component)``."""
    found = []
    rcnn = ((cfg.get('model') or {}).get('test_cfg') or {}).get('rcnn') or {}
    for i, c in enumerate(rcnn.get('score_calibration') or []):
        found.append(('scorer', ('score_calibration', i), c))
    for s, stage in enumerate(rcnn.get('stage_score_calibration') or []):
        for i, c in enumerate(stage or []):
            found.append(('scorer', ('stage_score_calibration', s, i), c))
    for i, c in enumerate(cfg.get('custom_hooks') or []):
        found.append(('hook', ('custom_hooks', i), c))
    return found


def resolve_param(cfg: Config, param: str) -> Target:
    """The one place of ``cfg`` that ``param`` names (see the module
    docstring).

    Raises:
        ValueError: An unknown name, no such component in the config, or
            several.
    """
    if param in SHORT_PARAMS:
        names = SHORT_PARAMS[param]
    elif param in TARGETS:
        names = (param, )
    else:
        raise ValueError(
            f'unknown calibration parameter {param!r}: choose one of '
            f'{sorted(SHORT_PARAMS)} or {sorted(TARGETS)}')
    matches = []
    for name in names:
        kind, cls, key = TARGETS[name]
        for k, path, comp in candidates(cfg):
            if k != kind or component_type_name(comp) != cls:
                continue
            if comp.get(_EXCLUSIVE.get(key, ''), None) is not None:
                continue  # NorCal configured with the other weighting
            matches.append(Target(name, kind, key, path, dict(comp)))
    if not matches:
        present = [
            f'{component_type_name(c)} at {Target("", k, "", p, c).where}'
            for k, p, c in candidates(cfg)
        ]
        raise ValueError(
            f'--param {param}: the config has no {" or ".join(names)} to '
            'vary (the sweep varies a component the config already uses; '
            'start from a config that sets it, e.g. configs/norcal/*.py, '
            'configs/logit_adjustment/*.py, configs/tau_norm/*.py, '
            'configs/fracal/*.py). Found: '
            f'{present or "no scorer and no custom hook"}')
    if len(matches) > 1:
        raise ValueError(
            f'--param {param} is ambiguous: the config has '
            f'{[f"{m.name} at {m.where}" for m in matches]}; keep one, or '
            'name one kind with a qualified parameter '
            f'({", ".join(sorted(TARGETS))})')
    return matches[0]


def check_values(target: Target, values: Sequence[float]) -> List[float]:
    """The grid as floats, each built once so a refused value fails before
    any image is evaluated (with the component's own message)."""
    from mmlongtail.registry import HOOKS, MODELS
    if not values:
        raise ValueError('calibration sweep: give at least one value')
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                not math.isfinite(v):
            raise ValueError(f'calibration sweep: values must be finite '
                             f'numbers, got {v!r}')
        out.append(float(v))
    if len(set(out)) != len(out):
        raise ValueError(f'calibration sweep: repeated values in {out}')
    registry = MODELS if target.kind == 'scorer' else HOOKS
    for v in out:
        registry.build(dict(copy.deepcopy(target.component), **{
            target.key: v}))
    return out


def _check_roi_head(roi_head_cls: type, target: Target) -> None:
    from mmlongtail.models.roi_heads.scoring import ScorersFromTestCfg
    if target.kind == 'scorer' and not issubclass(roi_head_cls,
                                                  ScorersFromTestCfg):
        raise ValueError(
            f'calibration sweep: {target.name} is a test-time scorer, but '
            f'the RoI head {roi_head_cls.__name__} does not run scorers; '
            "set model.roi_head.type='mmlongtail.StandardRoIHead' (or "
            "'mmlongtail.CascadeRoIHead')")


def check_config(cfg: Config, target: Target) -> None:
    """Refuse, before anything is built, a model without an RoI head or
    whose RoI head ignores scorers."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    roi_head = cfg.model.get('roi_head')
    if not roi_head or 'rpn_head' not in cfg.model:
        raise ValueError(
            f'calibration sweep: the model {cfg.model.get("type")!r} is not '
            'a two-stage detector (backbone, RPN and RoI head); the '
            'calibrated scores and classifiers are those of R-CNN box heads')
    t = roi_head.get('type')
    if isinstance(t, str):
        with DefaultScope.overwrite_default_scope(
                cfg.get('default_scope', None) or 'mmdet'):
            t = MODELS.get(t)
    if isinstance(t, type):
        _check_roi_head(t, target)


def check_model(model, target: Target) -> None:
    """Refuse a built model (wrapped or not) that is not a two-stage
    detector, or whose RoI head ignores scorers."""
    model = unwrap_model(model)
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None or not hasattr(model, 'rpn_head') or \
            not hasattr(model, 'extract_feat'):
        raise ValueError(
            f'calibration sweep: {type(model).__name__} is not a two-stage '
            'detector (backbone, RPN and RoI head); the calibrated scores '
            'and classifiers are those of R-CNN box heads')
    _check_roi_head(type(roi_head), target)


