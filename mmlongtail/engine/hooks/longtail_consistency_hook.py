"""Refuse a model whose class counts or classifier layout do not fit.

A long-tail run that trains the wrong number of classes, or whose loss lays
out its classifier channels in a way the head ignores, fails late (a shape
error deep in a loss) or not at all (silently wrong scores at test time).
:func:`check_longtail_consistency` checks before the first iteration and
names every number involved; :class:`LongTailConsistencyHook` runs it before
training, validation and testing. ``configs/_base_/default_runtime.py``
enables the hook by default.
"""
from typing import Dict, List, Optional, Sequence

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import MMLogger

from mmlongtail.models.losses.protocol import head_layout
from mmlongtail.registry import HOOKS
from mmlongtail.utils import unwrap_model

#: Heads that honour ``custom_cls_channels`` in mmdet 3.3 (they ask the loss
#: for their classifier width); named in the error message.
HONOURING_HEADS = ('Shared2FCBBoxHead', 'Shared4Conv1FCBBoxHead',
                   'ConvFCBBoxHead', 'BBoxHead')


#: Dense heads in which mmlongtail's ``C``-channel sigmoid losses train and
#: predict (tested in tests/models/test_dense_heads.py): each calls
#: ``loss_cls(cls_score (N, C), labels (N,), label_weights, avg_factor)``
#: and scores ``C`` sigmoid outputs per anchor or point.
DENSE_HEADS = ('RetinaHead', 'ATSSHead', 'FCOSHead')
#: The long-tail loss to name when a dense head's loss does not fit.
DENSE_LOSS_HINT = ('use mmlongtail.EqualizedFocalLoss (use_sigmoid=True), '
                   'the long-tail loss for dense heads '
                   '(mmlongtail.FocalLoss and EQLLoss also fit)')


def _is_proposal_head(name: str, module: nn.Module) -> bool:
    """RPN-like heads are class-agnostic (``num_classes=1``); skip them."""
    from mmdet.models.dense_heads import RPNHead
    return isinstance(module, RPNHead) or name.split('.')[-1] == 'rpn_head'


def _classifier_width(head: nn.Module) -> Optional[int]:
    """Output channels of a head's classifier, or None if not found."""
    fc_cls = getattr(head, 'fc_cls', None)
    if isinstance(fc_cls, nn.Linear):  # includes mmlongtail.NormedLinear
        return int(fc_cls.out_features)
    width = getattr(head, 'cls_out_channels', None)  # dense heads
    if isinstance(width, int):
        return width
    return None


def _class_count_owners(model: nn.Module) -> Dict[str, int]:
    """``{description: num_classes}`` of every classifying head and its
    loss.

    A head is a module with an integer ``num_classes`` and a ``loss_cls`` or
    ``loss_mask`` module (bbox heads, dense detection heads, mask heads,
    each stage of a Cascade); proposal heads are skipped.
    """
    found: Dict[str, int] = {}
    for name, module in model.named_modules():
        num = getattr(module, 'num_classes', None)
        if not isinstance(num, int) or isinstance(num, bool):
            continue
        has_loss = any(
            isinstance(getattr(module, k, None), nn.Module)
            for k in ('loss_cls', 'loss_mask'))
        if not has_loss or _is_proposal_head(name, module):
            continue
        found[f'{name or "model"}.num_classes ({type(module).__name__})'] = \
            num
        loss = getattr(module, 'loss_cls', None)
        loss_num = getattr(loss, 'num_classes', None)
        if isinstance(loss_num, int) and not isinstance(loss_num, bool):
            found[f'{name or "model"}.loss_cls.num_classes '
                  f'({type(loss).__name__})'] = loss_num
    return found


