"""Curriculum schedules of Dynamic Curriculum Learning (DCL), one owner.

Wang et al., "Dynamic Curriculum Learning for Imbalanced Data
Classification", ICCV 2019 (arXiv 1901.06783), Sec. 3. No official code.

* The **sampling scheduler** ``g(l)`` goes from 1 to 0 over training; the
  target class distribution is the training one raised to ``g(l)`` (``1``:
  imbalanced as sampled, ``0``: balanced). The paper's four forms, with
  ``t = l / L`` (``l`` the current epoch, ``L`` the expected total):

  - ``'convex'``:    ``g = cos(t * pi / 2)`` (the paper's best);
  - ``'linear'``:    ``g = 1 - t``;
  - ``'concave'``:   ``g = base ** l`` (``l`` in epochs, ``0 < base < 1``;
    it does not reach 0 at ``L``);
  - ``'composite'``: ``g = cos(t * pi) / 2 + 1 / 2``.

  (The paper names the cosine form "convex" for its slow-then-fast decay,
  although ``cos`` is concave on ``[0, pi/2]``; we keep the paper's names.)
  :class:`mmlongtail.datasets.ClassAwareSampler` uses ``g`` through
  ``progressive.shape``: its progress is ``1 - g``.

* The **loss scheduler** ``f(l)`` weights the metric-learning term against
  the classification term, ``L_DCL = L_cls + f(l) * L_TEA``:

  ``f(l) = cos(l / L * pi) / 2 + 1 / 2 + eps`` for ``l < p * L``, else
  ``eps``; ``p`` stops the metric-learning term early and ``eps`` keeps a
  small share of it afterwards.

Nothing here knows about runners; callers pass ``l`` and ``L``.
"""
import math
from typing import Optional

#: The forms of the sampling scheduler ``g`` (see the module docstring).
SAMPLING_SHAPES = ('linear', 'convex', 'concave', 'composite')


def check_shape(shape: str, base: Optional[float] = None) -> None:
    """Raise ``ValueError`` for an unknown ``shape`` or a concave ``base``
    outside ``(0, 1)``."""
    if shape not in SAMPLING_SHAPES:
        raise ValueError(f'DCL sampling schedule shape must be one of '
                         f'{SAMPLING_SHAPES}, got {shape!r}')
    if shape == 'concave':
        if isinstance(base, bool) or not isinstance(
                base, (int, float)) or not 0 < base < 1:
            raise ValueError("DCL sampling schedule 'concave' "
                             '(g = base ** l) needs 0 < base < 1, got '
                             f'base={base!r}')
    elif base is not None:
        raise ValueError(f"DCL sampling schedule: base is only for 'concave' "
                         f'(g = base ** l), got base={base!r} with '
                         f'shape={shape!r}')


def sampling_g(shape: str, step: float, total: float,
               base: Optional[float] = None) -> float:
    """DCL's sampling scheduler ``g(l)`` in ``[0, 1]``, from 1 to 0.

    Args:
        shape (str): One of :data:`SAMPLING_SHAPES`.
        step (float): ``l``, the training progress (epochs since the
            schedule began);
            clipped to ``[0, total]``.
        total (float): ``L``, the progress at which the schedule ends
            (> 0).
        base (float, optional): ``'concave'`` only: ``g = base ** l``.

    Returns:
        float: ``g(l)``.
    """
    check_shape(shape, base)
    if not total > 0:
        raise ValueError(f'DCL sampling schedule: total must be > 0, got '
                         f'{total!r}')
    step = min(max(float(step), 0.0), float(total))
    t = step / total
    if shape == 'linear':
        return 1.0 - t
    if shape == 'convex':
        return 0.0 if t == 1.0 else math.cos(t * math.pi / 2)
    if shape == 'composite':
        return 0.5 * math.cos(t * math.pi) + 0.5
    return float(base)**step


def loss_f(step: float, total: float, p: float, eps: float) -> float:
    """DCL's loss scheduler ``f(l)``: ``cos(l / L * pi) / 2 + 1 / 2 + eps``
    while ``l < p * L``, ``eps`` from then on.

    Args:
        step (float): ``l``, the training progress (epoch or iteration),
            ``>= 0``.
        total (float): ``L`` in the same unit (> 0).
        p (float): Fraction of training after which the metric-learning
            term keeps only ``eps``, in ``(0, 1]``.
        eps (float): The weight it keeps, ``>= 0``.

    Returns:
        float: ``f(l)``.
    """
    check_loss_schedule(p, eps)
    if not total > 0:
        raise ValueError(f'DCL loss schedule: total must be > 0, got '
                         f'{total!r}')
    if step < p * total:
        return 0.5 * math.cos(step / total * math.pi) + 0.5 + eps
    return float(eps)


def check_loss_schedule(p: float, eps: float) -> None:
    """Raise ``ValueError`` unless ``0 < p <= 1`` and ``eps >= 0``."""
    for name, v in (('p', p), ('eps', eps)):
        if isinstance(v, bool) or not isinstance(
                v, (int, float)) or not math.isfinite(v):
            raise ValueError(f'DCL loss schedule: {name} must be a finite '
                             f'number, got {v!r}')
    if not 0 < p <= 1:
        raise ValueError(f'DCL loss schedule: p (the fraction of training '
                         f'with the full metric-learning weight) must be in '
                         f'(0, 1], got {p!r}')
    if eps < 0:
        raise ValueError(f'DCL loss schedule: eps must be >= 0, got {eps!r}')
