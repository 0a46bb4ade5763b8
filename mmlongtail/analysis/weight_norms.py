"""Classifier weight norms ‖w_j‖ of a detector's box head.

The diagnostic of Kang et al., "Decoupling Representation and Classifier for
Long-Tailed Recognition" (ICLR 2020): with plain (instance-balanced) training
the norms of the classifier's class vectors grow with the class's training
frequency, so head classes win the arg-max.

Supported checkpoints: mmengine checkpoints (``state_dict`` inside) or bare
state dicts, with the box classifier at
``roi_head.bbox_head.fc_cls.weight`` (Faster/Mask R-CNN) or
``roi_head.bbox_head.{i}.fc_cls.weight`` (Cascade, one per stage), optionally
behind a ``module.`` prefix. ``fc_cls`` may be an ``nn.Linear`` or
``mmlongtail.NormedLinear`` (a cosine classifier: its rows are divided by
their norms in ``forward``, so their norms do not affect its scores;
:func:`box_classifier_normalized` says which classifiers are such).

Which row of ``fc_cls.weight`` is which class is the loss's business: the
layouts come from the run's config (mmengine stores it as text in every
checkpoint's ``meta['cfg']``), by building each box head's ``loss_cls`` and
asking it (:func:`mmlongtail.models.losses.loss_layout`). So a BAGS head with
any ``bin_split``, Seesaw's ``C + 2``, EQLv2's ``C + 1``, mmdet's softmax CE
and sigmoid losses are all read right, stage by stage for Cascade, with no
layout flag. A checkpoint without a stored config needs ``config=``.
"""
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config

from mmlongtail.models.losses.protocol import ClassifierLayout, loss_layout

ConfigSource = Union[str, Config, Mapping]


def load_state_dict(checkpoint: Union[str, dict]) -> Dict[str, torch.Tensor]:
    """The model state dict of a checkpoint path or loaded checkpoint
    (without a DDP ``module.`` prefix)."""
    sd = load_checkpoint(checkpoint)
    sd = sd.get('state_dict', sd)
    return {(k[len('module.'):] if k.startswith('module.') else k): v
            for k, v in sd.items()}