def _check_dense_heads(model: nn.Module) -> None:
    """mmlongtail's losses in dense heads, and ``dense_head`` losses
    elsewhere.

    A dense head takes an mmlongtail loss only if it is one of
    :data:`DENSE_HEADS`, the loss lays out exactly ``C`` sigmoid rows (no
    background, objectness or group rows), the head has ``C`` outputs
    (``use_sigmoid=True``) and the loss uses the dense layout (else mmdet
    scores the ``BBoxHead`` protocol's ``C + 1`` columns and predicts the
    background column as class ``C``). A loss with the dense layout sits in
    a dense head. The losses take their layout from the head that builds
    them and refuse a contradicting ``dense_head`` flag at build
    (``SigmoidClassifierProtocol``); this check is the second line, for
    losses put in place some other way.
    """
    from mmlongtail.models.losses.protocol import (ClassifierProtocol,
                                                   host_is_dense_head)
    for name, head in model.named_modules():
        loss = getattr(head, 'loss_cls', None)
        num = getattr(head, 'num_classes', None)
        if (not isinstance(loss, ClassifierProtocol)
                or not isinstance(num, int)
                or _is_proposal_head(name, head)):
            continue
        where = f'{name or "model"} ({type(head).__name__})'
        loss_name = type(loss).__name__
        if not host_is_dense_head(head):
            if getattr(loss, 'dense_head', False):
                raise ValueError(
                    f'{where} is not a dense head, but its loss_cls '
                    f'{loss_name} was built with dense_head=True, which '
                    'turns off the classifier protocol this head needs '
                    '(C-channel fc_cls, sigmoid scores); drop dense_head')
            continue
        refusal = getattr(loss, 'DENSE_HEAD_REFUSAL', None)
        if refusal:  # a loss that says why it cannot score in a dense head
            raise ValueError(
                f'{where} is a dense head, but its loss_cls {loss_name} '
                f'cannot be used there: {refusal}. In a dense head, '
                f'{DENSE_LOSS_HINT}')
        layout = loss.classifier_layout(num)
        if layout.num_outputs != num:
            raise ValueError(
                f'{where} is a dense head with C = {num} sigmoid outputs per '
                f'anchor, but its loss_cls {loss_name} lays out '
                f'{layout.describe()} ({layout.num_outputs} rows), which a '
                f'dense head cannot hold; {DENSE_LOSS_HINT}')
        if type(head).__name__ not in DENSE_HEADS:
            raise ValueError(
                f'{where}: mmlongtail\'s losses are tested in the dense '
                f'heads {", ".join(DENSE_HEADS)}, which call loss_cls on '
                '(N, C) logits with (N,) labels; this head is not one of '
                f'them. Use one of those heads, or mmdet\'s own loss here')
        if head.cls_out_channels != num:
            raise ValueError(
                f'{where} has {head.cls_out_channels} classifier outputs per '
                f'anchor, but its loss_cls {loss_name} lays out {num} for '
                f'num_classes={num}. Dense heads size their classifier from '
                'loss_cls.use_sigmoid alone (C if True, else C + 1); set '
                'use_sigmoid=True in the loss config')
        if not getattr(loss, 'dense_head', False):
            raise ValueError(
                f'{where}: set dense_head=True in its loss_cls {loss_name}. '
                'Without it the loss keeps the BBoxHead classifier protocol, '
                'and mmdet\'s dense heads then score its C + 1 columns '
                '(classes and a background column) and predict the '
                f'background column as class {num}')


