"""The classification-loss protocol of mmlongtail, written once.

Every classification loss of the package builds on this module:

* **Input checks.** One function per kind of input, one exception type per
  kind of error: ``ValueError`` for a bad ``cls_score`` shape, bad labels
  (shape, dtype or range), bad ``label_weights``, an unknown ``reduction``
  and a ``num_classes`` that is not a positive int or disagrees with the
  head (``check_num_classes``, re-exported here, is the package's only
  ``num_classes`` check; it lives with the category statistics, the lowest
  floor that needs it).
* **The classifier protocol of mmdet's** ``BBoxHead``:
  ``custom_cls_channels`` / ``custom_activation`` / ``custom_accuracy`` and
  ``get_cls_channels`` / ``get_activation`` / ``get_accuracy``, in
  :class:`ClassifierProtocol`. A loss describes its output rows once, in
  ``_layout``, and the channel count comes from that description.
* **The layout.** :class:`ClassifierLayout` says which output row of
  ``fc_cls`` is which class, which rows are background / objectness /
  "others" and how the rows fall into softmax groups (BAGS): everything a
  reader of a checkpoint needs. Heads, hooks and the analysis ask
  :func:`loss_layout` (or the loss) and keep no table of their own.

Adding a loss: one file defining a class that inherits
:class:`~mmlongtail.models.losses.frame.ClassificationLoss` (after
:class:`SigmoidClassifierProtocol` for a ``C``-channel sigmoid classifier)
and implements ``_loss`` and ``_layout`` (and ``_activation`` unless
sigmoid), one import line in ``mmlongtail/models/losses/__init__.py`` and
one entry in ``tests/models/losses/test_loss_contract.py``.
"""
import enum
import weakref
from dataclasses import dataclass
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import numpy as np
import torch
import torch.nn as nn
from mmdet.models.losses.accuracy import accuracy
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import DefaultScope
from torch import Tensor
from torch.nn.modules.module import register_module_module_registration_hook

from mmlongtail.datasets.category_stats import check_num_classes  # noqa: F401

#: Reductions a loss accepts.
REDUCTIONS = ('none', 'mean', 'sum')


