"""CAB, the class-agnostic branch for class-specific box regressors, from
Zhu et al., "Rectify the Regression Bias in Long-Tailed Object Detection",
ECCV 2024 (arXiv:2401.15885). There is no official code; this follows the
paper's text.

What comes from the paper: an R-CNN box head's class-specific regressor
``W_i`` (one ``(4, D)`` block and bias per class ``i``) gets a second,
class-agnostic regressor ``W_0`` shared by all classes, and each class
regresses with the blend

    ``W_i' = alpha * W_0 + (1 - alpha) * W_i``   (weights and biases alike),

trained end to end and used as is at test time. Rare classes, whose own
``W_i`` see few boxes, then borrow the agnostic regressor that every
foreground RoI trains. The paper also proposes clustering and merging the
class-specific heads; their grouping rules are not implemented here.

What is ours (the paper does not say): the initialisation of ``W_0`` (as
mmdet initialises ``fc_reg``, N(0, 0.001^2) and zero bias) and the
checkpoint conversion below.

Checkpoints. The state dict stores, besides the two branches
(``specific_weight``/``specific_bias`` and ``agnostic_weight``/
``agnostic_bias``), the blended regressor as ``weight``/``bias``: exactly
the keys and shapes of a plain ``nn.Linear`` ``fc_reg``. So

* **CAB -> plain**: a head with mmdet's plain ``Linear`` regressor loads the
  blend folded into its class-specific weights and predicts identically
  (``mmengine.runner.load_checkpoint`` ignores the extra branch keys, with a
  warning; :func:`fold_class_agnostic_branch` drops them for a strict load);
* **plain -> CAB**: a checkpoint without the branches (a model trained
  without CAB) loads as ``W_0 = mean_i W_i`` (the class mean, the natural
  agnostic regressor, ``b_0`` likewise) and ``W_i <- (W_i - alpha W_0) /
  (1 - alpha)``, so the blended regressor equals the checkpoint's and the
  predictions are unchanged; training then continues with CAB. A
  class-agnostic checkpoint (``reg_class_agnostic=True``, one ``(4, D)``
  block) loads as ``W_0 = W_i = W``, again with unchanged predictions;
* **CAB -> CAB** (resume) loads both branches exactly; ``weight``/``bias``
  are then recomputed, not read.
"""
from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmlongtail.registry import MODELS

#: The branch parameters, in ``state_dict`` order.
BRANCH_KEYS = ('specific_weight', 'specific_bias', 'agnostic_weight',
               'agnostic_bias')


