"""The classifier layout: which output row is which class, how test-time
scores come from the rows (:class:`ScoringFamily`), and the shared helpers
for those scores (one per activation and per background-column rule)."""
import enum
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

RowNames = Tuple[Tuple[str, Tuple[int, ...]], ...]


class ScoringFamily(enum.Enum):
    """How a classifier's test-time scores come from its rows: the typed
    fact that code dispatches on (score calibration, for one). The layout's
    ``scoring`` text describes the same thing for a reader and may be
    reworded freely.

    * ``SOFTMAX``: one softmax over ``C + 1`` rows, background last.
    * ``SEESAW``: softmax over the ``C`` class rows times P(objectness) of a
      two-way objectness softmax (rows ``C``, ``C + 1``).
    * ``SIGMOID``: one independent sigmoid per class row; the background
      column is ``1 - max_j p_j``.
    * ``SIGMOID_OBJECTNESS``: sigmoid per class row, possibly times
      ``1 - P(background)`` of a sigmoid background row (EQLv2, ECM).
    * ``GUMBEL``: ``exp(-exp(-z))`` per class row; the background column is
      ``1 - max_j p_j``.
    * ``GROUP_SOFTMAX``: softmaxes over groups of rows (BAGS).
    * ``APA``: ``(lambda e^{-kappa z} + 1)^{-1/lambda}`` per class row, with
      ``lambda`` and ``kappa`` learned in the loss; the background column
      is ``1 - max_j p_j``.
    """
    SOFTMAX = 'softmax'
    SEESAW = 'seesaw'
    SIGMOID = 'sigmoid'
    SIGMOID_OBJECTNESS = 'sigmoid_objectness'
    GUMBEL = 'gumbel'
    GROUP_SOFTMAX = 'group_softmax'
    APA = 'apa'


