"""FRACAL, fractal calibration, as a test-time scorer (any checkpoint, from
the config).

Alexandridis et al., "Fractal Calibration for long-tailed object
detection", CVPR 2025 (arXiv:2410.11774); official code kostas1515/FRACAL,
``ConvFCFracalBBoxHead._predict_by_feat_single`` in
``mmdet/models/roi_heads/bbox_heads/fracal_bbox_head.py``.

Two per-class terms, from the training set's category statistics
(:func:`~mmlongtail.datasets.load_category_stats` with
``fractal_dimension=True``):

* a **frequency term** ``w_c``, a link function of the class's frequency
  plus the same link at the uniform prior ``1 / C`` (``variant``; the
  official ``get_frequency.py`` columns plus ``get_fracal_weights``'
  ``ptarget``). With ``n_c`` the images holding class ``c`` and ``M`` every
  image of the training file (``num_images_listed``), ``p_c = n_c / M``:

  ===========  =============================================================
  ``base10``   ``-log10 p_c + log10(1 / C)`` (the official default)
  ``base2``    ``-log2 p_c + log2(1 / C)``
  ``raw``      ``-ln p_c + ln(1 / C)``
  ``smooth``   ``ln((M + 1) / (n_c + 1)) + 1 - ln((C f + 1) / (f + 1)) + 1``
  ``prob``     ``ln((1 - p_c) / p_c) - ln(C - 1)``
  ``normit``   ``-Φ^{-1}(p_c) + Φ^{-1}(1 / C)``
  ``gombit``   ``-ln(-ln(1 - p_c)) + ln(-ln(1 - 1 / C))``
  ===========  =============================================================

  (``f = 300``, the official constant; ``smooth``'s prior term is the
  official ``-ln((C f + 1) / (f + 1)) + 1``, so the two ``+ 1`` add up).
  The ``*_obj`` variants use instance counts instead: ``n_c`` the
  instances of class ``c``, ``M`` all instances (and ``f = 1000`` in
  ``smooth_obj``). ``variant=None`` leaves out the
  frequency term (the official ``'None'``).
* the **fractal dimension** ``D_c`` of the class's box locations
  (:mod:`mmlongtail.datasets.fractal_dimension`), raised to ``λ``
  (``fractal_l``, official default 2): uniformly spread classes (``D_c``
  near 2) are down-weighted against classes seen in few places.

**Which heads, and what FRACAL means for each** (read from the typed scoring
family of the loss's :class:`~mmlongtail.models.losses.ClassifierLayout`):

* *softmax over C + 1* (background last), the official head:
  ``p_c ∝ softmax(z + w)_c / D_c^λ``, ``p_bg ∝ softmax(z + w)_bg`` (the
  background gets ``w = 0`` and ``D = 1``), renormalized per proposal;
  i.e. ``softmax(z_c + w_c - λ ln D_c, z_bg)``. Equal to the official code.
* *independent per-class scores*, family ``SIGMOID`` (the official code's
  sigmoid branch, a C-channel sigmoid classifier) and ``GUMBEL``:
  ``s'_c = s_c · g(z_c + w_c + φ_c)`` with the head's own link ``g``
  (sigmoid; ``exp(-exp(-x))`` for Gumbel, as the official code applies the
  loss's activation), ``s_c`` the scores the scorer receives
  (``g(z_c)`` as first scorer, as the official code) and the fractal
  logit ``φ_c = -log10(D_c^λ / Σ_k D_k^λ) + log10(1 / C)``. The background
  column is kept. The official paper pairs ``normit`` with sigmoid and
  ``gombit`` with Gumbel heads; any variant is accepted.
* *Seesaw* (``C + 2``): the softmax rule on Seesaw's class softmax (no
  background row), ``q_c ∝ softmax(z + w)_c / D_c^λ`` renormalized over the
  classes, times the unchanged ``P(foreground)``; ``P(bg)`` is kept. This
  is ours (the official code would fail on the ``C + 2`` logits): the
  method's rule on the distribution over classes, the objectness left as
  Seesaw scores it, as :class:`~mmlongtail.models.scorers.NorCal` does.
  The constant prior term cancels here.

Refused, with a ``ValueError`` naming the loss: ``SIGMOID_OBJECTNESS``
(EQLv2, ECM: the class score carries a separate background factor, and the
official rule ``g(z) · g(z + w + φ)`` has no stated meaning for it; use
:class:`~mmlongtail.models.scorers.NorCal`, whose binary form handles it)
and BAGS' group softmax.

Where we differ from the official code, deliberately: no ``device='cuda'``
(the terms follow the logits' device and dtype); the statistics come from
the category statistics, not CSVs read from the working directory; the
frequency term is computed in float64 (the official code casts it to
float32 and computes ``log10(1 / C)`` in float32, a difference of ~1e-7);
a class whose frequency term is not finite (no training image, except in
the ``smooth`` variants) is refused instead of giving NaN scores.
"""
import math
from typing import Optional