def _check_query_heads(model: nn.Module) -> None:
    """mmlongtail's losses in query-based heads (mmdet's ``DETRHead``,
    ``DeformableDETRHead``, ``DINOHead``).

    Such a head takes an mmlongtail loss only if the loss has the
    ``C``-output query form (``query_head_refusal`` is None; Seesaw, BAGS,
    the softmax losses, EQL v2's siblings with an objectness row are
    refused with what to use), is in that mode (the head registered it),
    the head has ``C`` outputs, every ``mmlongtail.LossActivationCost`` of
    its assigner is bound to this loss, no stock ``FocalLossCost`` matches
    with a sigmoid the loss does not train with, and a head of mmdet's own
    (which scores with a plain sigmoid) holds only a sigmoid-activation
    loss. The losses refuse most of this at build; this check is the
    second line, for models put together some other way.
    """
    from mmdet.models.task_modules.assigners.match_cost import FocalLossCost

    from mmlongtail.models.losses.protocol import (QUERY_LOSS_HINT,
                                                   ClassifierProtocol,
                                                   activation_is_sigmoid,
                                                   host_is_query_head)
    from mmlongtail.models.task_modules import LossActivationCost
    for name, head in model.named_modules():
        loss = getattr(head, 'loss_cls', None)
        if not host_is_query_head(head) or \
                not isinstance(loss, ClassifierProtocol):
            continue
        where = f'{name or "model"} ({type(head).__name__})'
        loss_name = type(loss).__name__
        num = head.num_classes
        reason = loss.query_head_refusal(head)
        if reason:
            raise ValueError(
                f'{where} is a query-based head, but its loss_cls '
                f'{loss_name} cannot be used there: {reason}. '
                f'{QUERY_LOSS_HINT}')
        if not getattr(loss, 'query_head', False):
            raise ValueError(
                f'{where} is a query-based head, but its loss_cls '
                f'{loss_name} is not in the query-head mode (C outputs, '
                'background = all-zero target), which it takes when the '
                'head builds it; build it from the head\'s loss_cls config '
                'instead of assigning it afterwards')
        width = getattr(head, 'cls_out_channels', None)
        if width != num:
            raise ValueError(
                f'{where} has {width} classifier outputs, but its loss_cls '
                f'{loss_name} lays out {num} for num_classes={num}; DETR '
                'heads size their classifier from loss_cls.use_sigmoid '
                '(C if True): set use_sigmoid=True in the loss config')
        costs = getattr(getattr(head, 'assigner', None), 'match_costs', ())
        sigmoid = activation_is_sigmoid(loss, num)
        for cost in costs or ():
            if isinstance(cost, LossActivationCost) and cost.loss is not loss:
                raise ValueError(
                    f'{where}.assigner has a mmlongtail.LossActivationCost '
                    'that is not bound to this head\'s loss_cls '
                    f'{loss_name}; it binds itself when the head builds '
                    'the loss, so build the assigner and the loss from '
                    'the head\'s config')
            if (isinstance(cost, FocalLossCost) and not sigmoid
                    and not getattr(cost, 'binary_input', False)):
                raise ValueError(
                    f'{where}.assigner matches classes with mmdet\'s '
                    'FocalLossCost (a sigmoid), but its loss_cls '
                    f'{loss_name} trains another activation; use '
                    "dict(type='mmlongtail.LossActivationCost', weight="
                    f'{cost.weight:g}) instead')
        if not sigmoid and type(head).__module__.startswith('mmdet.'):
            raise ValueError(
                f'{where} scores its logits with a plain sigmoid at test '
                f'time, but its loss_cls {loss_name} trains another '
                'activation; use mmlongtail.LongTailDINOHead or '
                'mmlongtail.LongTailDeformableDETRHead, which score with '
                'the loss\'s class_probabilities')
        _check_dino_statistics_collectives(head, loss, where)


def _check_dino_statistics_collectives(head: nn.Module, loss: nn.Module,
                                       where: str) -> None:
    """A loss that all-reduces each call's gradient statistics (EQLv2,
    EFL) in mmdet's own ``DINOHead`` under a multi-rank process group:
    refused. That head skips ``loss_cls`` for the denoising part of a rank
    whose images have no boxes, so the ranks would make different numbers
    of collectives and pair them wrongly; ``LongTailDINOHead`` still calls
    the loss there (an empty call)."""
    from mmdet.models.dense_heads import DINOHead

    from mmlongtail.models.dense_heads.query_heads import LongTailDINOHead
    from mmlongtail.utils import dist as dist_utils
    if not isinstance(head, DINOHead) or isinstance(head, LongTailDINOHead):
        return
    synced = [m for m in loss.modules()
              if getattr(m, 'KEEPS_CLASS_STATISTICS', False)
              and getattr(m, 'use_distributed', False)]
    if synced and dist_utils.is_distributed():
        raise ValueError(
            f'{where} is mmdet\'s DINOHead, which does not call loss_cls '
            'for the denoising queries of a rank whose images have no '
            f'boxes, but {type(synced[0]).__name__} all-reduces the '
            'statistics of every call, so the ranks would pair their '
            'collectives wrongly; use '
            "type='mmlongtail.LongTailDINOHead' (same training, and it "
            'calls the loss there), or use_distributed=False in the loss')