@MODELS.register_module()
class CABLinear(nn.Module):
    """Class-specific box regressor blended with a class-agnostic branch
    (CAB; Zhu et al., ECCV 2024, arXiv:2401.15885).

    Used as an mmdet ``BBoxHead``'s ``reg_predictor_cfg``, so every ConvFC
    head (``Shared2FCBBoxHead``, ...) and every Cascade stage gets it from
    one config dict::

        reg_predictor_cfg=dict(type='mmlongtail.CABLinear', alpha=0.5)

    The head passes ``in_features`` and ``out_features = num_classes *
    box_dim``; a class-agnostic head (``reg_class_agnostic=True``) passes
    ``box_dim`` and is refused, having no class-specific regressors to
    blend.

    Output for class ``i`` (columns ``box_dim * i ... box_dim * (i + 1) -
    1``, mmdet's layout): ``x @ W_i'^T + b_i'`` with ``W_i' = alpha W_0 +
    (1 - alpha) W_i`` and ``b_i' = alpha b_0 + (1 - alpha) b_i``. So the
    gradient reaching ``W_0`` is ``alpha`` times the sum of the gradients
    of the blended blocks and the one reaching ``W_i`` is ``1 - alpha``
    times its block's.

    Args:
        in_features (int): ``D``, the input feature size.
        out_features (int): ``C * box_dim``.
        alpha (float): Weight of the agnostic branch, ``0 < alpha < 1``
            (``0`` is the plain class-specific regressor, ``1`` the
            class-agnostic one: use ``reg_class_agnostic=True``). The
            configs in ``configs/cab/`` use 0.5.
        box_dim (int): Regression outputs per class, the box coder's
            ``encode_size``. Defaults to 4.

    Shape:
        input ``(N, *, D)`` -> output ``(N, *, C * box_dim)``.

    Attributes:
        specific_weight (Parameter): ``W_i`` stacked, ``(C * box_dim, D)``.
        specific_bias (Parameter): ``(C * box_dim,)``.
        agnostic_weight (Parameter): ``W_0``, ``(box_dim, D)``.
        agnostic_bias (Parameter): ``(box_dim,)``.
        weight (Tensor): The blended ``W_i'`` stacked, ``(C * box_dim, D)``
            (computed; what a plain ``nn.Linear`` would hold).
        bias (Tensor): The blended biases, ``(C * box_dim,)``.
    """

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 alpha: float = 0.5,
                 box_dim: int = 4) -> None:
        super().__init__()
        alpha = float(alpha)
        if not 0.0 < alpha < 1.0:
            raise ValueError(
                f'CABLinear: alpha={alpha} must be strictly between 0 and '
                '1 (alpha=0 is the plain class-specific regressor; alpha=1 '
                'is a class-agnostic one, reg_class_agnostic=True in the '
                'bbox head)')
        if isinstance(box_dim, bool) or not isinstance(box_dim, int) \
                or box_dim < 1:
            raise ValueError(
                f'CABLinear: box_dim must be an int >= 1 (the box coder\'s '
                f'encode_size), got {box_dim!r}')
        if out_features % box_dim:
            raise ValueError(
                f'CABLinear: out_features={out_features} is not a multiple '
                f'of box_dim={box_dim}; it must be num_classes * box_dim')
        num_classes = out_features // box_dim
        if num_classes < 2:
            raise ValueError(
                f'CABLinear: out_features={out_features} = box_dim: one '
                'regressor, nothing to blend. A bbox head with '
                'reg_class_agnostic=True is already class-agnostic (CAB '
                'applies to class-specific regressors, '
                'reg_class_agnostic=False, with at least 2 classes); drop '
                'reg_predictor_cfg or set reg_class_agnostic=False')
        self.in_features = in_features
        self.out_features = out_features
        self.box_dim = box_dim
        self.num_classes = num_classes
        self.alpha = alpha
        self.specific_weight = nn.Parameter(
            torch.empty(out_features, in_features))
        self.specific_bias = nn.Parameter(torch.empty(out_features))
        self.agnostic_weight = nn.Parameter(torch.empty(box_dim, in_features))
        self.agnostic_bias = nn.Parameter(torch.empty(box_dim))
        self.init_weights()

    def init_weights(self) -> None:
        """Both branches as mmdet initialises ``fc_reg``: weights from
        N(0, 0.001^2), zero biases. (mmengine calls this after the head's
        own ``init_cfg``, so it is what a freshly built head holds.)"""
        for w in (self.specific_weight, self.agnostic_weight):
            nn.init.normal_(w, mean=0.0, std=0.001)
        for b in (self.specific_bias, self.agnostic_bias):
            nn.init.zeros_(b)

    def extra_repr(self) -> str:
        return (f'in_features={self.in_features}, '
                f'out_features={self.out_features}, alpha={self.alpha}, '
                f'box_dim={self.box_dim}')

    @property
    def weight(self) -> Tensor:
        """``W_i' = alpha W_0 + (1 - alpha) W_i``, ``(C * box_dim, D)``."""
        return (self.alpha * self.agnostic_weight.repeat(self.num_classes, 1)
                + (1.0 - self.alpha) * self.specific_weight)

    @property
    def bias(self) -> Tensor:
        """``b_i' = alpha b_0 + (1 - alpha) b_i``, ``(C * box_dim,)``."""
        return (self.alpha * self.agnostic_bias.repeat(self.num_classes) +
                (1.0 - self.alpha) * self.specific_bias)

    def forward(self, x: Tensor) -> Tensor:
        """Box deltas of every class, ``(N, *, C * box_dim)``."""
        return F.linear(x, self.weight, self.bias)

    # -- checkpoints -----------------------------------------------------

    def _save_to_state_dict(self, destination: Dict[str, Any], prefix: str,
                            keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        with torch.no_grad():
            destination[prefix + 'weight'] = self.weight.detach()
            destination[prefix + 'bias'] = self.bias.detach()

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str,
                              local_metadata: Mapping, strict: bool,
                              missing_keys: List[str],
                              unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        # ``state_dict`` is the loader's own copy (torch and mmengine copy
        # before loading), so the folded keys may be replaced in place.
        weight = state_dict.pop(prefix + 'weight', None)
        bias = state_dict.pop(prefix + 'bias', None)
        has_branches = any(prefix + k in state_dict for k in BRANCH_KEYS)
        if not has_branches and weight is not None and bias is not None:
            converted = self._branches_from_plain(weight, bias, prefix,
                                                  error_msgs)
            if converted is not None:
                state_dict.update(converted)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _branches_from_plain(
            self, weight: Tensor, bias: Tensor, prefix: str,
            error_msgs: List[str]) -> Optional[Dict[str, Tensor]]:
        """The two branches whose blend is a plain regressor's
        ``(weight, bias)`` (see the module docstring), or None (with an
        error message) when the shapes cannot be one."""
        rows = weight.shape[0] if weight.dim() == 2 else -1
        if (weight.dim() != 2 or weight.shape[1] != self.in_features
                or rows not in (self.box_dim, self.out_features)
                or bias.shape != (rows, )):
            error_msgs.append(
                f'size mismatch for {prefix}weight/bias: a plain regressor '
                f'{tuple(weight.shape)}/{tuple(bias.shape)} cannot load '
                f'into CABLinear with {self.num_classes} classes x '
                f'box_dim={self.box_dim} on {self.in_features} features '
                f'(expected ({self.out_features}, {self.in_features}) or '
                f'({self.box_dim}, {self.in_features}))')
            return None
        a = self.alpha
        with torch.no_grad():
            w = weight.reshape(-1, self.box_dim, self.in_features)
            b = bias.reshape(-1, self.box_dim)
            w0, b0 = w.mean(0), b.mean(0)
            w = w.expand(self.num_classes, -1, -1)
            b = b.expand(self.num_classes, -1)
            ws = ((w - a * w0) / (1.0 - a)).reshape(self.out_features, -1)
            bs = ((b - a * b0) / (1.0 - a)).reshape(self.out_features)
        return {
            prefix + 'specific_weight': ws,
            prefix + 'specific_bias': bs,
            prefix + 'agnostic_weight': w0,
            prefix + 'agnostic_bias': b0,
        }


def fold_class_agnostic_branch(
        state_dict: Mapping[str, Tensor]) -> 'OrderedDict[str, Tensor]':
    """A copy of ``state_dict`` without CAB's branch keys.

    What is left of every :class:`CABLinear` is its folded ``weight``/
    ``bias`` (the blend ``alpha W_0 + (1 - alpha) W_i``), so the result
    loads strictly into the same model built with a plain ``Linear``
    regressor and predicts identically.

    Args:
        state_dict (Mapping[str, Tensor]): A model's state dict.

    Returns:
        OrderedDict[str, Tensor]: The same tensors minus
        ``*.specific_weight``, ``*.specific_bias``, ``*.agnostic_weight``,
        ``*.agnostic_bias`` of modules that also stored a folded
        ``weight``.

    Raises:
        ValueError: A module has branch keys but no folded ``weight``/
            ``bias`` (a state dict not written by :class:`CABLinear`).
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        prefix, _, name = key.rpartition('.')
        if name in BRANCH_KEYS:
            head = prefix + '.' if prefix else ''
            if (head + 'weight' not in state_dict
                    or head + 'bias' not in state_dict):
                raise ValueError(
                    f'{key} is a CAB branch, but {head}weight/{head}bias (the '
                    'folded regressor CABLinear stores beside it) are '
                    'missing; cannot fold')
            continue
        out[key] = value
    return out
