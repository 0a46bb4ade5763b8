"""Mixins that let mmdet's RoI heads feed labels to a label-gathered mask
head, around their own ``mask_loss`` / ``predict_mask``.

``class StandardRoIHead(GatheredMaskStandardMixin, mmdet StandardRoIHead)``
(and the Cascade twin) leaves everything to mmdet's methods and only sets,
for the duration of the call, the labels the mask head's forward gathers:
the positives' ground-truth labels in training, the predicted labels at test
time. Mask heads that do not gather (mmdet's ``FCNMaskHead``) are untouched,
so the mixins are safe on any configuration.
"""
from contextlib import ExitStack
from typing import Any, Iterable, List, Tuple

import torch
from torch import Tensor

from .label_gathered_mask_head import LabelGatheredFCNMaskHead


def _labels_for(heads: Iterable[Any], labels: Tensor) -> ExitStack:
    stack = ExitStack()
    for head in heads:
        if isinstance(head, LabelGatheredFCNMaskHead):
            stack.enter_context(head.labels_for_forward(labels))
    return stack


def _cat(tensors: List[Tensor]) -> Tensor:
    return torch.cat(tensors) if tensors else torch.zeros(0, dtype=torch.long)


class GatheredMaskStandardMixin:
    """For ``StandardRoIHead`` subclasses (mmdet's signatures)."""

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
