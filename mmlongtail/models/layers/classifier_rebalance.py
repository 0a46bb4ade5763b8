"""Classifier rebalancing after training (Kang et al., "Decoupling
Representation and Classifier for Long-Tailed Recognition", ICLR 2020):
τ-normalization and learnable weight scaling (LWS) on the class rows of an
R-CNN box classifier.

Which rows are classes comes from the box head's loss
(:func:`mmlongtail.models.losses.protocol.head_layout`): rows ``0 .. C - 1``
of a softmax CE (``C + 1``) or Seesaw (``C + 2``) classifier, all ``C`` rows
of a sigmoid one, the scattered class rows of a BAGS (group softmax)
classifier. Background, objectness and "others" rows are never touched.

* **τ-normalization**: ``w_c <- w_c / ||w_c||^τ`` for each class row ``c``
  (so ``||w_c||`` becomes ``||w_c||^{1 - τ}``); biases are kept. Post-hoc,
  no training: :func:`tau_normalize_` does it in place on every box head
  of a model and :func:`restore_weights` undoes it;
  :class:`~mmlongtail.engine.TauNormalizationHook` applies it to any
  checkpoint from the config, and the calibration sweep
  (:func:`mmlongtail.apis.calibrate.sweep`) once per swept value.
* **LWS**: logits ``z_c = s_c (w_c · x + b_c)`` with one learnable scale
  ``s_c`` per class row (initialized to 1), trained while everything else is
  frozen (stage 2, :class:`~mmlongtail.engine.LearnableWeightScalingHook`).
  :class:`LWSLinear` is the box classifier for that: an ``nn.Linear`` (same
  ``weight``/``bias`` names, so a stage-1 checkpoint loads into it) plus the
  scales in its ``lws`` child.

Cosine (normalized) classifiers such as Seesaw's ``NormedLinear`` normalize
their rows in ``forward``: τ-normalizing their weights changes nothing, and
is refused.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmlongtail.registry import MODELS
from ..losses.protocol import head_layout
from .normed_predictor import NormedLinear


def tau_normalized_weight(weight: Tensor, rows: Sequence[int],
                          tau: float) -> Tensor:
    """``weight`` with rows ``rows`` divided by their L2 norm to the ``tau``.

    Args:
        weight (Tensor): ``(O, D)`` classifier weight.
        rows (Sequence[int]): The class rows (``(C,)``).
        tau (float): The exponent; 0 leaves the rows as they are, 1 makes
            them unit vectors.

    Returns:
        Tensor: ``(O, D)``, a new tensor; other rows are copied unchanged.

    Raises:
        ValueError: ``weight`` is not 2-d, a row is out of range, or a class
            row has zero norm (it cannot be normalized).
    """
    if weight.dim() != 2:
        raise ValueError(f'tau-normalization needs a 2-d (O, D) classifier '
                         f'weight, got shape {tuple(weight.shape)}')
    rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
    if rows.numel() and (rows.min() < 0 or rows.max() >= weight.size(0)):
        raise ValueError(f'class rows must lie in [0, {weight.size(0)}), got '
                         f'[{int(rows.min())}, {int(rows.max())}]')
    out = weight.detach().clone()
    norms = out[rows].norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError('tau-normalization: class rows '
                         f'{rows[(norms == 0).view(-1)].tolist()[:8]} have '
                         'zero norm')
    out[rows] = out[rows] / norms.pow(float(tau))
    return out


def box_heads(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The R-CNN box heads of ``model`` (modules with ``fc_cls``,
    ``loss_cls`` and ``num_classes``), Cascade stages included."""
    return [(name, m) for name, m in model.named_modules()
            if hasattr(m, 'fc_cls') and hasattr(m, 'loss_cls')
            and hasattr(m, 'num_classes') and m.fc_cls is not None]


def is_cosine_classifier(fc_cls: nn.Module) -> bool:
    """Whether ``fc_cls`` normalizes its weight rows in ``forward`` (ours or
    mmdet's ``NormedLinear``)."""
    from mmdet.models.layers import NormedLinear as MMDetNormedLinear
    return isinstance(fc_cls, (NormedLinear, MMDetNormedLinear))


def check_plain_classifier(name: str, head: nn.Module, what: str) -> None:
    """Raise ``ValueError`` naming the head and its loss unless ``fc_cls``
    is a plain linear classifier whose rows ``what`` can act on."""
    fc = head.fc_cls
    if is_cosine_classifier(fc) or not isinstance(
            getattr(fc, 'weight', None), torch.Tensor) or \
            fc.weight.dim() != 2:
        raise ValueError(
            f'{what} cannot act on the classifier of {name} '
            f'({type(head).__name__} with {type(head.loss_cls).__name__}): '
            f'its fc_cls is {type(fc).__name__}, which '
            + ('normalizes its weight rows itself, so rescaling them changes '
               'nothing' if is_cosine_classifier(fc) else
               'has no 2-d weight'))


