"""The classification-loss protocol of mmlongtail, written once.

Every classification loss of the package builds on it. The code lives in one
module per idea, :mod:`.checks`, :mod:`.layout` and :mod:`.classifier`; this
module gathers their names, and every importer uses it:

* **Input checks** (:mod:`.checks`). One function per kind of input, one
  exception type per kind of error: ``ValueError`` for a bad ``cls_score``
  shape, bad labels (shape, dtype or range), bad ``label_weights``, an
  unknown ``reduction`` and a ``num_classes`` that is not a positive int or
  disagrees with the head (``check_num_classes``, re-exported here, is the
  package's only ``num_classes`` check; it lives with the category
  statistics, the lowest floor that needs it).
* **The classifier protocol of mmdet's** ``BBoxHead`` (:mod:`.classifier`):
  ``custom_cls_channels`` / ``custom_activation`` / ``custom_accuracy`` and
  ``get_cls_channels`` / ``get_activation`` / ``get_accuracy``, in
  :class:`ClassifierProtocol`. A loss describes its output rows once, in
  ``_layout``, and the channel count comes from that description.
* **The layout** (:mod:`.layout`). :class:`ClassifierLayout` says which
  output row of ``fc_cls`` is which class, which rows are background /
  objectness / "others" and how the rows fall into softmax groups (BAGS):
  everything a reader of a checkpoint needs. Heads, hooks and the analysis
  ask :func:`loss_layout` (or the loss) and keep no table of their own.

Adding a loss: one file defining a class that inherits
:class:`~mmlongtail.models.losses.frame.ClassificationLoss` (after
:class:`SigmoidClassifierProtocol` for a ``C``-channel sigmoid classifier)
and implements ``_loss`` and ``_layout`` (and ``_activation`` unless
sigmoid), one import line in ``mmlongtail/models/losses/__init__.py`` and
one entry in ``tests/models/losses/test_loss_contract.py``.
"""
from .checks import (REDUCTIONS, check_cls_score,  # noqa: F401
                     check_label_weights, check_labels, check_num_classes,
                     check_reduction, empty_loss, sigmoid_target_mask,
                     sigmoid_targets)
from .classifier import (FOREIGN_LAYOUTS, QUERY_LOSS_HINT,  # noqa: F401
                         ClassifierProtocol, SigmoidClassifierProtocol,
                         activation_is_sigmoid, binary_encoder_targets,
                         bind_match_costs, class_probability_fn,
                         head_layout, host_is_dense_head,
                         host_is_query_head, host_kind,
                         loss_layout,
                         register_foreign_layout, unwatch_host,
                         watch_host)
from .layout import (SIGMOID_SCORING, SOFTMAX_SCORING,  # noqa: F401
                     ClassifierLayout, RowNames, ScoringFamily,
                     sigmoid_scores_times_objectness,
                     sigmoid_scores_with_background, with_max_background)