import torch
from torch import Tensor

from mmlongtail.datasets.category_stats import (CategoryStats,
                                                load_category_stats)
from mmlongtail.models.losses.protocol import ClassifierLayout, ScoringFamily
from mmlongtail.registry import MODELS
from .base import TestTimeScorer
from .calibration import calibrate, calibration_family

#: The official frequency variants (``get_frequency.py`` columns).
FRACAL_VARIANTS = ('smooth', 'raw', 'prob', 'normit', 'gombit', 'base2',
                   'base10', 'smooth_obj', 'raw_obj', 'prob_obj',
                   'normit_obj', 'gombit_obj', 'base2_obj', 'base10_obj')

#: The official ``get_fracal_weights``' per-class count of the uniform
#: prior (any constant gives ``1 / C`` except in ``smooth``).
_PRIOR_COUNT = {False: 300.0, True: 1000.0}


def _prior(link: str, count: Tensor, total: Tensor) -> Tensor:
    """The official ``get_fracal_weights``' ``ptarget`` (float64)."""
    if link == 'smooth':
        return -torch.log((total + 1) / (count + 1)) + 1
    if link == 'raw':
        return -torch.log(total / count)
    if link == 'prob':
        return -torch.log((total - count) / count)
    if link == 'normit':
        return torch.special.ndtri(count / total)
    if link == 'gombit':
        return torch.log(-torch.log(1 - (count / total)))
    if link == 'base2':
        return -torch.log2(total / count)
    return -torch.log10(total / count)  # base10


def _link(link: str, count: Tensor, total: Tensor) -> Tensor:
    """The official ``get_frequency.py`` column ``link`` of counts
    ``count`` out of ``total`` (float64)."""
    p = count / total
    if link == 'smooth':
        return torch.log((total + 1) / (count + 1)) + 1
    if link == 'raw':
        return torch.log(total / count)
    if link == 'prob':
        return torch.log((total - count) / count)
    if link == 'normit':
        return -torch.special.ndtri(p)
    if link == 'gombit':
        return -torch.log(-torch.log(1 - p))
    if link == 'base2':
        return -torch.log2(p)
    return -torch.log10(p)  # base10


def frequency_term(stats: CategoryStats, variant: Optional[str]) -> Tensor:
    """FRACAL's ``(C,)`` float64 frequency term ``w_c`` (module docstring):
    the ``variant`` column of the official ``get_frequency.py`` plus
    ``get_fracal_weights``' uniform-prior term.

    Raises:
        ValueError: An unknown variant, statistics without
            ``num_images_listed`` (image variants), or a class whose term is
            not finite (e.g. no training image), naming the classes.
    """
    C = stats.num_classes
    if variant is None or variant == 'None':
        return torch.zeros(C, dtype=torch.float64)
    if variant not in FRACAL_VARIANTS:
        raise ValueError(f'FRACAL: variant must be one of {FRACAL_VARIANTS} '
                         f'or None, got {variant!r}')
    obj = variant.endswith('_obj')
    link = variant[:-4] if obj else variant
    if obj:
        count = torch.as_tensor(stats.instance_count, dtype=torch.float64)
        total = count.sum()
    else:
        stats.require_fractal_dimension('FRACAL')
        count = torch.as_tensor(stats.image_count, dtype=torch.float64)
        total = torch.tensor(float(stats.num_images_listed),
                             dtype=torch.float64)
    f = torch.full((C, ), _PRIOR_COUNT[obj], dtype=torch.float64)
    prior = _prior(link, f, f.sum())
    w = _link(link, count, total) + prior
    bad = torch.nonzero(~torch.isfinite(w)).view(-1).tolist()
    if bad:
        names = [stats.names[i] for i in bad[:10]]
        raise ValueError(
            f'FRACAL: variant {variant!r} is not finite for classes '
            f'{bad[:10]} ({names}) of {stats.source}: their counts are '
            f'{count[bad[:10]].long().tolist()} of {int(total)}. Use the '
            'statistics of the training set the model was trained on, or '
            "the 'smooth' variant, which is defined for unseen classes")
    return w