def _check_ldam(model: nn.Module) -> None:
    """``mmlongtail.LDAMLoss`` only as the softmax loss of an R-CNN
    ``BBoxHead`` whose classifier is cosine with ``temperature`` equal to the
    loss's ``scale`` (its margins are in cosine units, ``s Delta_y`` in
    logits); refused in dense heads and as a sigmoid loss, naming what to
    use."""
    from mmlongtail.models.losses.ldam_loss import LDAMLoss
    from mmlongtail.models.losses.protocol import host_is_dense_head
    for name, head in model.named_modules():
        loss = getattr(head, 'loss_cls', None)
        if not isinstance(loss, LDAMLoss) or _is_proposal_head(name, head):
            continue
        where = f'{name or "model"} ({type(head).__name__})'
        if host_is_dense_head(head):
            raise ValueError(
                f'{where} is a dense head, but its loss_cls is LDAMLoss, a '
                'softmax over the C + 1 RoI classes of an R-CNN BBoxHead '
                f'(use it there); in a dense head {DENSE_LOSS_HINT}')
        if loss.use_sigmoid:
            raise ValueError(
                f'{where}: LDAMLoss has use_sigmoid=True, but it is a softmax '
                'loss over C + 1 outputs with no sigmoid form; drop '
                "use_sigmoid, or use dict(type='mmlongtail.EQLv2Loss') for a "
                'sigmoid classifier')
        fc_cls = getattr(head, 'fc_cls', None)
        if not isinstance(fc_cls, nn.Module):
            continue
        temperature = getattr(fc_cls, 'temperature', None)
        if temperature is None or float(temperature) != loss.scale:
            got = (f'a {type(fc_cls).__name__} without a temperature'
                   if temperature is None else
                   f'a {type(fc_cls).__name__} with temperature '
                   f'{temperature}')
            raise ValueError(
                f'{where}: LDAMLoss (scale={loss.scale}) needs a cosine '
                f'classifier scaled by {loss.scale}, its margins being in '
                f'cosine units, but fc_cls is {got}; set cls_predictor_cfg='
                "dict(type='mmlongtail.NormedLinear', temperature="
                f'{loss.scale:g}, bias=False) in the bbox head')


def _check_layouts(model: nn.Module) -> None:
    """A loss with ``custom_cls_channels`` must sit in a head that sizes its
    classifier to the loss's layout."""
    for name, head in model.named_modules():
        loss = getattr(head, 'loss_cls', None)
        num = getattr(head, 'num_classes', None)
        if (not isinstance(loss, nn.Module) or not isinstance(num, int)
                or not getattr(loss, 'custom_cls_channels', False)
                or _is_proposal_head(name, head)):
            continue
        width = _classifier_width(head)
        if width is None:
            continue
        expected = head_layout(head).num_outputs
        if width != expected and hasattr(head, 'use_sigmoid_cls'):
            raise ValueError(
                f'{name or "model"} ({type(head).__name__}) has '
                f'{width} classifier outputs per anchor, but its loss_cls '
                f'{type(loss).__name__} lays out {expected} channels for '
                f'num_classes={num} (custom_cls_channels). Dense heads size '
                'their classifier from loss_cls.use_sigmoid alone (C if '
                'True, else C + 1) and ignore the loss\'s channel layout; '
                f'use_sigmoid={head.use_sigmoid_cls} here. Set use_sigmoid in '
                'the loss config to match, or use a loss whose layout a dense '
                'head can hold')
        if width != expected:
            raise ValueError(
                f'{name or "model"} ({type(head).__name__}) has a classifier '
                f'with {width} outputs, but its loss_cls '
                f'{type(loss).__name__} lays out {expected} channels for '
                f'num_classes={num} (custom_cls_channels). '
                f'{type(head).__name__} sizes its classifier itself and '
                'ignores the loss\'s channel layout, so the loss would get '
                'the wrong logits (and predictions would be scored wrongly); '
                'use a head that honours custom_cls_channels, e.g. '
                f'{", ".join(HONOURING_HEADS)}')


def _check_cascades(model: nn.Module) -> None:
    """Cascade stages average their raw logits at test time, which the last
    stage then scores: every stage needs the same classifier layout (the
    same rows for the same classes, e.g. one BAGS ``bin_split``)."""
    for name, module in model.named_modules():
        heads = getattr(module, 'bbox_head', None)
        if not isinstance(heads, nn.ModuleList) or len(heads) < 2:
            continue
        layouts = [head_layout(head) for head in heads]
        if any(layout != layouts[0] for layout in layouts[1:]):
            stages = [(type(head.loss_cls).__name__, _classifier_width(head))
                      for head in heads]
            listing = '; '.join(
                f'stage {i}: {loss} with {width} outputs'
                for i, (loss, width) in enumerate(stages))
            if len(set(stages)) == 1:
                listing += (' (as wide, but the losses put the classes on '
                            'other rows, e.g. BAGS with another bin_split)')
            raise ValueError(
                f'{name or "model"} ({type(module).__name__}) averages the '
                'raw classifier logits of its stages at test time and scores '
                'them with the last stage\'s loss, so every stage needs the '
                f'same classification loss and layout, got: {listing}')


