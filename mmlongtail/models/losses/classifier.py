"""mmdet's classifier protocol as mixins for the losses, the head a loss
learns it sits in, and the layout lookup for any head's loss."""
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import torch
import torch.nn as nn
from mmdet.models.losses.accuracy import accuracy
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import DefaultScope
from torch import Tensor
from torch.nn.modules.module import register_module_module_registration_hook

from .checks import (REDUCTIONS, check_cls_score, check_label_weights,
                     check_labels, check_num_classes)
from .layout import (SIGMOID_SCORING, SOFTMAX_SCORING, ClassifierLayout,
                     ScoringFamily, sigmoid_scores_with_background)

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

    def class_probabilities(self, cls_score: Tensor) -> Tensor:
        """Per-class probabilities of a head with ``C`` outputs and no
        background column (dense and query-based heads): the activation
        that such a head scores, and matches, with.

        Args:
            cls_score (Tensor): ``(..., C)`` logits.

        Returns:
            Tensor: ``(..., C)`` probabilities.

        Raises:
            ValueError: The loss's classifier has no ``C``-output form.
        """
        raise ValueError(
            f'{type(self).__name__} lays out '
            f'{self.classifier_layout(self.num_classes).describe()}; it has '
            'no C-output form with per-class probabilities, which dense and '
            'query-based heads score with')

    # ------------------------------------------------ query-head mode
    #: Set when a query-based head (mmdet's ``DETRHead`` family) registers
    #: the loss: ``C`` outputs, background = label ``C`` = all-zero target.
    query_head = False

    def query_head_refusal(self, host: nn.Module) -> Optional[str]:
        """Why this loss cannot be the ``loss_cls`` of the query-based head
        ``host`` (None when it can).

        A query head (``DETRHead``, ``DeformableDETRHead``, ``DINOHead``)
        sizes ``C`` outputs from ``use_sigmoid``, gives unmatched queries
        the all-zero target and matches and scores with per-class
        probabilities (:meth:`class_probabilities`). The default refuses a
        loss without that ``C``-output form, naming its layout; a loss
        gives its own reason in ``QUERY_HEAD_REFUSAL`` (or overrides
        this).
        """
        own = getattr(self, 'QUERY_HEAD_REFUSAL', None)
        if own:
            return own
        if getattr(self, 'KEEPS_CLASS_STATISTICS', False) and \
                binary_encoder_targets(host):
            return ('its per-class gradient statistics would count every '
                    'encoder proposal of this two-stage Deformable DETR as '
                    'class 0 (mmdet trains the encoder on labels all set to '
                    '0, a foreground score in channel 0); use DINOHead, '
                    'whose encoder is trained on the real classes, or '
                    'as_two_stage=False')
        if type(self).class_probabilities is \
                ClassifierProtocol.class_probabilities or \
                not getattr(self, 'use_sigmoid', False):
            layout = self.classifier_layout(
                self.num_classes or getattr(host, 'num_classes', None))
            return (f'it lays out {layout.describe()}'
                    ', not the C sigmoid outputs (background = all-zero '
                    'target) a query head trains, matches and scores with')
        return None

    def enter_query_head(self, host: nn.Module) -> None:
        """Take the query-head mode of ``host`` (see
        :meth:`query_head_refusal`) and bind the head's
        ``mmlongtail.LossActivationCost`` match costs to this loss.

        Raises:
            ValueError: The loss cannot work in a query head (naming what to
                use instead), or the head's assigner scores classes with a
                sigmoid (mmdet's ``FocalLossCost``) while this loss's
                activation is another.
        """
        name = type(self).__name__
        reason = self.query_head_refusal(host)
        if reason:
            raise ValueError(
                f'{name} is the loss_cls of {type(host).__name__}, a '
                f'query-based (DETR-family) head, but it cannot work there: '
                f'{reason}. {QUERY_LOSS_HINT}')
        self.query_head = True
        self.__dict__.pop('_layout_cache', None)  # the layout may change
        bind_match_costs(host, self)

    def get_accuracy(self, cls_score: Tensor,
                     labels: Tensor) -> Dict[str, Tensor]:
        """Top-1 accuracy of the arg-max of :meth:`get_activation`."""
        return dict(acc=accuracy(self.get_activation(cls_score), labels))

    def host_registered(self, host: nn.Module) -> bool:
        """Called when a head registers the loss (:func:`watch_host`): a
        query-based head puts it in the query-head mode (or refuses it);
        other heads keep the loss's own protocol.

        Returns:
            bool: Whether ``host`` is a head (not a container).
        """
        kind = host_kind(host)
        if kind == 'query':
            self.enter_query_head(host)
        return kind is not None

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