@dataclass(frozen=True)
class ClassifierLayout:
    """Which output row of a classifier is which class.

    Every one of the ``num_outputs`` rows is described exactly once: as the
    row of a foreground class (``class_rows``) or as a named extra row
    (``extra_rows``). Names used by the losses of this package:

    * ``'background'``: the row whose probability is P(background) (the
      ``C + 1``-th row of mmdet's softmax CE, EQLv2's objectness channel,
      Seesaw's second objectness logit, the BAGS background class);
    * ``'objectness'``: the row whose probability is P(foreground) (Seesaw's
      first objectness logit, the "others" row of the BAGS background group);
    * ``'others'``: the "others" row of each foreground BAGS group.

    Attributes:
        owner (str): The loss (or head kind) the layout belongs to.
        num_classes (int): ``C``.
        num_outputs (int): ``O``, the rows of ``fc_cls.weight``.
        class_rows (tuple[int]): ``(C,)``, the row of class ``j``.
        extra_rows (tuple): ``((name, rows), ...)`` for the other rows.
        groups (tuple[tuple[int]]): Softmax groups (BAGS): the rows of each
            group in order; empty when the classifier is one softmax or
            independent sigmoids.
        scoring (str): How test-time scores come from the rows (one line
            of free text for a reader).
        family (ScoringFamily, optional): The same as a typed value, which
            code dispatches on; None when the layout does not declare one
            (then nothing that needs it accepts the layout).
    """
    owner: str
    num_classes: int
    num_outputs: int
    class_rows: Tuple[int, ...]
    extra_rows: RowNames = ()
    groups: Tuple[Tuple[int, ...], ...] = ()
    scoring: str = ''
    family: Optional[ScoringFamily] = None

    def __post_init__(self) -> None:
        C, O = self.num_classes, self.num_outputs  # noqa: E741
        if self.family is not None and not isinstance(self.family,
                                                      ScoringFamily):
            raise ValueError(f'{self.owner} layout: family must be a '
                             f'ScoringFamily, got {self.family!r}')
        if len(self.class_rows) != C:
            raise ValueError(f'{self.owner} layout: {len(self.class_rows)} '
                             f'class rows for num_classes={C}')
        described = list(self.class_rows)
        for _, rows in self.extra_rows:
            described += list(rows)
        if sorted(described) != list(range(O)):
            raise ValueError(
                f'{self.owner} layout: the class and extra rows must '
                f'describe each of the {O} outputs exactly once, got '
                f'{sorted(described)}')
        grouped = [r for g in self.groups for r in g]
        if self.groups and sorted(grouped) != list(range(O)):
            raise ValueError(
                f'{self.owner} layout: the groups must cover each of the '
                f'{O} outputs exactly once')

    @classmethod
    def classes_first(cls,
                      owner: str,
                      num_classes: int,
                      extra: Sequence[str] = (),
                      scoring: str = '',
                      *,
                      family: ScoringFamily) -> 'ClassifierLayout':
        """The common layout: rows ``0 .. C - 1`` are the classes in label
        order, then one row per name in ``extra``, scored as ``family``."""
        C = int(num_classes)
        return cls(
            owner=owner,
            num_classes=C,
            num_outputs=C + len(extra),
            class_rows=tuple(range(C)),
            extra_rows=tuple((name, (C + i, ))
                             for i, name in enumerate(extra)),
            scoring=scoring,
            family=family)

    def foreground_rows(self) -> np.ndarray:
        """``(C,)`` int64: the row of each foreground class."""
        return np.asarray(self.class_rows, dtype=np.int64)

    def rows(self, name: str) -> np.ndarray:
        """The extra rows called ``name`` (empty if the layout has none)."""
        for n, rows in self.extra_rows:
            if n == name:
                return np.asarray(rows, dtype=np.int64)
        return np.zeros(0, dtype=np.int64)

    @property
    def extra(self) -> Dict[str, Tuple[int, ...]]:
        """``{name: rows}`` of the extra rows."""
        return dict(self.extra_rows)

    def check_outputs(self, num_outputs: int, what: str = 'fc_cls') -> None:
        """Raise ``ValueError`` naming both numbers unless ``what`` has
        :attr:`num_outputs` rows."""
        if int(num_outputs) != self.num_outputs:
            raise ValueError(
                f'{what} has {num_outputs} outputs, but {self.owner} lays '
                f'out {self.num_outputs} for num_classes={self.num_classes} '
                f'({self.describe()})')

    def describe(self) -> str:
        """One line: ``O`` in terms of ``C`` and the extra rows."""
        extra = self.num_outputs - self.num_classes
        names = ', '.join(f'{n} {list(r)}' if len(r) <= 3 else
                          f'{n} ({len(r)} rows)' for n, r in self.extra_rows)
        text = f'C + {extra}' if extra else 'C'
        return f'{text} rows: classes, {names}' if names else \
            f'{text} rows: classes'




def with_max_background(prob: Tensor) -> Tensor:
    """``(N, C)`` independent class probabilities -> ``(N, C + 1)`` scores.

    The one background-column rule of classifiers without a background
    output (sigmoid, Gumbel): the last column is ``1 - max_j p_j``, so the
    arg-max over the ``C + 1`` columns predicts background exactly when no
    class probability exceeds 0.5. mmdet drops that column before NMS, so it
    never affects detections.
    """
    if prob.shape[0] == 0:
        bg = prob.new_zeros((0, 1))
    else:
        bg = 1 - prob.max(dim=1, keepdim=True).values
    return torch.cat([prob, bg], dim=1)


def sigmoid_scores_with_background(cls_score: Tensor) -> Tensor:
    """``(N, C)`` logits of a sigmoid classifier -> ``(N, C + 1)`` scores:
    the per-class sigmoid probabilities, then :func:`with_max_background`'s
    column (scoring family ``SIGMOID``)."""
    return with_max_background(cls_score.sigmoid())


def sigmoid_scores_times_objectness(cls_score: Tensor) -> Tensor:
    """``(N, C + 1)`` sigmoid logits, the last a background row -> ``(N, C +
    1)`` scores: ``sigmoid(z_c) (1 - sigmoid(z_bg))`` for the classes, then
    ``sigmoid(z_bg)`` (scoring family ``SIGMOID_OBJECTNESS``; the one
    test-time activation of EQLv2 and ECM)."""
    prob = cls_score.sigmoid()
    return torch.cat([prob[:, :-1] * (1 - prob[:, -1:]), prob[:, -1:]], 1)


SIGMOID_SCORING = 'sigmoid per class; background column 1 - max_j p_j'


SOFTMAX_SCORING = 'softmax over C + 1; background last'