def _check_class_agnostic_branch(model: nn.Module) -> None:
    """CAB (:class:`~mmlongtail.models.layers.CABLinear`) sits only as the
    ``fc_reg`` of a class-specific bbox head and blends one regressor per
    class of that head."""
    from mmlongtail.models.layers import CABLinear
    parents = {}
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            parents[id(child)] = (name, child_name, module)
    for name, layer in model.named_modules():
        if not isinstance(layer, CABLinear):
            continue
        parent_name, attr, head = parents.get(id(layer), ('', name, None))
        where = f'{parent_name or "model"} ({type(head).__name__})'
        if attr != 'fc_reg' or not hasattr(head, 'reg_class_agnostic'):
            raise ValueError(
                f'{name} is a CABLinear, the class-agnostic branch for box '
                'regressors, but it is not the fc_reg of a bbox head; use it '
                'only as a bbox head\'s reg_predictor_cfg')
        if head.reg_class_agnostic:
            raise ValueError(
                f'{where} has reg_class_agnostic=True and a CABLinear '
                'fc_reg: its regressor is already class-agnostic, there '
                'are no class-specific regressors to blend; drop '
                'reg_predictor_cfg or set reg_class_agnostic=False')
        box_dim = getattr(getattr(head, 'bbox_coder', None), 'encode_size',
                          layer.box_dim)
        if (layer.num_classes != head.num_classes
                or layer.box_dim != box_dim):
            raise ValueError(
                f'{where}.fc_reg (CABLinear) blends {layer.num_classes} '
                f'class regressors of box_dim={layer.box_dim}, but the head '
                f'has num_classes={head.num_classes} and its bbox coder '
                f'encodes {box_dim} numbers per box; set box_dim in '
                'reg_predictor_cfg to the coder\'s encode_size')


def _check_start_epochs(model: nn.Module, max_epochs: int) -> None:
    """A loss that acts only from an epoch on (``start_epoch``, 1-based:
    PCB) needs a schedule that reaches that epoch; otherwise it would
    train as its wrapped loss without saying so."""
    for name, module in model.named_modules():
        start = getattr(module, 'start_epoch', None)
        if (not isinstance(getattr(module, 'loss', None), nn.Module)
                or not isinstance(start, int) or isinstance(start, bool)
                or start <= max_epochs):
            continue
        raise ValueError(
            f'{name or "model"} ({type(module).__name__}) acts from epoch '
            f'{start} (start_epoch, 1-based), but training runs '
            f'{max_epochs} epoch(s) (an iteration-based loop counts as one),'
            f' so it would never act and train as its wrapped '
            f'{type(module.loss).__name__} alone; set start_epoch <= '
            f'{max_epochs} (the official PCB starts after the first '
            'learning-rate step, epoch 17 of 24)')


def _check_box_regression(model: nn.Module) -> None:
    """LDS weights the encoded deltas per element: refuse a head that
    regresses decoded boxes (built some other way than its constructor,
    which refuses this too)."""
    for name, head in model.named_modules():
        if (getattr(head, 'lds', None) is not None
                and getattr(head, 'reg_decoded_bbox', False)):
            raise ValueError(
                f'{name or "model"} ({type(head).__name__}) weights '
                'loss_bbox with LDS on the encoded deltas (dx, dy, dw, dh), '
                'but reg_decoded_bbox=True makes its loss compare decoded '
                'boxes (an IoU-type loss) that these weights do not fit; '
                'use a delta loss (L1Loss, SmoothL1Loss) or drop lds')


def _check_fds_hook(runner) -> None:
    """FDS folds its statistics at epoch ends, which its hook marks."""
    from mmlongtail.engine.hooks.fds_hook import fds_modules
    if not fds_modules(runner.model):
        return
    names = [type(hook).__name__ for hook in runner.hooks]
    if 'FeatureDistributionSmoothingHook' not in names:
        raise ValueError(
            'The model has Feature Distribution Smoothing (an FDS box '
            'head), but the runner has no '
            'mmlongtail.FeatureDistributionSmoothingHook, so its statistics '
            'would never be folded and it would never calibrate; add '
            "dict(type='mmlongtail.FeatureDistributionSmoothingHook') to "
            'custom_hooks')


