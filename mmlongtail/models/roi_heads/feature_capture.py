"""Capture what a layer receives during one forward pass, with a forward
pre-hook held only for the ``with`` block (the bbox head is unchanged
outside it)."""
from contextlib import contextmanager
from typing import Iterator, List

import torch.nn as nn
from torch import Tensor


@contextmanager
def captured_inputs(module: nn.Module) -> Iterator[List[Tensor]]:
    """Yield a list that receives ``module``'s first positional input at
    each call inside the block (e.g. the ``(N, D)`` features of a bbox
    head's ``fc_cls``, with their autograd graph); the hook is removed on
    exit, also on error.

    Example::

        with captured_inputs(bbox_head.fc_cls) as seen:
            results = roi_head._bbox_forward(x, rois)
        feats = seen[0]
    """
    seen: List[Tensor] = []
    handle = module.register_forward_pre_hook(
        lambda _, inputs: seen.append(inputs[0]))
    try:
        yield seen
    finally:
        handle.remove()
