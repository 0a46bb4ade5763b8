"""Mixins that let mmdet's RoI heads feed labels to a label-gathered mask
head, around their own ``mask_loss`` / ``predict_mask``.

``class StandardRoIHead(GatheredMaskStandardMixin, mmdet StandardRoIHead)``
(and the Cascade twin) leaves everything to mmdet's methods and only sets,
for the duration of the call, the labels the mask head's forward gathers:
the positives' ground-truth labels in training, the predicted labels at test
time. Mask heads that do not gather (mmdet's ``FCNMaskHead``) are untouched,
so the mixins are safe on any configuration.

At test time, the mask RoI features are extracted and run through a gathering
head in chunks of the head's ``inference_chunk_size`` RoIs (one image's
Fixed-AP detections can number thousands), so the memory of the mask branch
is bounded by the chunk; the results are those of one pass.
"""
from contextlib import ExitStack
from typing import Any, Callable, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from .label_gathered_mask_head import LabelGatheredFCNMaskHead


def _labels_for(heads: Iterable[Any], labels: Tensor) -> ExitStack:
    stack = ExitStack()
    for head in heads:
        if isinstance(head, LabelGatheredFCNMaskHead):
            stack.enter_context(head.labels_for_forward(labels))
    return stack


def _chunked(head: Any, rois: Optional[Tensor],
             forward: Callable[[Tensor], dict]) -> Optional[dict]:
    """``forward`` (RoIs -> mmdet's mask results) chunk by chunk, each chunk
    with its share of the head's pending labels; None when ``head`` does not
    chunk this call (training, no labels, few RoIs)."""
    if rois is None or not isinstance(head, LabelGatheredFCNMaskHead) \
            or head.pending_labels is None:
        return None
    labels = head.pending_labels.view(-1)
    chunks = head.chunks_for_inference(rois.size(0))
    if chunks is None or labels.numel() != rois.size(0):
        return None  # the head's forward raises on a count mismatch
    preds = []
    for c in chunks:
        with head.labels_for_forward(labels[c]):
            preds.append(forward(rois[c])['mask_preds'])
    return dict(mask_preds=torch.cat(preds))


def _cat(tensors: List[Tensor]) -> Tensor:
    return torch.cat(tensors) if tensors else torch.zeros(0, dtype=torch.long)


class GatheredMaskStandardMixin:
    """For ``StandardRoIHead`` subclasses (mmdet's signatures)."""

    def _mask_forward(self, x: Tuple[Tensor], rois: Optional[Tensor] = None,
                      pos_inds: Optional[Tensor] = None,
                      bbox_feats: Optional[Tensor] = None) -> dict:
        out = _chunked(self.mask_head, rois,
                       lambda r: super(GatheredMaskStandardMixin,
                                       self)._mask_forward(x, r))
        if out is None:
            out = super()._mask_forward(x, rois, pos_inds, bbox_feats)
        return out

    def mask_loss(self, x: Tuple[Tensor], sampling_results: list,
                  bbox_feats: Tensor, batch_gt_instances: list) -> dict:
        labels = _cat([res.pos_gt_labels for res in sampling_results])
        with _labels_for([self.mask_head], labels):
            return super().mask_loss(x, sampling_results, bbox_feats,
                                     batch_gt_instances)

    def predict_mask(self, x: Tuple[Tensor], batch_img_metas: List[dict],
                     results_list: list, rescale: bool = False) -> list:
        labels = _cat([res.labels for res in results_list])
        with _labels_for([self.mask_head], labels):
            return super().predict_mask(x, batch_img_metas, results_list,
                                        rescale)


class GatheredMaskCascadeMixin:
    """For ``CascadeRoIHead`` subclasses: each stage's mask head gathers, and
    the stages' sigmoid masks are averaged per label channel (the same as
    averaging all channels and then gathering)."""

    def _mask_forward(self, stage: int, x: Tuple[Tensor],
                      rois: Tensor) -> dict:
        out = _chunked(self.mask_head[stage], rois,
                       lambda r: super(GatheredMaskCascadeMixin,
                                       self)._mask_forward(stage, x, r))
        if out is None:
            out = super()._mask_forward(stage, x, rois)
        return out

    def mask_loss(self, stage: int, x: Tuple[Tensor], sampling_results: list,
                  batch_gt_instances: list) -> dict:
        labels = _cat([res.pos_gt_labels for res in sampling_results])
        with _labels_for([self.mask_head[stage]], labels):
            return super().mask_loss(stage, x, sampling_results,
                                     batch_gt_instances)

    def predict_mask(self, x: Tuple[Tensor], batch_img_metas: List[dict],
                     results_list: list, rescale: bool = False) -> list:
        labels = _cat([res.labels for res in results_list])
        with _labels_for(self.mask_head, labels):
            return super().predict_mask(x, batch_img_metas, results_list,
                                        rescale)
