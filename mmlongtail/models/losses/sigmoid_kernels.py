r"""Lean sigmoid focal-family losses for dense heads: one ``N x C``
temporary.

A RetinaNet at 800x1333 has about 150k anchors on its finest FPN level: at
1203 classes every ``(N, C)`` float32 tensor is 0.7 GB. Written with
autograd, the focal loss keeps half a dozen of them (one-hot target,
probabilities, focusing weight, BCE, their products) from forward to
backward. :class:`SigmoidFocalFunction` computes

.. math::
    \ell_{nj} = -a_{nj}\, (1 - p_t)^{\gamma_j} \log p_t, \qquad
    a_{nj} = \begin{cases} \alpha\, w_j & y_{nj} = 1 \\
                           (1 - \alpha)\, w_j & y_{nj} = 0 \end{cases}

(focal loss: :math:`w_j = 1`, one :math:`\gamma`; EFL: per-class
:math:`\gamma_j` and :math:`w_j`) over blocks of anchors, and its backward
recomputes the closed-form gradient

.. math::
    \frac{\partial \ell_{nj}}{\partial x_{nj}} = (1 - 2 y_{nj})\, a_{nj}\,
    q^{\gamma_j} \left(q - \gamma_j\, p_t \log p_t\right), \qquad
    q = 1 - p_t = \sigma(-z),\ z = (2 y_{nj} - 1)\, x_{nj},

block by block into the one ``(N, C)`` gradient it returns. It saves only
the logits (held by the head anyway), the ``(N,)`` labels, the weights as
given and the ``(C,)`` parameters. With ``reduction='none'`` the ``(N, C)``
output is the one temporary.

The same pass can return the per-class sums of the gradient magnitude over
positive and negative elements (EFL's statistics,
:func:`~mmlongtail.models.losses.efl_loss.efl_logit_gradient` in closed
form), so they cost no ``(N, C)`` tensor either.

On CUDA, the per-block loss and gradient of the plain focal loss (one
scalar :math:`\gamma`, :math:`w_j = 1`) come from mmcv's fused
``sigmoid_focal_loss`` kernels (:func:`focal_backend` says when); EFL's
per-class :math:`\gamma_j` and :math:`w_j` do not fit that kernel (it takes
one scalar :math:`\gamma`, and its ``weight`` is indexed by the sample's
label, not by the class column), so EFL always takes the torch path, which
runs on any device.
"""
from functools import lru_cache
from typing import Any, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .checks import check_labels, sigmoid_target_mask

#: Elements of one block (rows x classes): 256k, 1 MB per float32 block
#: temporary, a few of which are alive at once (larger blocks were no
#: faster on CPU).
BLOCK_ELEMENTS = 1 << 18
#: The backends of :class:`SigmoidFocalFunction`.
BACKENDS = ('torch', 'mmcv')
#: mmdet's ``weight_reduce_loss`` divides by ``avg_factor + eps``.
_AVG_EPS = torch.finfo(torch.float32).eps

Gamma = Union[float, Tensor]


@lru_cache(maxsize=None)
def _mmcv_focal_ext() -> Any:
    """mmcv's compiled ``sigmoid_focal_loss`` kernels, or None when this
    mmcv has no compiled ops (``mmcv-lite``)."""
    try:
        from mmcv.utils import ext_loader
        return ext_loader.load_ext(
            '_ext',
            ['sigmoid_focal_loss_forward', 'sigmoid_focal_loss_backward'])
    except (ImportError, AssertionError):
        return None


def focal_backend(device_type: str, per_class: bool,
                  mmcv_available: Optional[bool] = None) -> str:
    """Which backend computes a block of the focal loss.

    mmcv's fused kernel computes exactly the focal loss with one scalar
    ``gamma`` and ``alpha``; mmcv builds it for CUDA only (its CPU build
    raises "implementation for device cpu not found").

    Args:
        device_type (str): ``logits.device.type``.
        per_class (bool): Per-class ``gamma`` or class weights (EFL).
        mmcv_available (bool, optional): Whether mmcv's compiled kernels
            load; None: try to load them.

    Returns:
        str: ``'mmcv'`` for a CUDA focal loss with mmcv's ops, else
        ``'torch'``.
    """
    if device_type != 'cuda' or per_class:
        return 'torch'
    if mmcv_available is None:
        mmcv_available = _mmcv_focal_ext() is not None
    return 'mmcv' if mmcv_available else 'torch'