# ----------------------------------------------------------------------------
# input checks
def check_reduction(reduction: str, owner: str) -> str:
    """Return ``reduction`` or raise ``ValueError`` unless none/mean/sum."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{owner}: reduction must be 'none', 'mean' or "
                         f"'sum', got {reduction!r}")
    return reduction


def check_cls_score(cls_score: Tensor,
                    num_outputs: int,
                    owner: str,
                    what: str = '',
                    batched: bool = True) -> None:
    """Raise ``ValueError`` unless ``cls_score`` is ``(N, num_outputs)``.

    Args:
        cls_score (Tensor): Logits, expected shape ``(N, num_outputs)``.
        num_outputs (int): Expected channels.
        owner (str): Named in the message.
        what (str): How the channels are laid out, e.g. ``'C + 2 rows'``.
        batched (bool): Require exactly two dimensions; otherwise only the
            last dimension is checked (``(..., num_outputs)``).
    """
    got = cls_score.size(-1) if cls_score.dim() else None
    if got != num_outputs or (batched and cls_score.dim() != 2):
        layout = f' ({what})' if what else ''
        shape = f'(N, {num_outputs})' if batched else f'(..., {num_outputs})'
        raise ValueError(
            f'{owner}: cls_score has {got} channels, expected {num_outputs} '
            f'channels{layout}: cls_score must be {shape}, got {got} '
            f'channels in shape {tuple(cls_score.shape)}')


def check_labels(labels: Tensor, num: int, num_classes: int,
                 owner: str) -> None:
    """Raise ``ValueError`` unless ``labels`` is ``(num,)`` integer in
    ``[0, num_classes]`` (``num_classes`` is background).

    On CPU the range check names the offending labels. On an accelerator it
    uses ``torch._assert_async`` so that it does not synchronize the device
    (a failure then surfaces as a device-side assert at the next sync).
    """
    if labels.dim() != 1 or labels.size(0) != num:
        raise ValueError(f'{owner}: labels must have shape ({num},), got '
                         f'{tuple(labels.shape)}')
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f'{owner}: labels must be an integer tensor, got '
                         f'{labels.dtype}')
    if labels.numel() == 0:
        return
    valid = (labels >= 0) & (labels <= num_classes)
    message = (f'{owner}: labels must lie in [0, {num_classes}] '
               f'(num_classes={num_classes}, {num_classes} is background)')
    if labels.device.type == 'cpu':
        if not bool(valid.all()):
            bad = labels[~valid].unique().tolist()[:8]
            raise ValueError(f'{message}, got {bad}')
    else:
        torch._assert_async(valid.all(), message)


def check_label_weights(label_weights: Optional[Tensor], num: int,
                        owner: str) -> None:
    """Raise ``ValueError`` unless ``label_weights`` is None or ``(num,)``."""
    if label_weights is not None and tuple(label_weights.shape) != (num, ):
        raise ValueError(f'{owner}: label_weights must have shape ({num},), '
                         f'got {tuple(label_weights.shape)}')


def empty_loss(cls_score: Tensor, reduction: str, none_shape: tuple) -> Tensor:
    """Loss of an empty batch: zeros connected to the graph (no NaN)."""
    if reduction == 'none':
        return cls_score.new_zeros(none_shape) + cls_score.sum() * 0
    return cls_score.sum() * 0


# ----------------------------------------------------------------------------
# the layout
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
    """
    SOFTMAX = 'softmax'
    SEESAW = 'seesaw'
    SIGMOID = 'sigmoid'
    SIGMOID_OBJECTNESS = 'sigmoid_objectness'
    GUMBEL = 'gumbel'
    GROUP_SOFTMAX = 'group_softmax'

    @property
    def independent(self) -> bool:
        """The class scores are independent binary probabilities."""
        return self in (ScoringFamily.SIGMOID,
                        ScoringFamily.SIGMOID_OBJECTNESS,
                        ScoringFamily.GUMBEL)


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
        C, O = self.num_classes, self.num_outputs
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


