"""Post-hoc score calibration for long-tailed detection: NorCal and logit
adjustment, as test-time scorers (any checkpoint, from the config).

**NorCal** (Pan et al., "On Model Calibration for Long-Tailed Object
Detection and Instance Segmentation", NeurIPS 2021; tydpan/NorCal). Every
class ``c`` gets a weight ``a_c`` from its training image count ``N_c``:

* ``a_c = 1 / N_c^γ`` (the paper's rule), or
* ``a_c = (1 - β) / (1 - β^{N_c})`` (the class-balanced variant, Cui et
  al., CVPR 2019; the official code's ``method='cb'``, whose ``GAMMA`` is
  this ``β``).

For a softmax classifier over ``C + 1`` outputs (background last) the three
official modes are, with the background never weighted:

* ``'exps'``:   ``p_c ∝ a_c e^{z_c}``, ``p_bg ∝ e^{z_bg}``;
* ``'probs'``:  ``p_c ∝ a_c softmax(z)_c``, ``p_bg ∝ softmax(z)_bg``;
* ``'logits'``: ``p = softmax(a_c z_c, z_bg)`` (the logits scaled);

each renormalized per proposal over the ``C + 1`` outputs (``renorm``,
default True; without it ``'exps'`` returns the unnormalized exponentials and
``'probs'`` the weighted probabilities, as the official code). With
``renorm`` ``'exps'`` and ``'probs'`` are equal. These equal the official
``CalibrationFastRCNNOutputLayers.predict_probs`` on the same logits.

**Logit adjustment** (Menon et al., "Long-tail learning via logit
adjustment", ICLR 2021): ``z_c - τ log π_c`` for the class logits, with the
prior ``π_c = N_c / Σ_k N_k`` from the training image counts, the background
logit unadjusted. It is the ``'exps'`` mode with ``a_c = π_c^{-τ}`` (so,
with ``γ = τ``, NorCal times ``(Σ_k N_k)^τ`` on every class relative to the
background).

**Which heads, and what calibration means for each** (read from the typed
scoring family of the loss's
:class:`~mmlongtail.models.losses.ClassifierLayout`, never from its name or
its description; :data:`CALIBRATION_FAMILY`):

* *softmax over C + 1* (mmdet's cross entropy and every loss mmdet scores
  with softmax, balanced softmax): the formulas above, exactly.
* *Seesaw* (``C + 2``: class softmax times a 2-way objectness softmax): the
  class part is calibrated as a softmax without background (``q_c ∝ a_c
  e^{z_c}``, or ``a_c q_c``, or ``softmax(a_c z_c)``, renormalized over the
  classes) and multiplied by the unchanged ``P(foreground)``; ``P(bg)`` is
  kept. The background is thus "handled separately" by construction.
* *independent per-class scores* (EQL, EQLv2, focal, federated, ECM, GOL,
  BALMS, APA: the scoring families ``SIGMOID``, ``SIGMOID_OBJECTNESS``,
  ``GUMBEL`` and ``APA``): each class score ``s_c`` is its own
  binary problem, class ``c`` against everything else, so there is no
  per-proposal normalizer over classes. Calibration is the binary form of
  the same rule, the negative outcome unweighted, renormalized per
  (proposal, class): ``s'_c = a_c s_c / (a_c s_c + 1 - s_c)`` (for a plain
  sigmoid, ``σ(z_c + log a_c)``); ``renorm=False`` gives ``a_c s_c``; mode
  ``'logits'`` gives ``σ(a_c z_c)`` and needs plain sigmoid scores (family
  ``SIGMOID``). The
  official code implements only the softmax head; this binary form is ours
  (it is what the softmax rule becomes with one class and one
  background). The background column of a sigmoid head is kept (mmdet
  drops it before NMS).
* *BAGS* (group softmax): refused. Its class scores come from separate
  softmaxes of groups of similar frequency, with no normalizer shared by all
  classes to renormalize against.

Anything else is refused with a ``ValueError`` naming the loss and its
layout. ``'probs'`` acts on the probabilities the scorer receives (the
loss's activation, a previous scorer's output, or a Cascade's mean of stage
scores); ``'exps'`` and ``'logits'`` on the raw logits.
"""
import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmlongtail.datasets.category_stats import (CategoryStats,
                                                load_category_stats)
from mmlongtail.models.losses.protocol import ClassifierLayout, ScoringFamily
from mmlongtail.registry import MODELS
from .base import TestTimeScorer

#: NorCal's official calibration modes.
NORCAL_MODES = ('exps', 'probs', 'logits')