def _check_feature_augment(model: nn.Module) -> None:
    """A RoI head's ``feature_augment`` (FASA, feature cloud, SMOTE) must
    fit its bbox head's classifier (e.g. the feature cloud needs a cosine
    one)."""
    for name, module in model.named_modules():
        aug = getattr(module, 'feature_augment', None)
        check = getattr(aug, 'check_classifier', None)
        fc_cls = getattr(getattr(module, 'bbox_head', None), 'fc_cls', None)
        if check is None or fc_cls is None:
            continue
        reason = check(fc_cls)
        if reason is not None:
            raise ValueError(f'{name or "model"}.feature_augment: {reason}')


def _check_scorers(model: nn.Module) -> None:
    """Every test-time scorer of an mmlongtail RoI head
    (``test_cfg.score_calibration``, a Cascade's
    ``stage_score_calibration``) can score its head's classifier: each is
    run once on a one-RoI dummy of the head's layout, so a scorer that
    refuses the layout (FRACAL on an EQLv2 head, NorCal on BAGS) says so
    before the first image, with its reason."""
    import torch

    from mmlongtail.models.roi_heads.bbox_predict import apply_scorers
    from mmlongtail.models.roi_heads.scoring import ScorersFromTestCfg
    for name, head in model.named_modules():
        cfg = getattr(head, 'test_cfg', None)
        if not isinstance(head, ScorersFromTestCfg) or cfg is None:
            continue
        bbox_head = head.bbox_head
        if isinstance(bbox_head, nn.ModuleList):  # Cascade: one layout
            bbox_head = bbox_head[-1]
        groups = [('score_calibration', head.scorers_for(cfg))]
        if hasattr(head, '_stage_scorers'):
            groups += [(f'stage_score_calibration[{i}]', s)
                       for i, s in enumerate(head._stage_scorers(cfg))]
        layout = head_layout(bbox_head)
        C = layout.num_classes
        for key, scorers in groups:
            if not scorers:
                continue
            try:
                apply_scorers(scorers, torch.zeros(1, layout.num_outputs),
                              torch.full((1, C + 1), 1.0 / (C + 1)),
                              layout)
            except ValueError as err:
                raise ValueError(f'{name or "model"}.test_cfg.{key}: {err}'
                                 ) from err


