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
``mmlongtail.NormedLinear`` (its weight is normalized at run time, so its norms
are flat by design).

Output-channel layouts (``O`` rows of ``fc_cls.weight``, ``C`` classes):

============  ===========  =============================================
layout        O            foreground class ``j`` is row
============  ===========  =============================================
``sigmoid``   C            ``j`` (EQL, focal loss)
``softmax``   C + 1        ``j``; row C is background (mmdet's CE)
``eqlv2``     C + 1        ``j``; row C is objectness
``seesaw``    C + 2        ``j``; rows C, C+1 are the objectness pair
``bags``      C + 1 + G    ``offset[g(j)] + rank of j in g(j)``, groups
                           by ``bisect_right(bin_split, instance_count)``
                           in order then background, each group laid out
                           as ``[others, its classes in label order]``
                           (``mmlongtail.GroupSoftmaxLoss``)
============  ===========  =============================================

``layout='auto'`` picks by ``O``: C, C + 1 and C + 2 are unambiguous (the
first C rows); ``O == C + 1 + G`` for the BAGS ``bin_split`` is ``bags``
(needs instance counts).
"""
import bisect
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

LAYOUTS = ('auto', 'sigmoid', 'softmax', 'eqlv2', 'seesaw', 'bags')
_EXTRA = {'sigmoid': 0, 'softmax': 1, 'eqlv2': 1, 'seesaw': 2}


def load_state_dict(checkpoint: Union[str, dict]) -> Dict[str, torch.Tensor]:
    """The model state dict of a checkpoint path or loaded checkpoint.

    Paths are loaded on CPU with ``weights_only=True`` (mmlongtail
    allow-lists the types mmengine writes, see :mod:`mmlongtail.compat`).
    """
    if isinstance(checkpoint, str):
        import mmlongtail.compat as compat
        compat.register_checkpoint_safe_globals()
        checkpoint = torch.load(
            checkpoint, map_location='cpu', weights_only=True)
    if not isinstance(checkpoint, dict):
        raise TypeError('checkpoint must be a path or a dict, got '
                        f'{type(checkpoint).__name__}')
    sd = checkpoint.get('state_dict', checkpoint)
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


def bags_foreground_rows(instance_count: Sequence[int],
                         bin_split: Sequence[int] = (10, 100,
                                                     1000)) -> np.ndarray:
    """Row of each foreground class in the BAGS ``C + 1 + G`` layout."""
    groups = [bisect.bisect_right(list(bin_split), int(n))
              for n in instance_count]
    num_fg_groups = len(bin_split) + 1
    sizes = [groups.count(g) for g in range(num_fg_groups)]
    offsets = np.cumsum([0] + [s + 1 for s in sizes])[:-1]
    rank = np.zeros(len(groups), np.int64)
    seen = [0] * num_fg_groups
    for j, g in enumerate(groups):
        seen[g] += 1
        rank[j] = seen[g]
    return offsets[np.asarray(groups, np.int64)] + rank


def foreground_rows(num_outputs: int,
                    num_classes: int,
                    layout: str = 'auto',
                    instance_count: Optional[Sequence[int]] = None,
                    bin_split: Sequence[int] = (10, 100, 1000)) -> np.ndarray:
    """``(C,)`` row index of each foreground class in ``fc_cls.weight``.

    Raises ``ValueError`` naming ``O`` and ``C`` when the layout does not fit.
    """
    if layout not in LAYOUTS:
        raise ValueError(f'layout must be one of {LAYOUTS}, got {layout!r}')
    C, O = int(num_classes), int(num_outputs)
    n_bags = C + 1 + len(bin_split) + 2
    if layout == 'auto':
        if O - C in (0, 1, 2):
            return np.arange(C)
        if O == n_bags:
            layout = 'bags'
        else:
            raise ValueError(
                f'fc_cls has {O} outputs for {C} classes: not C (sigmoid), '
                f'C+1 (softmax/EQLv2), C+2 (Seesaw) or C+1+G={n_bags} (BAGS '
                f'with bin_split={tuple(bin_split)}); check num_classes')
    if layout == 'bags':
        if O != n_bags:
            raise ValueError(f"layout 'bags' expects C+1+G={n_bags} outputs "
                             f'for {C} classes, fc_cls has {O}')
        if instance_count is None or len(instance_count) != C:
            raise ValueError("layout 'bags' needs the training instance "
                             f'counts of the {C} classes')
        return bags_foreground_rows(instance_count, bin_split)
    if O != C + _EXTRA[layout]:
        raise ValueError(f'layout {layout!r} expects {C + _EXTRA[layout]} '
                         f'outputs for {C} classes, fc_cls has {O}')
    return np.arange(C)


def classifier_weight_norms(
        checkpoint: Union[str, dict],
        num_classes: int,
        layout: str = 'auto',
        instance_count: Optional[Sequence[int]] = None,
        bin_split: Sequence[int] = (10, 100, 1000)) -> Dict[str, np.ndarray]:
    """L2 norm of each foreground class's classifier vector.

    Args:
        checkpoint: Path or loaded checkpoint / state dict.
        num_classes (int): ``C``.
        layout (str): One of :data:`LAYOUTS` (see the module docstring).
        instance_count: ``(C,)`` training instances, for ``'bags'``.
        bin_split: BAGS group boundaries.

    Returns:
        dict: ``{'fc_cls' | 'stage{i}': (C,) float64 norms}``.
    """
    out = {}
    for name, w in find_box_classifiers(load_state_dict(checkpoint)).items():
        w = w.detach().float().reshape(w.shape[0], -1)
        rows = foreground_rows(w.shape[0], num_classes, layout,
                               instance_count, bin_split)
        out[name] = w[torch.as_tensor(rows)].norm(dim=1).double().numpy()
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