# ----------------------------------------------------------------------------
# the classifier protocol
class ClassifierProtocol:
    """mmdet's ``BBoxHead`` classifier protocol, written once.

    ``BBoxHead`` reads ``custom_cls_channels`` / ``custom_activation`` /
    ``custom_accuracy``, sizes ``fc_cls`` with :meth:`get_cls_channels`,
    scores test-time predictions with :meth:`get_activation` (``(N, C + 1)``
    probabilities, background last) and logs :meth:`get_accuracy`.

    A subclass sets ``num_classes`` (or leaves it None when the head brings
    it, as :class:`~mmlongtail.models.losses.FocalLoss` in dense heads) and
    implements:

    * ``_layout(num_classes) -> ClassifierLayout``: its output rows;
    * ``_activation(cls_score) -> Tensor``: ``(N, O)`` logits to
      ``(N, C + 1)`` probabilities (the channel count is already checked).

    It may override ``get_accuracy`` (default: top-1 accuracy of the
    arg-max of :meth:`get_activation` over ``C + 1`` outcomes).
    """
    custom_cls_channels = True
    custom_activation = True
    custom_accuracy = True
    num_classes: Optional[int] = None
    reduction: str = 'mean'

    def _layout(self, num_classes: int) -> ClassifierLayout:
        raise NotImplementedError(
            f'{type(self).__name__} must describe its output rows in '
            '_layout(num_classes)')

    def _activation(self, cls_score: Tensor) -> Tensor:
        raise NotImplementedError(
            f'{type(self).__name__} must implement _activation(cls_score)')

    def classifier_layout(self,
                          num_classes: Optional[int] = None
                          ) -> ClassifierLayout:
        """The layout of this loss's classifier.

        Args:
            num_classes (int, optional): The head's ``C``; checked against
                the loss's own when both are set.

        Raises:
            ValueError: Neither is set, or they disagree (naming both).
        """
        owner = type(self).__name__
        if self.num_classes is None:
            if num_classes is None:
                raise ValueError(
                    f'{owner} was built without num_classes: pass the '
                    "head's num_classes to classifier_layout")
            num = check_num_classes(num_classes, owner)
        else:
            num = check_num_classes(self.num_classes, owner, num_classes)
        cache = self.__dict__.setdefault('_layout_cache', {})
        if num not in cache:
            cache[num] = self._layout(num)
        return cache[num]

    def get_cls_channels(self, num_classes: int) -> int:
        """Classifier outputs for ``num_classes`` classes (from the
        layout)."""
        return self.classifier_layout(num_classes).num_outputs

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Scores from logits.

        Args:
            cls_score (Tensor): Logits, shape ``(N, O)``.

        Returns:
            Tensor: ``(N, C + 1)`` probabilities, background last.
        """
        if self.num_classes is not None:
            layout = self.classifier_layout()
            check_cls_score(cls_score, layout.num_outputs,
                            type(self).__name__, layout.describe(),
                            batched=False)
        return self._activation(cls_score)

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """Top-1 accuracy of the arg-max of :meth:`get_activation`."""
        return dict(acc=accuracy(self.get_activation(cls_score), labels))

    def resolve_reduction(self, reduction_override: Optional[str]) -> str:
        """The reduction of one call: ``reduction_override`` (asserted to be
        None, 'none', 'mean' or 'sum', as mmdet's losses do) or the loss's
        own ``reduction``."""
        assert reduction_override in (None, ) + REDUCTIONS, \
            f'reduction_override must be None or one of {REDUCTIONS}, got ' \
            f'{reduction_override!r}'
        return reduction_override or self.reduction

    def check_inputs(self, cls_score: Tensor, labels: Tensor,
                     label_weights: Optional[Tensor]) -> None:
        """The forward checks of an RoI classification loss: ``cls_score``
        ``(N, O)``, labels ``(N,)`` integers in ``[0, C]``,
        ``label_weights`` None or ``(N,)``; each raises ``ValueError``."""
        owner = type(self).__name__
        layout = self.classifier_layout()
        check_cls_score(cls_score, layout.num_outputs, owner,
                        layout.describe())
        check_labels(labels, cls_score.size(0), layout.num_classes, owner)
        check_label_weights(label_weights, cls_score.size(0), owner)


def host_is_dense_head(host: nn.Module) -> Optional[bool]:
    """True for an mmdet dense head (``BaseDenseHead``), False for an R-CNN
    ``BBoxHead``, None for any other module."""
    from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    if isinstance(host, BaseDenseHead):
        return True
    if isinstance(host, BBoxHead):
        return False
    return None


#: Losses waiting for the head that registers them (weak: a loss that is
#: never put in a module is freed as usual).
_UNPLACED: 'weakref.WeakSet[nn.Module]' = weakref.WeakSet()
_REGISTRATION_HOOK: List[Any] = []


def _on_module_registration(parent: nn.Module, name: str,
                            child: nn.Module) -> None:
    """torch's global module-registration hook: tell an unplaced loss which
    module it was assigned to (``parent.<name> = child``)."""
    if child in _UNPLACED and child.host_registered(parent):
        _UNPLACED.discard(child)
    if not _UNPLACED and _REGISTRATION_HOOK:
        _REGISTRATION_HOOK.pop().remove()


def watch_host(loss: nn.Module) -> None:
    """Call ``loss.host_registered(head)`` when a head assigns ``loss`` as a
    submodule (``self.loss_cls = MODELS.build(loss_cls)`` in every mmdet
    head).

    Uses torch's public ``register_module_module_registration_hook``, which
    ``nn.Module.__setattr__`` calls with ``(parent, name, child)`` for every
    submodule it registers. The hook is installed only while some loss is
    waiting for its head and removes itself afterwards; it does nothing for
    any other module. A loss that is never placed in a head (a loss used on
    its own) keeps the ``BBoxHead`` protocol.
    """
    _UNPLACED.add(loss)
    if not _REGISTRATION_HOOK:
        _REGISTRATION_HOOK.append(
            register_module_module_registration_hook(_on_module_registration))


def sigmoid_targets(labels: Tensor, num_classes: int) -> Tensor:
    """``(N,)`` labels in ``[0, C]`` -> ``(N, C)`` one-hot integer targets of
    a sigmoid classifier: background (label ``C``) is the all-zero row.

    The one definition of that convention for every sigmoid loss; callers
    cast to the dtype they need.
    """
    one_hot = torch.nn.functional.one_hot(labels, num_classes + 1)
    return one_hot[:, :num_classes]


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


class SigmoidClassifierProtocol(ClassifierProtocol):
    """The protocol of a ``C``-channel sigmoid classifier (background =
    label ``C`` = all-zero target), e.g. EQL and focal loss.

    Such a loss fits two kinds of head, which score it differently:

    * an R-CNN ``BBoxHead`` sizes ``fc_cls`` with :meth:`get_cls_channels`
      and scores with :meth:`get_activation`, ``(N, C + 1)`` columns with a
      background column last (the ``BBoxHead`` protocol);
    * mmdet 3.3's dense heads (``AnchorHead``, ``AnchorFreeHead``: RetinaNet,
      ATSS, FCOS) size ``C`` outputs per anchor from ``use_sigmoid`` and,
      whenever the loss has ``custom_cls_channels``, score with
      ``loss_cls.get_activation`` and take *every* column it returns as a
      class. The ``BBoxHead`` protocol's background column would then be
      predicted as class ``C``. In a dense head the loss therefore leaves
      the ``BBoxHead`` protocol, and the head scores its ``C`` logits with a
      plain sigmoid: this layout's scoring without the background column.

    The loss learns which kind of head it is in when the head registers it
    as a submodule (:func:`watch_host`), so mmdet's stock configs need no
    flag. ``dense_head`` may still be given (``True`` / ``False``); it is
    then checked against the head, and a contradiction is refused at build.
    """
    #: A sigmoid loss: ``use_sigmoid`` must be True (``ClassificationLoss``).
    SIGMOID: Optional[bool] = True
    dense_head = False
    #: ``dense_head`` as the config gave it; None: chosen from the head.
    dense_head_declared: Optional[bool] = None

    def set_dense_head(self, dense_head: Optional[bool]) -> None:
        """Declare whether the loss sits in a dense head (see above).

        Args:
            dense_head (bool, optional): None: decided from the head that
                registers the loss (an R-CNN ``BBoxHead`` until then).
        """
        if dense_head is not None and not isinstance(dense_head, bool):
            raise ValueError(f'{type(self).__name__}: dense_head must be '
                             f'None, True or False, got {dense_head!r}')
        self.dense_head_declared = dense_head
        self._use_dense_layout(bool(dense_head))
        watch_host(self)

    def _use_dense_layout(self, dense: bool) -> None:
        self.dense_head = dense
        # instance attributes shadow the class's protocol flags
        self.custom_cls_channels = not dense
        self.custom_activation = not dense
        self.custom_accuracy = not dense

    def host_registered(self, host: nn.Module) -> bool:
        """Take the layout of the head that registered the loss.

        Args:
            host (nn.Module): The module the loss was assigned to.

        Returns:
            bool: Whether ``host`` is a head that decides the layout (a dense
            head or a ``BBoxHead``); other modules (containers) do not.

        Raises:
            ValueError: ``dense_head`` was given and contradicts the head.
        """
        dense = host_is_dense_head(host)
        if dense is None:
            return False
        declared = self.dense_head_declared
        if declared is not None and declared != dense:
            name = type(self).__name__
            if dense:
                raise ValueError(
                    f'{name} was built with dense_head=False (the R-CNN '
                    f'BBoxHead layout, C + 1 scores with a background '
                    f'column), but it is the loss_cls of '
                    f'{type(host).__name__}, a dense head, which would '
                    f'predict that background column as class '
                    f'{getattr(host, "num_classes", "C")}: drop dense_head '
                    'from the loss config (the layout follows the head)')
            raise ValueError(
                f'{name} was built with dense_head=True, but it is the '
                f'loss_cls of {type(host).__name__}, not a dense head, which '
                'needs the classifier protocol (C-channel fc_cls, sigmoid '
                'scores with a background column): drop dense_head from the '
                'loss config (the layout follows the head)')
        self._use_dense_layout(dense)
        return True

    def _layout(self, num_classes: int) -> ClassifierLayout:
        return ClassifierLayout.classes_first(
            type(self).__name__, num_classes, scoring=SIGMOID_SCORING,
            family=ScoringFamily.SIGMOID)

    def _activation(self, cls_score: Tensor) -> Tensor:
        return sigmoid_scores_with_background(cls_score)


# ----------------------------------------------------------------------------
# layouts of losses that do not implement the protocol
SOFTMAX_SCORING = 'softmax over C + 1; background last'

#: ``{loss class: fn(loss, num_classes) -> ClassifierLayout}`` for losses
#: from other packages that size the classifier themselves
#: (``custom_cls_channels``); the module owning the matching mmlongtail loss
#: registers it (e.g. mmdet's ``SeesawLoss`` in ``seesaw_loss.py``).
FOREIGN_LAYOUTS: Dict[type, Callable[[nn.Module, int], ClassifierLayout]] = {}


def register_foreign_layout(
        loss_type: type,
        fn: Callable[[nn.Module, int], ClassifierLayout]) -> None:
    """Describe the layout of another package's custom-channel loss."""
    FOREIGN_LAYOUTS[loss_type] = fn