#: What to use in a query-based head instead of a loss that cannot work
#: there (named by every refusal).
QUERY_LOSS_HINT = (
    "In a query-based head use a C-output sigmoid loss: "
    "dict(type='mmlongtail.FederatedLoss') (LVIS's federated sigmoid CE), "
    "dict(type='mmlongtail.EQLv2Loss') (gradient-balanced sigmoid CE) or "
    "dict(type='mmlongtail.FocalLoss') (DINO's own loss); EQLLoss, "
    "GumbelLoss, EqualizedFocalLoss, BalancedSoftmaxLoss(use_sigmoid=True) "
    "and ClassBalancedLoss around one of them also fit")


def host_is_query_head(host: nn.Module) -> bool:
    """True for a query-based head of mmdet: ``DETRHead`` and its
    subclasses (``DeformableDETRHead``, ``DINOHead``, ...)."""
    from mmdet.models.dense_heads import DETRHead
    return isinstance(host, DETRHead)


def binary_encoder_targets(host: nn.Module) -> bool:
    """Whether ``host`` trains its encoder proposals on labels all set to 0
    (mmdet's two-stage ``DeformableDETRHead``; ``DINOHead`` uses the real
    classes)."""
    from mmdet.models.dense_heads import DeformableDETRHead, DINOHead
    return (isinstance(host, DeformableDETRHead)
            and not isinstance(host, DINOHead)
            and bool(getattr(host, 'as_two_stage', False)))


def host_kind(host: nn.Module) -> Optional[str]:
    """The kind of head ``host`` is, as the losses' layout follows it:
    ``'query'`` (``DETRHead`` family), ``'dense'`` (``BaseDenseHead``),
    ``'roi'`` (R-CNN ``BBoxHead``), None for any other module."""
    if host_is_query_head(host):
        return 'query'
    dense = host_is_dense_head(host)
    if dense is None:
        return None
    return 'dense' if dense else 'roi'


def class_probability_fn(loss: nn.Module) -> Callable[[Tensor], Tensor]:
    """The rule that turns ``(..., C)`` logits of a head without a
    background output (dense or query-based) into per-class probabilities,
    as ``loss`` trains them: the one owner that the query heads' scoring and
    :class:`~mmlongtail.models.task_modules.LossActivationCost` both ask.

    An mmlongtail loss answers with its own ``class_probabilities`` (the
    sigmoid, or ``exp(-exp(-z))`` for ``GumbelLoss``; a layout without a
    ``C``-output form raises there, naming itself); another package's
    ``use_sigmoid=True`` loss (mmdet's ``FocalLoss``) is the sigmoid, as
    mmdet's ``DETRHead`` and ``FocalLossCost`` compute it.

    Raises:
        ValueError: Another package's loss with ``use_sigmoid=False`` (a
            softmax over ``C + 1``), which has no per-class form.
    """
    if isinstance(loss, ClassifierProtocol):
        return loss.class_probabilities
    if getattr(loss, 'use_sigmoid', False):
        return torch.sigmoid
    raise ValueError(
        f'{type(loss).__name__} (use_sigmoid=False) scores a softmax over '
        'C + 1 outputs; a head without a background output needs C '
        'per-class probabilities: use a sigmoid loss (e.g. '
        'mmlongtail.FocalLoss)')