#: The calibration family of each scoring family of a layout
#: (:attr:`ClassifierLayout.family`); a family not here (BAGS' group softmax)
#: is refused.
CALIBRATION_FAMILY = {
    ScoringFamily.SOFTMAX: 'softmax',
    ScoringFamily.SEESAW: 'seesaw',
    ScoringFamily.SIGMOID: 'sigmoid',
    ScoringFamily.SIGMOID_OBJECTNESS: 'sigmoid',
    ScoringFamily.GUMBEL: 'sigmoid',
    ScoringFamily.APA: 'sigmoid',
}


# ------------------------------------------------------------- weights --
def norcal_weights(image_count: Sequence[int],
                   gamma: Optional[float] = None,
                   beta: Optional[float] = None) -> Tensor:
    """NorCal's per-class weights ``a_c``.

    Args:
        image_count (Sequence[int]): ``(C,)`` training images per class.
        gamma (float, optional): ``a_c = N_c^{-γ}``; must be > 0 (0 changes
            nothing: the official default, a silent no-op).
        beta (float, optional): The class-balanced variant,
            ``a_c = (1 - β) / (1 - β^{N_c})``, ``0 < β < 1``.

    Returns:
        Tensor: ``(C,)`` float64.

    Raises:
        ValueError: Neither or both of ``gamma``/``beta``, a value out of
            range, or a class without training images.
    """
    if (gamma is None) == (beta is None):
        raise ValueError(
            'NorCal needs exactly one of gamma (a_c = N_c^-gamma, e.g. '
            'gamma=0.6) or beta (class-balanced, a_c = (1 - beta) / '
            f'(1 - beta^N_c)), got gamma={gamma!r}, beta={beta!r}')
    n = torch.as_tensor(np.asarray(image_count, dtype=np.float64))
    if bool((n <= 0).any()):
        zero = torch.nonzero(n <= 0).view(-1).tolist()
        raise ValueError(
            f'NorCal: classes {zero[:10]} have no training image, so their '
            'weight is undefined; use the statistics of the training set '
            'the model was trained on')
    if gamma is not None:
        if isinstance(gamma, bool) or not isinstance(
                gamma, (int, float)) or not gamma > 0 or \
                not math.isfinite(gamma):
            raise ValueError(
                f'NorCal: gamma must be a number > 0, got {gamma!r} (gamma=0 '
                'leaves every score unchanged; choose it with '
                'tools/calibrate.py)')
        return n.pow(-float(gamma))
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or \
            not 0 < beta < 1:
        raise ValueError(f'NorCal: beta must lie in (0, 1), got {beta!r}')
    return (1 - beta) / (1 - torch.pow(torch.tensor(float(beta),
                                                    dtype=torch.float64), n))


def logit_adjustment_weights(image_count: Sequence[int],
                             tau: float) -> Tensor:
    """``a_c = π_c^{-τ}``, ``π_c = N_c / Σ_k N_k`` (``(C,)`` float64), so
    that ``log a_c = -τ log π_c`` is Menon et al.'s logit adjustment.

    Raises:
        ValueError: ``tau`` is not a non-zero number, or a class has no
            training image.
    """
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or \
            tau == 0 or not math.isfinite(tau):
        raise ValueError(f'LogitAdjustment: tau must be a non-zero number, '
                         f'got {tau!r} (tau=0 leaves every score unchanged;'
                         ' Menon et al. use tau=1)')
    n = torch.as_tensor(np.asarray(image_count, dtype=np.float64))
    if bool((n <= 0).any()):
        raise ValueError(
            f'LogitAdjustment: classes '
            f'{torch.nonzero(n <= 0).view(-1).tolist()[:10]} have no training'
            ' image, so log pi_c is undefined')
    return (n / n.sum()).pow(-float(tau))


# ---------------------------------------------------------- the formulas --
def calibrate_softmax(logits: Tensor,
                      weights: Tensor,
                      mode: str,
                      renorm: bool = True,
                      probs: Optional[Tensor] = None) -> Tensor:
    """NorCal on a softmax classifier, background last.

    Args:
        logits (Tensor): ``(N, K + 1)``, ``K`` classes then the background
            (for Seesaw's class part: ``(N, K)`` with ``with_bg=False``
            semantics, see :func:`calibrate_classes`).
        weights (Tensor): ``(K,)`` class weights ``a_c``.
        mode (str): ``'exps'``, ``'probs'`` or ``'logits'``.
        renorm (bool): Renormalize per proposal. Defaults to True.
        probs (Tensor, optional): ``(N, K + 1)`` probabilities for
            ``'probs'`` (default: ``softmax(logits)``).

    Returns:
        Tensor: ``(N, K + 1)``.
    """
    return _calibrate(logits, weights, mode, renorm, probs, with_bg=True)