def fractal_logit(fractal_dimension: Tensor, fractal_l: float) -> Tensor:
    """The sigmoid branch's ``(C,)`` fractal term ``φ_c = -log10(D_c^λ /
    Σ_k D_k^λ) + log10(1 / C)``."""
    d = fractal_dimension.pow(fractal_l)
    C = fractal_dimension.numel()
    return -torch.log10(d / d.sum()) + math.log10(1 / C)


#: The per-class link ``g`` of each independent-score family.
_LINKS = {
    ScoringFamily.SIGMOID: torch.sigmoid,
    ScoringFamily.GUMBEL: lambda x: torch.exp(-torch.exp(-x)),
}


@MODELS.register_module()
class FRACAL(TestTimeScorer):
    """FRACAL (Alexandridis et al., CVPR 2025) as a test-time scorer; see
    the module docstring for the formulas and the heads it handles.

    Config delta on any two-stage detector with an mmlongtail RoI head::

        model = dict(
            roi_head=dict(type='mmlongtail.StandardRoIHead'),
            test_cfg=dict(rcnn=dict(score_calibration=[
                dict(type='mmlongtail.FRACAL', category_stats='lvis_v1',
                     variant='base10', fractal_l=2.0)])))

    Args:
        category_stats: Training statistics with fractal dimensions: the
            training annotation file (computed from its boxes), a stats JSON
            written by ``tools/extract_category_stats.py
            --fractal-dimension``, or ``'lvis_v1'`` (the packaged LVIS v1
            train statistics, whose fractal dimensions are the official
            repository's).
        variant (str, optional): The frequency term (module docstring).
            Defaults to ``'base10'`` (the official default); None: none.
        fractal_l (float): ``λ``, the exponent of the fractal dimension,
            >= 0. Defaults to 2.0 (the official default and LVIS configs).
    """

    def __init__(self,
                 category_stats=None,
                 variant: Optional[str] = 'base10',
                 fractal_l: float = 2.0) -> None:
        if category_stats is None:
            raise ValueError("FRACAL needs category_stats (e.g. 'lvis_v1' "
                             'or the training annotation file)')
        if isinstance(fractal_l, bool) or not isinstance(
                fractal_l, (int, float)) or not math.isfinite(fractal_l) \
                or fractal_l < 0:
            raise ValueError(f'FRACAL: fractal_l must be a finite number '
                             f'>= 0, got {fractal_l!r}')
        if variant in (None, 'None') and fractal_l == 0:
            raise ValueError('FRACAL with variant=None and fractal_l=0 '
                             'leaves every score unchanged')
        self.stats: CategoryStats = load_category_stats(
            category_stats, owner='FRACAL', fractal_dimension=True)
        self.variant, self.fractal_l = variant, float(fractal_l)
        self.frequency = frequency_term(self.stats, variant)
        fd = torch.as_tensor(self.stats.fractal_dimension,
                             dtype=torch.float64)
        #: softmax rule: log a_c = w_c - λ ln D_c
        self.log_weights = self.frequency - self.fractal_l * fd.log()
        #: sigmoid rule: shift w_c + φ_c of the class logits
        self.shift = self.frequency + fractal_logit(fd, self.fractal_l)

    def rescore(self, cls_score: Tensor, scores: Tensor,
                layout: ClassifierLayout) -> Tensor:
        self.stats.check_num_classes(layout.num_classes,
                                     f'the classifier of {layout.owner}')
        if layout.family is ScoringFamily.SIGMOID_OBJECTNESS:
            raise ValueError(
                f'FRACAL cannot score the classifier of {layout.owner} '
                f'({layout.scoring!r}, scoring family SIGMOID_OBJECTNESS): '
                'its class scores carry a separate background factor, for '
                'which FRACAL states no rule. Use mmlongtail.NorCal, whose '
                'binary form calibrates such heads')
        family = calibration_family(layout)
        if family in ('softmax', 'seesaw'):
            return calibrate(cls_score, scores, layout,
                             self.log_weights.exp(), 'exps', True)
        link = _LINKS.get(layout.family)
        if link is None:
            raise ValueError(
                f'FRACAL cannot score the classifier of {layout.owner} '
                f'({layout.scoring!r}, scoring family {layout.family.name}): '
                'FRACAL states its sigmoid rule for a fixed link (sigmoid, '
                f'Gumbel: {sorted(f.name for f in _LINKS)}), not for this '
                'one. Use mmlongtail.NorCal, whose binary form calibrates '
                'independent per-class scores')
        C = layout.num_classes
        shift = self.shift.to(device=cls_score.device, dtype=cls_score.dtype)
        cls = scores[:, :C] * link(cls_score[:, :C] + shift)
        return torch.cat([cls, scores[:, C:]], dim=1)