def _build_loss(cfg: Mapping) -> nn.Module:
    """Build a loss config in mmdet's scope (``'mmlongtail.X'`` and mmdet's
    own names both resolve)."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MMDET_MODELS.build(dict(cfg))


def loss_layout(loss: Union[nn.Module, Mapping],
                num_classes: int,
                dense: bool = False) -> ClassifierLayout:
    """The layout of the classifier that a head builds for ``loss``.

    Args:
        loss (nn.Module | dict): A classification loss or its config (built
            in mmdet's scope).
        num_classes (int): The head's ``C``.
        dense (bool): The head is a dense (anchor / point) head, which sizes
            its classifier from ``use_sigmoid`` (``C`` if True, else
            ``C + 1``). Otherwise it is a ``BBoxHead``, which gives every
            loss without ``custom_cls_channels`` ``C + 1`` rows scored by
            softmax, background last (also for a sigmoid CE).

    Returns:
        ClassifierLayout: From the loss when it implements
        :class:`ClassifierProtocol`, else the head's default.

    Raises:
        ValueError: The loss sizes the classifier itself but nothing
            describes its rows.
    """
    if isinstance(loss, Mapping):
        loss = _build_loss(loss)
    name = type(loss).__name__
    if isinstance(loss, ClassifierProtocol):
        return loss.classifier_layout(num_classes)
    num_classes = check_num_classes(num_classes, name)
    if getattr(loss, 'custom_cls_channels', False):
        for cls in type(loss).__mro__:
            if cls in FOREIGN_LAYOUTS:
                return FOREIGN_LAYOUTS[cls](loss, num_classes)
        raise ValueError(
            f'{type(loss).__module__}.{name} sizes its classifier itself '
            '(custom_cls_channels) but does not describe its rows: derive it '
            'from mmlongtail.models.losses.protocol.ClassifierProtocol or '
            'register_foreign_layout for it')
    if dense and getattr(loss, 'use_sigmoid', False):
        return ClassifierLayout.classes_first(
            f'{name} (sigmoid)', num_classes, scoring=SIGMOID_SCORING,
            family=ScoringFamily.SIGMOID)
    return ClassifierLayout.classes_first(
        f'{name} (softmax)', num_classes, ('background', ),
        scoring=SOFTMAX_SCORING, family=ScoringFamily.SOFTMAX)


def head_layout(head: nn.Module) -> ClassifierLayout:
    """The layout a head's ``loss_cls`` gives its classifier (dense heads
    are recognized by ``use_sigmoid_cls``)."""
    return loss_layout(head.loss_cls, head.num_classes,
                       dense=hasattr(head, 'use_sigmoid_cls'))
