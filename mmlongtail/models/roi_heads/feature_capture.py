"""Capture what a layer receives during one forward pass, with a forward
pre-hook held only for the ``with`` block (the bbox head is unchanged
outside it)."""
from contextlib import contextmanager
from typing import Any, Iterator, List, Sequence, Tuple

import torch.nn as nn
from mmdet.structures.bbox import bbox2roi
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


def bbox_loss_with_features(roi_head: Any, x: Tuple[Tensor],
                            sampling_results: Sequence[Any]
                            ) -> Tuple[dict, dict, Tensor]:
    """mmdet's ``bbox_loss`` of an R-CNN RoI head, keeping what a method
    on RoI features needs: the forward's results, ``loss_and_target``'s
    output (``loss_bbox`` and ``bbox_targets``: labels, label weights, ...)
    and the ``(N, D)`` features ``bbox_head.fc_cls`` received (with their
    autograd graph). The caller adds its losses to ``out['loss_bbox']``
    and sets ``results['loss_bbox']``."""
    rois = bbox2roi([res.priors for res in sampling_results])
    with captured_inputs(roi_head.bbox_head.fc_cls) as seen:
        results = roi_head._bbox_forward(x, rois)
    out = roi_head.bbox_head.loss_and_target(
        cls_score=results['cls_score'],
        bbox_pred=results['bbox_pred'],
        rois=rois,
        sampling_results=sampling_results,
        rcnn_train_cfg=roi_head.train_cfg)
    return results, out, seen[0]
