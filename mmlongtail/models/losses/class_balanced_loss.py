"""Class-balanced weights (Cui et al., "Class-balanced loss based on
effective number of samples", CVPR 2019).

The effective number of samples of a class with ``n`` samples is
``(1 - beta^n) / (1 - beta)``; the class-balanced loss weighs each sample of
class ``y`` by the inverse, ``(1 - beta) / (1 - beta^n_y)``, normalized (as
the official code, richardaecn/class-balanced-loss, does) so that the ``C``
class weights sum to ``C``. The weight is per sample, that of its
ground-truth class, for softmax, sigmoid and focal losses alike (paper,
Sec. 4), so it is given to any loss as a per-RoI weight.
"""
import numpy as np
import torch
from torch import Tensor


def class_balanced_weights(counts: np.ndarray, beta: float) -> np.ndarray:
    """``(C,)`` float64 ``(1 - beta) / (1 - beta^n_c)``, scaled to sum to C.

    Args:
        counts (np.ndarray): ``(C,)`` samples per class.
        beta (float): In ``[0, 1)``; 0 gives equal weights, ``beta -> 1``
            inverse-frequency weights. Cui et al. use 0.9 - 0.9999.

    Raises:
        ValueError: ``beta`` outside ``[0, 1)`` or a class without samples
            (its weight would be infinite).
    """
    if not 0 <= beta < 1:
        raise ValueError(f'class-balanced weights: beta must lie in [0, 1), '
                         f'got {beta}')
    n = np.asarray(counts, dtype=np.float64)
    if (n <= 0).any():
        empty = np.flatnonzero(n <= 0)[:10].tolist()
        raise ValueError(
            f'class-balanced weights: classes {empty} have no training '
            'sample; their weight would be infinite')
    # 1 - beta^n as -expm1(n log beta): exact also for beta close to 1
    effective = -np.expm1(n * np.log(beta)) if beta > 0 else np.ones_like(n)
    w = (1 - beta) / effective
    return w / w.sum() * len(n)


def roi_class_weights(labels: Tensor, class_weight: Tensor,
                      bg_weight: float) -> Tensor:
    """``(N,)`` weight of each RoI: its class's weight, ``bg_weight`` for
    background (label ``C``)."""
    table = torch.cat([class_weight, class_weight.new_full((1, ), bg_weight)])
    return table[labels]