def activation_is_sigmoid(loss: nn.Module, num_classes: int) -> bool:
    """Whether ``loss``'s per-class probabilities are the plain sigmoid of
    its logits (what mmdet's ``FocalLossCost`` and the DETR heads'
    ``predict`` compute themselves), from its layout's scoring family."""
    if not isinstance(loss, ClassifierProtocol):
        return bool(getattr(loss, 'use_sigmoid', False))
    family = loss.classifier_layout(num_classes).family
    return family in (ScoringFamily.SIGMOID, ScoringFamily.SIGMOID_OBJECTNESS)


def bind_match_costs(host: nn.Module, loss: nn.Module) -> None:
    """Bind every ``mmlongtail.LossActivationCost`` of ``host.assigner`` to
    ``loss`` (the head's ``loss_cls``) and refuse mmdet's sigmoid
    ``FocalLossCost`` next to a loss whose activation is not the sigmoid.

    mmdet's ``DETRHead.__init__`` builds ``self.assigner`` before
    ``self.loss_cls``, so the costs exist when the loss is registered.

    Raises:
        ValueError: A ``FocalLossCost`` (label input) matches with a sigmoid
            that ``loss`` does not train with.
    """
    from mmdet.models.task_modules.assigners.match_cost import FocalLossCost

    costs = getattr(getattr(host, 'assigner', None), 'match_costs', None)
    for cost in costs or ():
        # LossActivationCost says so by a class attribute: it imports this
        # module's class_probability_fn, so this module does not import it
        if getattr(cost, 'ASKS_LOSS_ACTIVATION', False):
            cost.bind(loss)
        elif (isinstance(cost, FocalLossCost)
              and not getattr(cost, 'binary_input', False)
              and not activation_is_sigmoid(loss, host.num_classes)):
            raise ValueError(
                f'{type(host).__name__}.assigner matches classes with '
                "mmdet's FocalLossCost, a sigmoid of the logits, but its "
                f'loss_cls {type(loss).__name__} trains (and scores) another '
                'activation, so queries would be matched with one '
                'probability and trained with another; replace it with '
                "dict(type='mmlongtail.LossActivationCost', weight="
                f'{cost.weight:g}, alpha={cost.alpha:g}, '
                f'gamma={cost.gamma:g}), which asks the loss')


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
    try:
        waiting = child in _UNPLACED
    except TypeError:  # a module that cannot be weakly referenced
        waiting = False
    if waiting and child.host_registered(parent):
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


def unwatch_host(loss: nn.Module) -> None:
    """Stop waiting for ``loss``'s head (a wrapper decided for it)."""
    _UNPLACED.discard(loss)


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

    A third kind, mmdet's query-based heads (``DETRHead``,
    ``DeformableDETRHead``, ``DINOHead``), also has ``C`` outputs and
    background = all-zero target; there the loss takes the query-head mode
    (:meth:`ClassifierProtocol.enter_query_head`): no ``BBoxHead``
    protocol, scores and matching from :meth:`class_probabilities`.

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

    def _use_dense_layout(self, dense: bool, query: bool = False) -> None:
        self.dense_head = dense
        # instance attributes shadow the class's protocol flags: a dense or
        # query head has C outputs and no background column
        flat = dense or query
        self.custom_cls_channels = not flat
        self.custom_activation = not flat
        self.custom_accuracy = not flat

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
        if host_is_query_head(host):
            if self.dense_head_declared is not None:
                raise ValueError(
                    f'{type(self).__name__} was built with dense_head='
                    f'{self.dense_head_declared}, but it is the loss_cls of '
                    f'{type(host).__name__}, a query-based (DETR-family) '
                    'head, whose layout it takes itself (C outputs, '
                    'background = all-zero target): drop dense_head from '
                    'the loss config')
            self.enter_query_head(host)
            self._use_dense_layout(False, query=True)
            return True
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

    def class_probabilities(self, cls_score: Tensor) -> Tensor:
        """``sigmoid`` of each of the ``C`` logits."""
        return cls_score.sigmoid()



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