def tau_normalize_(model: nn.Module,
                   tau: float) -> List[Tuple[str, torch.Tensor]]:
    """τ-normalize, in place, the class rows of every box classifier of
    ``model`` (layout from each head's loss).

    Args:
        model (nn.Module): A detector (unwrapped).
        tau (float): The exponent.

    Returns:
        list: ``(head name, original fc_cls weight)`` of each head, for
        :func:`restore_weights`.

    Raises:
        ValueError: ``model`` has no box head, or a head's classifier is a
            cosine classifier (naming the head and its loss).
    """
    heads = box_heads(model)
    if not heads:
        raise ValueError(f'tau-normalization: {type(model).__name__} has no '
                         'R-CNN box head (a module with fc_cls and loss_cls)')
    saved = []
    for name, head in heads:
        check_plain_classifier(name, head, 'tau-normalization')
        layout = head_layout(head)
        weight = head.fc_cls.weight
        layout.check_outputs(weight.size(0), f'{name}.fc_cls')
        saved.append((name, weight.detach().clone()))
        with torch.no_grad():
            weight.copy_(
                tau_normalized_weight(weight, layout.foreground_rows(), tau))
    return saved


def restore_weights(model: nn.Module,
                    saved: Sequence[Tuple[str, torch.Tensor]]) -> None:
    """Put back the ``fc_cls`` weights :func:`tau_normalize_` returned."""
    heads: Dict[str, nn.Module] = dict(box_heads(model))
    with torch.no_grad():
        for name, weight in saved:
            heads[name].fc_cls.weight.copy_(weight)


class ClassScales(nn.Module):
    """One scale per classifier output row, used on the class rows only.

    Attributes:
        scale (Parameter): ``(O,)``, initialized to 1. Entries of rows that
            are not scaled are unused (they get no loss gradient; weight
            decay may still move them, which changes nothing).
        scaled (Tensor): ``(O,)`` bool buffer, the rows that are scaled (the
            class rows, set by :meth:`LWSLinear.set_class_rows`; saved with
            the checkpoint).
    """

    def __init__(self, num_outputs: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_outputs))
        self.register_buffer('scaled', torch.zeros(num_outputs,
                                                   dtype=torch.bool))

    def factors(self) -> Tensor:
        """``(O,)``: ``scale`` on the scaled rows, 1 elsewhere."""
        return torch.where(self.scaled, self.scale,
                           torch.ones_like(self.scale))


@MODELS.register_module()
class LWSLinear(nn.Linear):
    """Box classifier with learnable weight scaling (LWS, Kang et al., ICLR
    2020): ``z = s ⊙ (W x + b)``, ``s_c`` learnable on the class rows and 1
    on the others.

    Use it as ``cls_predictor_cfg=dict(type='mmlongtail.LWSLinear')`` of a
    ``BBoxHead``; :class:`~mmlongtail.engine.LearnableWeightScalingHook`
    marks the class rows from the head's loss before training. With no row
    marked (a fresh model) it is exactly ``nn.Linear``.

    Args:
        in_features (int): Input features.
        out_features (int): Classifier outputs ``O`` (from the loss).
        bias (bool): Whether to learn a bias. Defaults to True.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.lws = ClassScales(out_features)

    def set_class_rows(self, rows: Sequence[int]) -> None:
        """Scale exactly the rows ``rows`` (``(C,)`` class rows)."""
        rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        if rows.numel() and (rows.min() < 0
                             or rows.max() >= self.out_features):
            raise ValueError(f'class rows must lie in [0, '
                             f'{self.out_features}), got {rows.tolist()}')
        mask = torch.zeros_like(self.lws.scaled)
        mask[rows] = True
        self.lws.scaled.copy_(mask)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_features)`` -> ``(N, O)`` scaled logits."""
        if self.training and self.lws.scale.requires_grad and not bool(
                self.lws.scaled.any()):
            raise RuntimeError(
                'LWSLinear is trained but no class row is marked: train it '
                'with mmlongtail.LearnableWeightScalingHook, which marks the '
                "class rows from the head's loss")
        return F.linear(x, self.weight, self.bias) * self.lws.factors()


def lws_heads(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The box heads whose ``fc_cls`` is an :class:`LWSLinear`, their class
    rows marked from each head's loss (:func:`head_layout`).

    Raises:
        ValueError: No box head has an ``LWSLinear`` classifier.
    """
    heads = [(n, h) for n, h in box_heads(model)
             if isinstance(h.fc_cls, LWSLinear)]
    if not heads:
        raise ValueError(
            'learnable weight scaling needs box heads whose classifier is '
            "mmlongtail.LWSLinear: set cls_predictor_cfg=dict(type="
            "'mmlongtail.LWSLinear') in the bbox head(s); found "
            f'{[(n, type(h.fc_cls).__name__) for n, h in box_heads(model)]}')
    for _, head in heads:
        layout = head_layout(head)
        layout.check_outputs(head.fc_cls.out_features)
        head.fc_cls.set_class_rows(layout.foreground_rows())
    return heads