def block_rows(num_classes: int, block_elements: int = BLOCK_ELEMENTS) -> int:
    """Rows of one block: ``block_elements // num_classes``, at least 1."""
    return max(1, block_elements // max(1, num_classes))


class Terms(NamedTuple):
    """The per-class parameters of one call (``(1, C)`` tensors in the
    compute dtype, or None where unused).

    Attributes:
        gamma: Focusing factor: a float (0: plain BCE) or ``(1, C)``.
        pos_coef: Coefficient of the positive elements.
        neg_coef: Coefficient of the negative elements (of every row, or of
            the background rows when ``fg_neg_coef`` is given).
        fg_neg_coef: Coefficient of the negative elements of foreground
            rows (labels ``< C``), e.g. EQL's ``1 - tail``.
        fg_shift: Subtracted from the logits of foreground rows (BALMS's
            sigmoid variant).
        alpha: The focal ``alpha`` (mmcv's kernel takes it as a float).
        backend: ``'torch'`` or ``'mmcv'``.
    """
    gamma: Gamma
    pos_coef: Tensor
    neg_coef: Tensor
    fg_neg_coef: Optional[Tensor]
    fg_shift: Optional[Tensor]
    alpha: float
    backend: str


def _block(x: Tensor, labels: Tensor, terms: Terms, want_loss: bool,
           want_grad: bool) -> Tuple[Optional[Tensor], Optional[Tensor],
                                     Tensor]:
    """Loss and gradient of one ``(k, C)`` block (``x`` is not modified).

    Returns:
        tuple: ``(loss, grad, target)``: ``(k, C)`` loss and
        d loss / d x (each None unless asked for) and the bool target.
    """
    num_classes = x.size(1)
    target = sigmoid_target_mask(labels, num_classes)
    gamma = terms.gamma
    if terms.backend == 'mmcv':
        ext = _mmcv_focal_ext()
        empty = x.new_empty(0)
        labels = labels.contiguous()  # the kernel reads them by pointer
        loss = grad = None
        if want_loss:
            loss = torch.zeros_like(x)
            ext.sigmoid_focal_loss_forward(
                x, labels, empty, loss, gamma=float(gamma),
                alpha=terms.alpha)
        if want_grad:
            grad = torch.zeros_like(x)
            ext.sigmoid_focal_loss_backward(
                x, labels, empty, grad, gamma=float(gamma),
                alpha=terms.alpha)
        return loss, grad, target
    neg_coef = terms.neg_coef
    if terms.fg_neg_coef is not None or terms.fg_shift is not None:
        fg = (labels < num_classes).view(-1, 1)
        if terms.fg_neg_coef is not None:
            neg_coef = torch.where(fg, terms.fg_neg_coef, neg_coef)
        if terms.fg_shift is not None:
            x = x - fg.to(x.dtype) * terms.fg_shift
    # z: logit of the true outcome; log p_t and q = 1 - p_t from it, both
    # accurate for large |x|
    z = torch.where(target, x, -x)
    log_pt = F.logsigmoid(z)
    q = torch.sigmoid(z.neg_())
    del z
    coef = torch.where(target, terms.pos_coef, neg_coef)
    plain = not isinstance(gamma, Tensor) and gamma == 0
    focus = coef if plain else q.pow(gamma).mul_(coef)  # a q^gamma
    del coef
    loss = grad = None
    if want_loss:
        loss = focus * log_pt
        loss.neg_()
    if want_grad:
        # a q^gamma (q - gamma p_t log p_t), with the sign of (1 - 2y)
        if plain:
            grad = q.mul_(focus)
        else:
            grad = log_pt.exp().mul_(log_pt).mul_(gamma)
            grad = torch.sub(q, grad, out=grad).mul_(focus)
        grad = torch.where(target, grad.neg(), grad)
    return loss, grad, target


def _rows(weight: Optional[Tensor], start: int, stop: int,
          dtype: torch.dtype) -> Optional[Tensor]:
    """Rows ``start:stop`` of an ``(N, 1)`` or ``(N, C)`` weight."""
    if weight is None:
        return None
    return weight[start:stop].to(dtype)


#: Output of :class:`SigmoidFocalFunction`: the scalar sum, ``(N, C)``
#: elements or ``(N,)`` row sums.
OUTPUTS = ('sum', 'elements', 'rows')


class SigmoidFocalFunction(torch.autograd.Function):
    """Weighted focal-family loss computed block by block with the
    closed-form gradient (see the module docstring).

    ``forward(logits, labels, weight, terms, output, rows, stats_scale)``
    returns ``(loss, pos, neg)``: ``weight * loss`` summed (``output`` =
    ``'sum'``), per element (``'elements'``, ``(N, C)``) or per row
    (``'rows'``, ``(N,)``), and, when ``stats_scale`` is given, the ``(C,)``
    float32 sums of ``|d loss / d x| * weight * stats_scale`` over positive
    and over negative elements (else empty tensors). Only ``logits`` gets a
    gradient.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor,
                weight: Optional[Tensor], terms: Terms, output: str,
                rows: int, stats_scale: Optional[Union[float, Tensor]]
                ) -> Tuple[Tensor, Tensor, Tensor]:
        dtype = terms.pos_coef.dtype
        num, num_classes = logits.shape
        stats = stats_scale is not None
        if output == 'sum':
            out = logits.new_zeros((), dtype=dtype)
        elif output == 'elements':
            out = logits.new_empty((num, num_classes), dtype=dtype)
        else:
            out = logits.new_empty((num, ), dtype=dtype)
        pos = neg = logits.new_empty(0, dtype=torch.float32)
        if stats:
            pos = logits.new_zeros(num_classes, dtype=torch.float32)
            neg = logits.new_zeros(num_classes, dtype=torch.float32)
        for start in range(0, num, rows):
            stop = min(start + rows, num)
            x = logits[start:stop].to(dtype).contiguous()
            loss, grad, target = _block(x, labels[start:stop], terms, True,
                                        stats)
            w = _rows(weight, start, stop, dtype)
            if w is not None:
                loss.mul_(w)
            if output == 'sum':
                out += loss.sum()
            elif output == 'elements':
                out[start:stop] = loss
            else:
                out[start:stop] = loss.sum(1)
            if stats:
                grad.abs_()
                if w is not None:
                    grad.mul_(w)
                grad = grad.float().mul_(stats_scale)
                pos += grad.where(target, 0).sum(0)
                neg += grad.where(~target, 0).sum(0)
        ctx.save_for_backward(logits, labels, weight)
        ctx.terms, ctx.rows = terms, rows
        ctx.mark_non_differentiable(pos, neg)
        return out, pos, neg

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor, *_: Any) -> Tuple:
        logits, labels, weight = ctx.saved_tensors
        terms = ctx.terms
        dtype = terms.pos_coef.dtype
        grad_in = torch.empty_like(logits)
        grad_out = grad_out.to(dtype)
        if grad_out.dim() == 1:
            grad_out = grad_out.view(-1, 1)
        for start in range(0, logits.size(0), ctx.rows):
            stop = min(start + ctx.rows, logits.size(0))
            x = logits[start:stop].to(dtype).contiguous()
            _, grad, _ = _block(x, labels[start:stop], terms, False, True)
            w = _rows(weight, start, stop, dtype)
            if w is not None:
                grad.mul_(w)
            grad.mul_(grad_out if grad_out.dim() == 0 else
                      grad_out[start:stop])
            grad_in[start:stop] = grad
        return (grad_in, ) + (None, ) * 6


def lean_sigmoid_sum(logits: Tensor,
                     labels: Tensor,
                     weight: Optional[Tensor],
                     terms: Terms,
                     output: str = 'sum',
                     stats_scale: Optional[Union[float, Tensor]] = None,
                     block_elements: int = BLOCK_ELEMENTS
                     ) -> Tuple[Tensor, Tensor, Tensor]:
    """:class:`SigmoidFocalFunction` with blocks of ``block_elements``."""
    if output not in OUTPUTS:
        raise ValueError(f'output must be one of {OUTPUTS}, got {output!r}')
    check_labels(labels, logits.size(0), logits.size(1), 'lean sigmoid loss')
    return SigmoidFocalFunction.apply(
        logits, labels, weight, terms, output,
        block_rows(logits.size(1), block_elements), stats_scale)


def class_row(values: Optional[Union[float, Tensor]], num_classes: int,
              like: Tensor, dtype: torch.dtype) -> Optional[Tensor]:
    """``(C,)`` values (or one float) as a ``(1, C)`` tensor on ``like``'s
    device in ``dtype``; None stays None."""
    if values is None:
        return None
    if not isinstance(values, Tensor):
        return torch.full((1, num_classes), float(values), dtype=dtype,
                          device=like.device)
    return values.to(device=like.device, dtype=dtype).view(1, -1)


def compute_dtype(logits: Tensor) -> torch.dtype:
    """float32, or float64 for float64 logits."""
    return torch.promote_types(logits.dtype, torch.float32)


def bce_terms(logits: Tensor,
              class_weight: Optional[Tensor] = None,
              fg_neg_coef: Optional[Tensor] = None,
              fg_shift: Optional[Tensor] = None) -> Terms:
    """:class:`Terms` of a weighted sigmoid BCE (``gamma = 0``, both
    coefficients ``class_weight`` or 1)."""
    dtype, C = compute_dtype(logits), logits.size(1)
    coef = class_row(1.0 if class_weight is None else class_weight, C,
                     logits, dtype)
    return Terms(0.0, coef, coef, class_row(fg_neg_coef, C, logits, dtype),
                 class_row(fg_shift, C, logits, dtype), 1.0, 'torch')


def lean_focal_loss(logits: Tensor,
                    labels: Tensor,
                    weight: Optional[Tensor] = None,
                    gamma: Gamma = 2.0,
                    alpha: float = 0.25,
                    class_weight: Optional[Tensor] = None,
                    reduction: str = 'mean',
                    avg_factor: Optional[Union[float, Tensor]] = None,
                    stats_scale: Optional[Union[float, Tensor]] = None,
                    backend: Optional[str] = None,
                    block_elements: int = BLOCK_ELEMENTS
                    ) -> Tuple[Tensor, Optional[Tuple[Tensor, Tensor]]]:
    r"""Focal-family loss of a ``C``-channel sigmoid classifier with mmdet's
    weighted reduction, in at most one ``(N, C)`` temporary.

    The value is that of ``weight_reduce_loss(loss * class_weight, weight,
    reduction, avg_factor)`` with ``loss`` the sigmoid focal loss of
    ``labels`` (see the module docstring), computed in float32 (float64 for
    float64 logits).

    Args:
        logits (Tensor): ``(N, C)`` logits.
        labels (Tensor): ``(N,)`` int64 labels in ``[0, C]``, ``C``
            background (all-zero target); not checked here.
        weight (Tensor, optional): ``(N, 1)`` or ``(N, C)`` weights.
        gamma (float | Tensor): Focusing factor, scalar or ``(C,)``.
        alpha (float): Weight of the positives; negatives get
            ``1 - alpha``.
        class_weight (Tensor, optional): ``(C,)`` weight of each class.
        reduction (str): ``'none'`` (``(N, C)``), ``'mean'`` or ``'sum'``.
        avg_factor (float | Tensor, optional): With ``'mean'``, divide the
            sum by ``avg_factor + eps`` instead of averaging.
        stats_scale (float | Tensor, optional): When given, also return the
            per-class sums of the gradient magnitude over positive and
            negative elements, times the weights and this scale.
        backend (str, optional): ``'torch'`` or ``'mmcv'``; None:
            :func:`focal_backend`.
        block_elements (int): Elements per block.

    Returns:
        tuple: ``(loss, stats)``: the loss, and ``(pos, neg)`` (``(C,)``
        float32 each) or None without ``stats_scale``.

    Raises:
        ValueError: ``avg_factor`` with ``reduction='sum'`` (as mmdet).
    """
    if reduction == 'sum' and avg_factor is not None:
        raise ValueError('avg_factor can not be used with reduction="sum"')
    num_classes = logits.size(1)
    dtype = compute_dtype(logits)
    per_class = isinstance(gamma, Tensor) or class_weight is not None
    if backend is None:
        backend = focal_backend(logits.device.type, per_class)
    elif backend not in BACKENDS or (backend == 'mmcv' and per_class):
        raise ValueError(f'lean_focal_loss: backend must be one of '
                         f'{BACKENDS} (mmcv only for a scalar gamma and no '
                         f'class_weight), got {backend!r}')
    if isinstance(gamma, Tensor):
        gamma = class_row(gamma, num_classes, logits, dtype)
    else:
        gamma = float(gamma)
    w = torch.ones(num_classes, dtype=dtype, device=logits.device) \
        if class_weight is None else class_weight
    terms = Terms(gamma, class_row(alpha * w.to(dtype), num_classes, logits,
                                   dtype),
                  class_row((1 - alpha) * w.to(dtype), num_classes, logits,
                            dtype), None, None, float(alpha), backend)
    loss, pos, neg = lean_sigmoid_sum(
        logits, labels, weight, terms,
        'elements' if reduction == 'none' else 'sum', stats_scale,
        block_elements)
    stats = None if stats_scale is None else (pos, neg)
    if reduction == 'mean':
        if avg_factor is None:
            loss = loss / max(logits.numel(), 1)
        else:
            loss = loss / (avg_factor + _AVG_EPS)
    return loss, stats


def lean_bce_loss(logits: Tensor,
                  labels: Tensor,
                  weight: Optional[Tensor],
                  terms: Terms,
                  reduction: str = 'mean',
                  avg_factor: Optional[Union[float, Tensor]] = None,
                  block_elements: int = BLOCK_ELEMENTS) -> Tensor:
    """A per-row loss (summed over classes) with mmdet's weighted reduction,
    in at most one ``(N, C)`` temporary: the value of
    ``weight_reduce_loss(loss.sum(1), weight, reduction, avg_factor)``.

    Args:
        logits (Tensor): ``(N, C)`` logits, ``N > 0``.
        labels (Tensor): ``(N,)`` int64 labels in ``[0, C]``.
        weight (Tensor, optional): ``(N,)`` per-row weights.
        terms (Terms): The loss's terms (e.g. :func:`bce_terms`).
        reduction (str): ``'none'`` (``(N,)``), ``'mean'`` (over rows) or
            ``'sum'``.
        avg_factor (float | Tensor, optional): With ``'mean'``, divide the
            sum by ``avg_factor + eps`` instead.
        block_elements (int): Elements per block.

    Raises:
        ValueError: ``avg_factor`` with ``reduction='sum'`` (as mmdet).
    """
    if reduction == 'sum' and avg_factor is not None:
        raise ValueError('avg_factor can not be used with reduction="sum"')
    if weight is not None:
        weight = weight.view(-1, 1)
    loss = lean_sigmoid_sum(logits, labels, weight, terms,
                            'rows' if reduction == 'none' else 'sum',
                            block_elements=block_elements)[0]
    if reduction == 'mean':
        if avg_factor is None:
            loss = loss / logits.size(0)
        else:
            loss = loss / (avg_factor + _AVG_EPS)
    return loss