def calibrate_classes(logits: Tensor,
                      weights: Tensor,
                      mode: str,
                      renorm: bool = True,
                      probs: Optional[Tensor] = None) -> Tensor:
    """NorCal on a softmax over classes only (``(N, K)``, no background):
    Seesaw's class part."""
    return _calibrate(logits, weights, mode, renorm, probs, with_bg=False)


def _calibrate(logits: Tensor, weights: Tensor, mode: str, renorm: bool,
               probs: Optional[Tensor], with_bg: bool) -> Tensor:
    K = weights.numel()
    a = weights.to(device=logits.device, dtype=logits.dtype)
    if with_bg:
        a = torch.cat([a, a.new_ones(1)])
    if logits.size(-1) != a.numel():
        raise ValueError(f'{logits.size(-1)} logits for {K} class weights')
    if mode == 'logits':
        return F.softmax(logits * a, dim=-1)
    if mode == 'exps':
        if renorm:  # a_c e^{z_c} / sum, computed in the log domain
            return F.softmax(logits + a.log(), dim=-1)
        return logits.exp() * a
    if mode == 'probs':
        p = F.softmax(logits, dim=-1) if probs is None else probs
        out = p * a
        return out / out.sum(dim=-1, keepdim=True) if renorm else out
    raise ValueError(f'NorCal mode must be one of {NORCAL_MODES}, got '
                     f'{mode!r}')


def calibrate_binary(class_scores: Tensor,
                     weights: Tensor,
                     mode: str,
                     renorm: bool = True,
                     logits: Optional[Tensor] = None) -> Tensor:
    """The binary form for independent per-class scores (see the module
    docstring): ``a s / (a s + 1 - s)``, or ``a s`` without ``renorm``, or
    ``σ(a z)`` in mode ``'logits'`` (needs ``logits``)."""
    a = weights.to(device=class_scores.device, dtype=class_scores.dtype)
    if mode == 'logits':
        if logits is None:
            raise ValueError("mode 'logits' needs plain sigmoid logits")
        return torch.sigmoid(logits * a)
    if mode not in NORCAL_MODES:
        raise ValueError(f'NorCal mode must be one of {NORCAL_MODES}, got '
                         f'{mode!r}')
    weighted = class_scores * a
    if not renorm:
        return weighted
    return weighted / (weighted + (1 - class_scores))


def calibration_family(layout: ClassifierLayout) -> str:
    """``'softmax'``, ``'seesaw'`` or ``'sigmoid'`` for a classifier layout.

    Raises:
        ValueError: The layout is none of these (naming the loss, its rows
            and its scoring).
    """
    extra = layout.extra
    C = layout.num_classes
    family = CALIBRATION_FAMILY.get(layout.family)
    classes_first = tuple(layout.class_rows) == tuple(range(C))
    rows_fit = {
        'softmax': list(extra) == ['background']
        and extra['background'] == (C, ),
        'seesaw': extra.get('objectness') == (C, )
        and extra.get('background') == (C + 1, ),
        'sigmoid': True,
    }
    if family is not None and not layout.groups and classes_first \
            and rows_fit[family]:
        return family
    why = (' (a group softmax: its classes share no normalizer to '
           'renormalize against)' if layout.groups else '')
    known = ', '.join(f.name for f in CALIBRATION_FAMILY)
    raise ValueError(
        f'score calibration cannot handle the classifier of {layout.owner}'
        f'{why}: {layout.describe()}, scoring family '
        f'{getattr(layout.family, "name", None)} ({layout.scoring!r}). It '
        'calibrates softmax over C + 1 (background last), Seesaw (C + 2) and '
        f'independent per-class scores (scoring families {known})')