def check_longtail_consistency(model: nn.Module,
                               classes: Optional[Sequence[str]] = None,
                               dataset_name: str = 'dataset',
                               max_epochs: Optional[int] = None) -> None:
    """Check that class counts agree and classifier layouts are honoured.

    Checked:

    * ``num_classes`` of every classifying head (each bbox head, Cascade
      stage, mask head, dense detection head), of each head's ``loss_cls``
      when it has one (losses built from category statistics have already
      checked theirs against the statistics), and ``len(classes)`` of the
      dataset all agree;
    * an mmlongtail loss in a dense head is one that works there (see
      :func:`_check_dense_heads`: ``C`` sigmoid rows, ``dense_head=True``,
      a tested head; Seesaw, EQLv2 and BAGS are refused with the loss to
      use instead, a loss with ``DENSE_HEAD_REFUSAL`` (APA) with its
      reason), and a ``dense_head=True`` loss is in a dense head;
    * a ``loss_cls`` with its own channel layout (``custom_cls_channels``,
      e.g. Seesaw's ``C + 2``, EQLv2's ``C + 1``, BAGS' ``C + 1 + G``) sits
      in a head whose classifier has that many outputs;
    * the stages of a Cascade have the same classifier layout, as their
      losses describe it (their logits are averaged at test time);
    * an mmlongtail loss in a query-based head (``DETRHead`` family) is one
      that works there, in the query-head mode, with its assigner's
      ``LossActivationCost`` bound to it and no sigmoid ``FocalLossCost``
      or sigmoid-scoring mmdet head next to another activation (see
      :func:`_check_query_heads`);
    * an ``LDAMLoss`` sits in an R-CNN ``BBoxHead`` with a cosine classifier
      of its scale (:func:`_check_ldam`);
    * a CAB regressor (``mmlongtail.CABLinear``) is the ``fc_reg`` of a
      class-specific bbox head (``reg_class_agnostic=False``) and blends
      that head's ``num_classes`` regressors;
    * a wrapper loss that acts only from ``start_epoch`` on (PCB) reaches
      it within ``max_epochs`` when that is given (training);
    * a box head with LDS regresses encoded deltas, not decoded boxes;
    * a RoI head's ``feature_augment`` fits its bbox head's classifier (the
      feature cloud needs a cosine ``fc_cls``);
    * every test-time scorer of an mmlongtail RoI head can score its
      head's classifier layout (:func:`_check_scorers`).

    Args:
        model (nn.Module): The detector (a DDP wrapper is unwrapped).
        classes (Sequence[str], optional): The dataset's
            ``metainfo['classes']``. Not checked when None.
        dataset_name (str): How the dataset is called in the message.
        max_epochs (int, optional): Epochs of the training loop (1 for an
            iteration-based one); ``start_epoch`` is not checked when None.

    Raises:
        ValueError: Naming every count (or the head, the loss and both
            channel counts; or every Cascade stage's loss and width; or the
            head whose CAB regressor cannot apply, and why).
    """
    model = unwrap_model(model)
    counts = _class_count_owners(model)
    if classes is not None:
        counts[f'{dataset_name} classes (len(metainfo["classes"]))'] = len(
            classes)
    if len(set(counts.values())) > 1:
        listing = '; '.join(f'{k} = {v}' for k, v in counts.items())
        raise ValueError(
            'num_classes disagree: ' + listing + '. Set num_classes of '
            'every head and loss to the number of classes of the dataset '
            '(and of its category statistics).')
    _check_query_heads(model)
    _check_ldam(model)
    _check_dense_heads(model)
    _check_layouts(model)
    _check_cascades(model)
    _check_class_agnostic_branch(model)
    if max_epochs is not None:
        _check_start_epochs(model, max_epochs)
    _check_box_regression(model)
    _check_feature_augment(model)
    _check_scorers(model)


def check_train_loop_fit(model: nn.Module, loop) -> None:
    """Let every module with a ``check_train_loop(loop)`` method (e.g.
    ``mmlongtail.DCLRoIHead``, whose loss schedule counts epochs or
    iterations) refuse a train loop it cannot follow (raises
    ``ValueError``)."""
    for module in unwrap_model(model).modules():
        check = getattr(module, 'check_train_loop', None)
        if callable(check):
            check(loop)


@HOOKS.register_module()
class LongTailConsistencyHook(Hook):
    """Run :func:`check_longtail_consistency` before train, val and test;
    before training also refuse an FDS box head without
    ``mmlongtail.FeatureDistributionSmoothingHook``.

    Enabled by ``configs/_base_/default_runtime.py``::

        custom_hooks = [dict(type='mmlongtail.LongTailConsistencyHook')]

    (a config that sets its own ``custom_hooks`` replaces that list; add the
    hook to it to keep the check).
    """

    priority = 'VERY_HIGH'

    def _check(self, runner, loop_name: str) -> None:
        loop = getattr(runner, loop_name)
        dataset = getattr(getattr(loop, 'dataloader', None), 'dataset', None)
        classes: Optional[List[str]] = None
        if dataset is not None:
            classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
        max_epochs = None
        if loop_name == 'train_loop':
            max_epochs = getattr(loop, 'max_epochs', None)
        check_longtail_consistency(
            runner.model, classes,
            dataset_name=f'{loop_name.replace("_loop", "")} dataset '
            f'({type(dataset).__name__})',
            max_epochs=max_epochs)
        MMLogger.get_current_instance().debug(
            f'LongTailConsistencyHook: {loop_name} passed')

    def before_train(self, runner) -> None:
        self._check(runner, 'train_loop')
        _check_fds_hook(runner)
        # BBN's two-stream training is wired up completely (or not at all)
        from .bbn_hook import check_bbn_setup
        check_bbn_setup(runner)
        check_train_loop_fit(runner.model, runner.train_loop)

    def before_val(self, runner) -> None:
        self._check(runner, 'val_loop')

    def before_test(self, runner) -> None:
        self._check(runner, 'test_loop')