def find_box_classifiers(
        state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``{name: (O, D) weight}`` of the box classifier(s), in stage order.

    Names are ``'fc_cls'`` for a single head and ``'stage{i}'`` for Cascade.
    Raises ``KeyError`` listing the ``fc_cls`` keys seen when none matches.
    """
    single = 'roi_head.bbox_head.fc_cls.weight'
    if single in state_dict:
        return {'fc_cls': state_dict[single]}
    stages = {}
    prefix = 'roi_head.bbox_head.'
    for k, v in state_dict.items():
        if k.startswith(prefix) and k.endswith('.fc_cls.weight'):
            mid = k[len(prefix):-len('.fc_cls.weight')]
            if mid.isdigit():
                stages[int(mid)] = v
    if not stages:
        seen = [k for k in state_dict if 'fc_cls' in k][:5]
        raise KeyError(
            'no box classifier found: expected roi_head.bbox_head.fc_cls.'
            'weight or roi_head.bbox_head.<i>.fc_cls.weight; fc_cls keys in '
            f'the checkpoint: {seen}')
    return {f'stage{i}': stages[i] for i in sorted(stages)}


def load_checkpoint(checkpoint: Union[str, dict]) -> dict:
    """A checkpoint path (loaded on CPU with ``weights_only=True``; mmlongtail
    allow-lists the types mmengine writes, see :mod:`mmlongtail.compat`) or
    an already loaded checkpoint / state dict."""
    if isinstance(checkpoint, str):
        import mmlongtail.compat as compat
        compat.register_checkpoint_safe_globals()
        checkpoint = torch.load(
            checkpoint, map_location='cpu', weights_only=True)
    if not isinstance(checkpoint, dict):
        raise TypeError('checkpoint must be a path or a dict, got '
                        f'{type(checkpoint).__name__}')
    return checkpoint


def config_from_checkpoint(checkpoint: Union[str, dict]) -> Config:
    """The run's config, from the text mmengine stores in ``meta['cfg']``.

    Raises:
        ValueError: The checkpoint has no stored config.
    """
    meta = load_checkpoint(checkpoint).get('meta') or {}
    text = meta.get('cfg') if isinstance(meta, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            "the checkpoint has no config in meta['cfg'] (mmengine's "
            'Runner stores it in every checkpoint it saves); pass the '
            "run's config to tell which classifier row is which class")
    return Config.fromstring(text, '.py')


def as_config(config: ConfigSource) -> Config:
    """A config from a path, a dict or a ``Config`` (parsed once)."""
    if isinstance(config, Config):
        return config
    if isinstance(config, str):
        return Config.fromfile(config)
    return Config(dict(config))


def _bbox_heads(config: ConfigSource) -> Tuple[List[Mapping], bool]:
    """The box head config(s) of a two-stage detector config, and whether
    there is a single one (else Cascade stages)."""
    model = as_config(config).get('model') or {}
    heads = (model.get('roi_head') or {}).get('bbox_head')
    if heads is None:
        raise ValueError('the config has no model.roi_head.bbox_head: the '
                         'weight-norm analysis reads R-CNN box classifiers')
    single = isinstance(heads, Mapping)
    return ([heads] if single else list(heads)), single


def checkpoint_classes(
        checkpoint: Union[str, dict]) -> Optional[Tuple[str, ...]]:
    """The names of the classes a checkpoint was trained on, in label order:
    ``meta['dataset_meta']['classes']``, where mmengine's Runner stores the
    training set's ``metainfo`` in every checkpoint it saves. None when the
    checkpoint has none (a bare state dict)."""
    meta = load_checkpoint(checkpoint).get('meta')
    dataset_meta = meta.get('dataset_meta') if isinstance(meta, dict) \
        else None
    classes = dataset_meta.get('classes') if isinstance(
        dataset_meta, Mapping) else None
    return None if classes is None else tuple(str(c) for c in classes)


def box_classifier_normalized(config: ConfigSource) -> Dict[str, str]:
    """The box classifiers that normalize their weight rows in ``forward``.

    A cosine classifier (``cls_predictor_cfg`` a ``NormedLinear``,
    mmlongtail's or mmdet's, as Seesaw's configs use) divides each row
    ``w_j`` by its norm before the dot product, so ``||w_j||`` does not
    affect its scores: the norms are not a frequency bias of its predictions.

    Args:
        config: A config path, ``Config`` or dict with
            ``model.roi_head.bbox_head``.

    Returns:
        dict: ``{'fc_cls' | 'stage{i}': predictor type}`` for the normalized
        classifiers only, named as :func:`find_box_classifiers` names them.

    Raises:
        ValueError: A ``cls_predictor_cfg`` type that is not registered.
    """
    from mmdet.models.layers import NormedLinear as MMDetNormedLinear
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    from mmlongtail.models.layers import NormedLinear
    heads, single = _bbox_heads(config)
    out = {}
    for i, head in enumerate(heads):
        predictor = head.get('cls_predictor_cfg') or dict(type='Linear')
        kind = predictor.get('type', 'Linear')
        if isinstance(kind, str):
            with DefaultScope.overwrite_default_scope('mmdet'):
                cls = MODELS.get(kind)
            if cls is None:
                raise ValueError(f'cls_predictor_cfg type {kind!r} of the '
                                 'box head is not registered')
        else:
            cls = kind
        if isinstance(cls, type) and issubclass(
                cls, (NormedLinear, MMDetNormedLinear)):
            out['fc_cls' if single else f'stage{i}'] = (
                kind if isinstance(kind, str) else cls.__name__)
    return out


def box_classifier_layouts(
        config: ConfigSource) -> Dict[str, ClassifierLayout]:
    """The layout of each box classifier of a two-stage detector config.

    Args:
        config: A config path, ``Config`` or dict with
            ``model.roi_head.bbox_head`` (a dict, or a list for Cascade).

    Returns:
        dict: ``{'fc_cls' | 'stage{i}': ClassifierLayout}``, named as
        :func:`find_box_classifiers` names the weights.
    """
    heads, single = _bbox_heads(config)
    layouts = {}
    for i, head in enumerate(heads):
        # BBoxHead's default loss_cls is softmax cross entropy
        loss = head.get('loss_cls') or dict(type='CrossEntropyLoss')
        layouts['fc_cls' if single else f'stage{i}'] = loss_layout(
            loss, head['num_classes'])
    return layouts


def classifier_weight_norms(
        checkpoint: Union[str, dict],
        config: Optional[ConfigSource] = None,
        num_classes: Optional[int] = None) -> Dict[str, np.ndarray]:
    """L2 norm of each foreground class's classifier vector.

    Args:
        checkpoint: Path or loaded checkpoint / state dict.
        config: The run's config; defaults to the one stored in the
            checkpoint's ``meta['cfg']``.
        num_classes (int, optional): If given, checked against the heads'.

    Returns:
        dict: ``{'fc_cls' | 'stage{i}': (C,) float64 norms}``.

    Raises:
        ValueError: No config, or the config's classifiers do not match the
            checkpoint's (naming the classifier and both numbers).
    """
    ckpt = load_checkpoint(checkpoint)
    layouts = box_classifier_layouts(
        config_from_checkpoint(ckpt) if config is None else config)
    weights = find_box_classifiers(load_state_dict(ckpt))
    if list(weights) != list(layouts):
        raise ValueError(
            f'the checkpoint has box classifiers {list(weights)} but the '
            f'config describes {list(layouts)}')
    out = {}
    for name, w in weights.items():
        layout = layouts[name]
        if num_classes is not None and num_classes != layout.num_classes:
            raise ValueError(
                f'{name}: the config has num_classes={layout.num_classes} '
                f'but the evaluation has {num_classes} classes')
        w = w.detach().float().reshape(w.shape[0], -1)
        layout.check_outputs(w.shape[0], f'{name} (fc_cls.weight)')
        rows = torch.as_tensor(layout.foreground_rows())
        out[name] = w[rows].norm(dim=1).double().numpy()
    return out


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def _rank(a: np.ndarray) -> np.ndarray:
        order = np.argsort(a, kind='stable')
        r = np.empty(len(a), np.float64)
        r[order] = np.arange(len(a))
        # average ranks of ties
        _, inv, cnt = np.unique(a, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return sums[inv] / cnt[inv]

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2:
        return float('nan')
    rx, ry = _rank(x), _rank(y)
    sx, sy = rx.std(), ry.std()
    if sx == 0 or sy == 0:
        return float('nan')
    return float(((rx - rx.mean()) * (ry - ry.mean())).mean() / (sx * sy))