def calibrate(cls_score: Tensor,
              scores: Tensor,
              layout: ClassifierLayout,
              weights: Tensor,
              mode: str = 'exps',
              renorm: bool = True) -> Tensor:
    """Calibrate the ``(N, C + 1)`` scores of any supported head.

    Args:
        cls_score (Tensor): ``(N, O)`` raw logits.
        scores (Tensor): ``(N, C + 1)`` probabilities, background last.
        layout (ClassifierLayout): The classifier's layout.
        weights (Tensor): ``(C,)`` class weights ``a_c``.
        mode (str): ``'exps'``, ``'probs'`` or ``'logits'``.
        renorm (bool): Renormalize (see the module docstring).

    Returns:
        Tensor: ``(N, C + 1)`` calibrated scores, background last.
    """
    family = calibration_family(layout)
    C = layout.num_classes
    if weights.numel() != C:
        raise ValueError(f'{weights.numel()} class weights for the '
                         f'{C} classes of {layout.owner}')
    if mode not in NORCAL_MODES:
        raise ValueError(f'NorCal mode must be one of {NORCAL_MODES}, got '
                         f'{mode!r}')
    if family == 'softmax':
        return calibrate_softmax(cls_score, weights, mode, renorm, scores)
    if family == 'seesaw':
        fg = scores[:, :C].sum(dim=1, keepdim=True)
        q = None
        if mode == 'probs':
            q = scores[:, :C] / fg.clamp(min=torch.finfo(scores.dtype).tiny)
        cls = calibrate_classes(cls_score[:, :C], weights, mode, renorm, q)
        return torch.cat([fg * cls, scores[:, C:]], dim=1)
    plain = layout.family is ScoringFamily.SIGMOID
    if mode == 'logits' and not plain:
        raise ValueError(
            f"NorCal mode 'logits' needs plain sigmoid scores, but "
            f'{layout.owner} scores {layout.scoring!r} (scoring family '
            f"{layout.family.name}); use mode='exps' or 'probs'")
    cls = calibrate_binary(scores[:, :C], weights, mode, renorm,
                           cls_score[:, :C] if plain else None)
    return torch.cat([cls, scores[:, C:]], dim=1)


# -------------------------------------------------------------- scorers --
class _CountsScorer(TestTimeScorer):
    """A scorer whose class weights come from training image counts."""

    def __init__(self, category_stats) -> None:
        if category_stats is None:
            raise ValueError(f'{type(self).__name__} needs category_stats '
                             "(e.g. 'lvis_v1' or the training annotation "
                             'file)')
        self.stats: CategoryStats = load_category_stats(
            category_stats, owner=type(self).__name__)
        self._weights = torch.ones(self.stats.num_classes,
                                   dtype=torch.float64)

    def weights_for(self, layout: ClassifierLayout) -> Tensor:
        """``(C,)`` class weights, checked against the classifier's ``C``
        (``ValueError`` naming both)."""
        self.stats.check_num_classes(layout.num_classes,
                                     f'the classifier of {layout.owner}')
        return self._weights


@MODELS.register_module()
class NorCal(_CountsScorer):
    """NorCal (Pan et al., NeurIPS 2021) as a test-time scorer; see the
    module docstring for the formulas and the heads it handles.

    Config delta on any two-stage detector with an mmlongtail RoI head::

        model = dict(test_cfg=dict(rcnn=dict(score_calibration=[
            dict(type='mmlongtail.NorCal', category_stats='lvis_v1',
                 gamma=0.6)])))

    Args:
        category_stats: Training statistics (``'lvis_v1'``, a stats JSON or
            annotation file): ``N_c`` is each class's image count.
        gamma (float, optional): ``a_c = N_c^{-γ}``, required unless
            ``beta`` is given; must be > 0 (no silent no-op default).
        beta (float, optional): Class-balanced weights instead.
        mode (str): ``'exps'`` (default), ``'probs'`` or ``'logits'``.
        renorm (bool): Renormalize per proposal. Defaults to True.
    """

    def __init__(self,
                 category_stats=None,
                 gamma: Optional[float] = None,
                 beta: Optional[float] = None,
                 mode: str = 'exps',
                 renorm: bool = True) -> None:
        if mode not in NORCAL_MODES:
            raise ValueError(f'NorCal mode must be one of {NORCAL_MODES}, '
                             f'got {mode!r}')
        super().__init__(category_stats)
        self.gamma, self.beta = gamma, beta
        self.mode, self.renorm = mode, bool(renorm)
        self._weights = norcal_weights(self.stats.image_count, gamma, beta)

    def rescore(self, cls_score: Tensor, scores: Tensor,
                layout: ClassifierLayout) -> Tensor:
        return calibrate(cls_score, scores, layout, self.weights_for(layout),
                         self.mode, self.renorm)


@MODELS.register_module()
class LogitAdjustment(_CountsScorer):
    """Post-hoc logit adjustment (Menon et al., ICLR 2021):
    ``z_c - τ log π_c`` on the class logits, then the head's own
    normalization (see the module docstring).

    Args:
        category_stats: Training statistics; ``π_c = N_c / Σ N_k`` from the
            image counts.
        tau (float): Required, non-zero (Menon et al.: 1).
    """

    def __init__(self, category_stats=None,
                 tau: Optional[float] = None) -> None:
        super().__init__(category_stats)
        self.tau = tau
        self._weights = logit_adjustment_weights(self.stats.image_count, tau)

    def rescore(self, cls_score: Tensor, scores: Tensor,
                layout: ClassifierLayout) -> Tensor:
        return calibrate(cls_score, scores, layout, self.weights_for(layout),
                         'exps', True)
