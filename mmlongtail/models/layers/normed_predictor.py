"""Normalized (cosine) predictors, the "Norm Mask" of Seesaw Loss
(Wang et al., CVPR 2021, arXiv:2008.10032).

Both layers divide the input features and the weights by (a power of) their
L2 norms and scale by a temperature ``T``, so a logit is
``T * <x / (|x|^power + eps), w / (|w|^power + eps)> + b``: a scaled cosine
similarity for ``power=1``. Given the same weights they compute exactly what
mmdet 3.3.0's ``NormedLinear`` / ``NormedConv2d`` compute.

Configs use them as a bbox head's ``cls_predictor_cfg`` and as
``FCNMaskHead``'s ``predictor_cfg``::

    cls_predictor_cfg=dict(type='mmlongtail.NormedLinear', temperature=20)
    predictor_cfg=dict(type='mmlongtail.NormedConv2d', temperature=20)

mmdet spells the argument ``tempearture``; that spelling is accepted here as
a deprecated alias and logs a warning.
"""
import logging
from typing import Any, Optional

import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor

from mmlongtail.registry import MODELS


def _resolve_temperature(cls_name: str, temperature: Optional[float],
                         tempearture: Optional[float]) -> float:
    """Merge ``temperature`` with mmdet's misspelled ``tempearture``.

    The misspelling is accepted and logged at WARNING through the current
    mmengine logger, so it lands in the training log. (A
    ``DeprecationWarning`` would be filtered out by Python's default warning
    filters for modules built from configs, i.e. never shown.)
    """
    if tempearture is None:
        return 20.0 if temperature is None else float(temperature)
    if temperature is not None and float(temperature) != float(tempearture):
        raise ValueError(
            f'{cls_name} got both temperature={temperature} and its '
            f'deprecated misspelling tempearture={tempearture}; pass only '
            '`temperature`')
    print_log(
        f'{cls_name}: `tempearture` is a deprecated misspelling, use '
        f'`temperature={tempearture}` instead',
        logger='current',
        level=logging.WARNING)
    return float(tempearture)


def _normalize(x: Tensor, dim: int, power: float, eps: float) -> Tensor:
    """``x / (|x|_2 ** power + eps)``, the norm taken along ``dim``."""
    return x / (x.norm(dim=dim, keepdim=True).pow(power) + eps)


@MODELS.register_module()
class NormedLinear(nn.Linear):
    """Linear layer on L2-normalized inputs and weight rows, scaled by a
    temperature.

    Args:
        in_features (int): Size of each input sample.
        out_features (int): Size of each output sample.
        bias (bool): Whether to add a learnable bias. Defaults to True.
        temperature (float): Scale ``T`` of the normalized logits.
            Defaults to 20.
        power (float): Power of the norms in the divisors. Defaults to 1.0.
        eps (float): Added to the divisors. Defaults to 1e-6.
        tempearture (float, optional): Deprecated misspelling of
            ``temperature`` (mmdet's name); logs a warning.
        **kwargs: ``device``/``dtype`` for :class:`torch.nn.Linear`.

    Shape:
        input ``(N, *, in_features)`` -> output ``(N, *, out_features)``;
        each input is normalized along its last dimension.
    """

    def __init__(self,
                 *args: Any,
                 temperature: Optional[float] = None,
                 power: float = 1.0,
                 eps: float = 1e-6,
                 tempearture: Optional[float] = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.temperature = _resolve_temperature(type(self).__name__,
                                                temperature, tempearture)
        self.power = power
        self.eps = eps
        self.init_weights()

    def init_weights(self) -> None:
        """Weights from N(0, 0.01^2), zero bias."""
        nn.init.normal_(self.weight, mean=0, std=0.01)
        if self.bias is not None:
            nn.init.constant_(self.bias, 0)

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, temperature={self.temperature}, '
                f'power={self.power}, eps={self.eps}')

    def forward(self, x: Tensor) -> Tensor:
        """Scaled cosine logits, shape ``(N, *, out_features)``."""
        weight = _normalize(self.weight, 1, self.power, self.eps)
        x = _normalize(x, -1, self.power, self.eps) * self.temperature
        return F.linear(x, weight, self.bias)


@MODELS.register_module()
class NormedConv2d(nn.Conv2d):
    """Conv2d on channel-normalized inputs and normalized filters, scaled by a
    temperature.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int | tuple): Kernel size; other positional and keyword
            arguments of :class:`torch.nn.Conv2d` are accepted too.
        temperature (float): Scale ``T`` of the normalized logits.
            Defaults to 20.
        power (float): Power of the norms in the divisors. Defaults to 1.0.
        eps (float): Added to the divisors. Defaults to 1e-6.
        norm_over_kernel (bool): Normalize each filter over its whole
            ``(in_channels, kh, kw)`` kernel; by default the norm is taken
            over input channels at each kernel position. Defaults to False.
        tempearture (float, optional): Deprecated misspelling of
            ``temperature`` (mmdet's name); logs a warning.

    Shape:
        input ``(N, in_channels, H, W)``, normalized over channels at each
        pixel -> output ``(N, out_channels, H', W')``.
    """

    def __init__(self,
                 *args: Any,
                 temperature: Optional[float] = None,
                 power: float = 1.0,
                 eps: float = 1e-6,
                 norm_over_kernel: bool = False,
                 tempearture: Optional[float] = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.temperature = _resolve_temperature(type(self).__name__,
                                                temperature, tempearture)
        self.power = power
        self.eps = eps
        self.norm_over_kernel = norm_over_kernel

    def extra_repr(self) -> str:
        return (f'{super().extra_repr()}, temperature={self.temperature}, '
                f'power={self.power}, eps={self.eps}, '
                f'norm_over_kernel={self.norm_over_kernel}')

    def normalized_weight(self) -> Tensor:
        """The normalized filters, ``(out_channels, in_channels, kh, kw)``."""
        if self.norm_over_kernel:
            norm = self.weight.flatten(1).norm(dim=1).pow(self.power)
            return self.weight / (norm[:, None, None, None] + self.eps)
        return _normalize(self.weight, 1, self.power, self.eps)

    def input_divisor(self, x: Tensor) -> Tensor:
        """``|x|_2 ** power + eps`` over channels, ``(N, 1, H, W)``: what
        :meth:`normalize_input` divides by (also asked by the label-gathered
        mask head, which divides the gathered response instead)."""
        return x.norm(dim=1, keepdim=True).pow(self.power) + self.eps

    def normalize_input(self, x: Tensor) -> Tensor:
        """``x`` normalized over channels and scaled by the temperature."""
        return x / self.input_divisor(x) * self.temperature

    def forward(self, x: Tensor) -> Tensor:
        """Scaled cosine responses, shape ``(N, out_channels, H', W')``."""
        return self._conv_forward(
            self.normalize_input(x), self.normalized_weight(), self.bias)
