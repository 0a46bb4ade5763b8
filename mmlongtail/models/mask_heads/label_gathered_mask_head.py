"""``mmlongtail.LabelGatheredFCNMaskHead``: an ``FCNMaskHead`` whose
predictor computes only the channel of each RoI's label.

mmdet's ``FCNMaskHead`` ends in a 1x1 convolution to one channel per class,
and both the loss and the prediction then use one channel per RoI: the
ground-truth label's in training, the predicted label's at test time. At
1203 classes the rest is waste: 300 test RoIs give a (300, 1203, 28, 28)
tensor (1.1 GB) of which 0.08% is used, and in training every class channel
is computed, stored for backward and back-propagated.

This head keeps ``FCNMaskHead``'s modules and parameter names (``convs``,
``upsample``, ``conv_logits``), so checkpoints load either way, and computes
``logit[n] = <w[label_n], x[n]> + b[label_n]`` per pixel from the gathered
rows of the predictor's weight: a batched matrix product for a plain 1x1
``Conv2d``, the same on normalized inputs and filters for
``mmlongtail.NormedConv2d`` (Norm Mask). Which form applies is decided by
what the predictor computes, not by its class name (:meth:`gather_mode`):
mmcv's ``Conv`` (its own ``nn.Conv2d`` subclass, what ``predictor_cfg=
dict(type='Conv')`` builds) computes a plain convolution and is gathered; any
other predictor (another forward, a kernel larger than 1x1, forward hooks)
computes the full convolution followed by a gather, and the head logs why
once. Loss, gradients and predicted masks equal ``FCNMaskHead``'s with the
same weights (up to float summation order).

At test time (no gradients) the gathered forward runs over chunks of
``inference_chunk_size`` RoIs on channels-last features, so a Fixed-AP pass
with thousands of detections per image holds the activations of one chunk.

``forward(x)`` without labels returns all classes, as ``FCNMaskHead`` does,
so mmdet's RoI heads work unchanged; ``forward(x, labels)``, or a forward
inside ``with head.labels_for_forward(labels):`` (how the RoI-head mixins of
:mod:`.roi_head_mixins` wrap mmdet's ``mask_loss``/``predict_mask``), gives
the gathered ``(N, 1, h, w)`` logits, which ``loss_and_target`` and
``predict_by_feat`` recognize.

``rcnn_test_cfg.mask_format``: ``'bitmap'`` (default, mmdet's ``(N, H, W)``
bool masks) or ``'rle'``: compressed COCO RLE dicts pasted and encoded
box-locally (:mod:`.mask_rle`), byte-identical to encoding the bitmaps, and
what ``mmlongtail.LVISMetric`` stores directly.
"""
from contextlib import contextmanager
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmcv.cnn.bricks.wrappers import Conv2d as MMCVConv2d
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.utils import ConfigType, InstanceList
from mmengine.logging import MMLogger
from torch import Tensor

from mmlongtail.models.layers import NormedConv2d
from mmlongtail.registry import MODELS
from .mask_rle import paste_masks_rle

MASK_FORMATS = ('bitmap', 'rle')


#: ``forward`` implementations that compute exactly ``F.conv2d(x, weight,
#: bias)``: torch's, and mmcv's ``Conv`` wrapper (it differs only for empty
#: inputs on torch < 1.4, where it returns the empty output of that shape).
STANDARD_CONV_FORWARDS = (nn.Conv2d.forward, MMCVConv2d.forward)

#: What :meth:`LabelGatheredFCNMaskHead.gather_mode` returns: the predictor's
#: label rows are gathered as a plain or a Norm Mask convolution, or the full
#: output is computed and then gathered.
GATHER_MODES = ('plain', 'normed', 'full')


def _pointwise_problem(conv: nn.Conv2d) -> Optional[str]:
    """Why ``conv`` is not a 1x1 convolution of its whole input, or None."""
    if not (conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.dilation == (1, 1)
            and conv.groups == 1):
        return (f'kernel {conv.kernel_size}, stride {conv.stride}, padding '
                f'{conv.padding}, dilation {conv.dilation}, groups '
                f'{conv.groups} (gathering needs a 1x1 kernel, stride 1, no '
                'padding, dilation 1, one group)')
    return None


def predictor_gather_mode(conv: nn.Module) -> Tuple[str, str]:
    """How the label rows of a mask predictor can be computed alone.

    Decided by what the module computes: its ``forward`` (and
    ``_conv_forward``) must be one whose result is known, it must be a 1x1
    convolution, and no forward hooks may change its output.

    Args:
        conv (nn.Module): The mask head's ``conv_logits``.

    Returns:
        tuple[str, str]: The mode (one of :data:`GATHER_MODES`) and, for
        ``'full'``, why the shortcut does not apply (``''`` otherwise).
    """
    cls = type(conv)
    name = f'{cls.__module__}.{cls.__qualname__}'
    if not isinstance(conv, nn.Conv2d):
        return 'full', f'{name} is not an nn.Conv2d'
    if conv._forward_hooks or conv._forward_pre_hooks:
        return 'full', f'{name} has forward hooks, which may change its output'
    if cls._conv_forward is not nn.Conv2d._conv_forward:
        return 'full', f'{name} overrides _conv_forward'
    problem = _pointwise_problem(conv)
    if problem is not None:
        return 'full', f'{name}: {problem}'
    if isinstance(conv, NormedConv2d):
        if (cls.forward is not NormedConv2d.forward
                or cls.normalize_input is not NormedConv2d.normalize_input):
            return 'full', (f'{name} overrides NormedConv2d.forward or '
                            'normalize_input, so its output is not the '
                            'normalized convolution')
        return 'normed', ''
    if cls.forward in STANDARD_CONV_FORWARDS:
        return 'plain', ''
    return 'full', (f'{name} has its own forward (not nn.Conv2d\'s, mmcv '
                    'Conv\'s or mmlongtail.NormedConv2d\'s), whose per-class '
                    'output cannot be computed from gathered weights')


@MODELS.register_module()
class LabelGatheredFCNMaskHead(FCNMaskHead):
    """``FCNMaskHead`` computing only each RoI's label channel.

    Same arguments as mmdet's ``FCNMaskHead`` (``num_convs``,
    ``conv_out_channels``, ``num_classes``, ``predictor_cfg``, ...), and:

    Args:
        inference_chunk_size (int): At test time (no gradients) the gathered
            forward runs over at most this many RoIs at a time, and so do
            the RoI heads' mask feature extraction (:mod:`.roi_head_mixins`),
            which bounds the activation memory by the chunk, not by the
            number of detections. Defaults to 256.
        inference_channels_last (bool): At test time, run the convolutions
            and the deconvolution on channels-last RoI features (the same
            values up to float summation order; on CPU the 2x2 stride-2
            deconvolution is about 3x faster so, measured in
            ``tools/benchmark_inference.py``). Defaults to True.
    """

    _pending_labels: Optional[Tensor] = None
    _fallback_logged: Optional[type] = None

    def __init__(self,
                 *args,
                 inference_chunk_size: int = 256,
                 inference_channels_last: bool = True,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.inference_channels_last = bool(inference_channels_last)
        if (not isinstance(inference_chunk_size, int)
                or isinstance(inference_chunk_size, bool)
                or inference_chunk_size < 1):
            raise ValueError('inference_chunk_size must be a positive int, '
                             f'got {inference_chunk_size!r}')
        self.inference_chunk_size = inference_chunk_size

    @property
    def pending_labels(self) -> Optional[Tensor]:
        """The labels set by an enclosing :meth:`labels_for_forward`."""
        return self._pending_labels

    @contextmanager
    def labels_for_forward(self, labels: Tensor) -> Iterator[None]:
        """Within the block, :meth:`forward` without labels gathers
        ``labels`` (``(N,)``, one per RoI of the next forward). Blocks nest:
        the enclosing labels are restored on exit."""
        previous = self._pending_labels
        self._pending_labels = labels
        try:
            yield
        finally:
            self._pending_labels = previous

    def chunks_for_inference(self, n: int) -> Optional[List[slice]]:
        """RoI slices of at most ``inference_chunk_size`` for a gathered
        forward without gradients (test time), or None (one pass).

        At test time every detection gets a mask: a Fixed-AP pass (no
        per-image cap) gives thousands per image, and one forward over all
        of them holds several ``(N, C', 2h, 2w)`` float activations at once
        (2,000 RoIs x 64 x 28 x 28 x 4 B = 400 MB each at the demo's width,
        1.6 GB at LVIS's 256). In chunks, the activations are those of
        ``inference_chunk_size`` RoIs; only the gathered ``(N, 1, 2h, 2w)``
        logits grow with N.
        """
        if self.training or torch.is_grad_enabled() \
                or n <= self.inference_chunk_size:
            return None
        k = self.inference_chunk_size
        return [slice(s, min(s + k, n)) for s in range(0, n, k)]

    def forward_features(self, x: Tensor) -> Tensor:
        """Everything before the predictor: ``(N, C', 2h, 2w)``."""
        for conv in self.convs:
            x = conv(x)
        if self.upsample is not None:
            x = self.upsample(x)
            if self.upsample_method == 'deconv':
                x = self.relu(x)
        return x

    def forward(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Mask logits.

        Args:
            x (Tensor): RoI features, ``(N, C_in, h, w)``.
            labels (Tensor, optional): ``(N,)`` class of each RoI. None: the
                labels of an enclosing :meth:`labels_for_forward`, else all
                classes, as ``FCNMaskHead``.

        Returns:
            Tensor: ``(N, 1, 2h, 2w)`` logits of each RoI's label, or
            ``(N, num_classes, 2h, 2w)`` without labels (or with
            ``class_agnostic``, ``(N, 1, 2h, 2w)`` always).
        """
        if labels is None:
            labels = self._pending_labels
        if labels is None or self.class_agnostic:
            return self.conv_logits(self.forward_features(x))
        labels = labels.view(-1)
        if labels.numel() != x.size(0):
            raise ValueError(
                f'{labels.numel()} labels for {x.size(0)} mask RoIs')
        features = self.forward_features
        if self.inference_channels_last and not self.training \
                and not torch.is_grad_enabled():

            def features(xx: Tensor) -> Tensor:
                return self.forward_features(
                    xx.contiguous(memory_format=torch.channels_last))

        chunks = self.chunks_for_inference(x.size(0))
        if chunks is None:
            return self.gathered_logits(features(x), labels)
        return torch.cat([
            self.gathered_logits(features(x[c]), labels[c]) for c in chunks
        ])

    def gathered_logits(self, feats: Tensor, labels: Tensor) -> Tensor:
        """The predictor's output channel ``labels[n]`` for each RoI.

        Args:
            feats (Tensor): ``(N, C', H, W)`` from :meth:`forward_features`.
            labels (Tensor): ``(N,)`` int64 in ``[0, num_classes)``.

        Returns:
            Tensor: ``(N, 1, H, W)``.
        """
        n = feats.size(0)
        labels = labels.long().view(-1)
        if labels.numel() != n:
            raise ValueError(f'{labels.numel()} labels for {n} mask RoIs')
        if n and (int(labels.min()) < 0
                  or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f'mask labels must lie in [0, {self.num_classes}), got '
                f'{sorted(set(labels.tolist()))[:10]}')
        conv = self.conv_logits
        mode = self.gather_mode()
        if mode == 'full':
            # the full output, then the label channel
            out = conv(feats)
            return out[torch.arange(n, device=out.device), labels][:, None]
        h, w = feats.shape[-2:]
        weight = conv.normalized_weight() if mode == 'normed' else \
            conv.weight
        rows = weight.flatten(1)[labels]  # (N, C')
        if feats.is_contiguous(memory_format=torch.channels_last) \
                and not feats.is_contiguous():
            # (N, H, W, C') is a view of channels-last features
            out = torch.bmm(
                feats.permute(0, 2, 3, 1).reshape(n, h * w, -1),
                rows[:, :, None]).view(n, 1, h, w)
        else:
            out = torch.bmm(rows[:, None, :],
                            feats.flatten(2)).view(n, 1, h, w)
        if mode == 'normed':
            # <w, T x / (|x|^p + eps)> = T <w, x> / (|x|^p + eps) per pixel:
            # the normalized (N, C', H, W) input is never materialized
            out = out * (conv.temperature / conv.input_divisor(feats))
        if conv.bias is not None:
            out = out + conv.bias[labels].view(n, 1, 1, 1)
        return out

    def gather_mode(self) -> str:
        """How :meth:`gathered_logits` computes the label channels: from the
        gathered rows of a plain (``'plain'``) or Norm Mask (``'normed'``)
        1x1 predictor, or from the predictor's full output (``'full'``; the
        reason is logged once per head and predictor class).

        Returns:
            str: One of :data:`GATHER_MODES`.
        """
        mode, reason = predictor_gather_mode(self.conv_logits)
        if (mode == 'full'
                and self._fallback_logged is not type(self.conv_logits)):
            self._fallback_logged = type(self.conv_logits)
            MMLogger.get_current_instance().warning(
                f'LabelGatheredFCNMaskHead computes all {self.num_classes} '
                f'mask channels and then picks each RoI\'s label: {reason}. '
                'Use predictor_cfg=dict(type=\'Conv\') or '
                'dict(type=\'mmlongtail.NormedConv2d\') to compute only the '
                'label channel.')
        return mode

    def is_gathered(self, mask_preds: Tensor) -> bool:
        """Whether ``mask_preds`` hold one (the label's) channel per RoI."""
        return (not self.class_agnostic and self.num_classes > 1
                and mask_preds.size(1) == 1)

    def loss_and_target(self, mask_preds: Tensor,
                        sampling_results: List[SamplingResult],
                        batch_gt_instances: InstanceList,
                        rcnn_train_cfg: ConfigType) -> dict:
        """``FCNMaskHead``'s loss; ``mask_preds`` may be gathered
        ``(num_pos, 1, h, w)`` (the positives' ground-truth labels) or all
        classes."""
        if not self.is_gathered(mask_preds):
            return super().loss_and_target(mask_preds, sampling_results,
                                           batch_gt_instances, rcnn_train_cfg)
        mask_targets = self.get_targets(sampling_results, batch_gt_instances,
                                        rcnn_train_cfg)
        if mask_preds.size(0) == 0:
            loss_mask = mask_preds.sum()
        else:
            channel = mask_preds.new_zeros(mask_preds.size(0),
                                           dtype=torch.long)
            loss_mask = self.loss_mask(mask_preds, mask_targets, channel)
        return dict(loss_mask=dict(loss_mask=loss_mask),
                    mask_targets=mask_targets)

    def _predict_by_feat_single(self,
                                mask_preds: Tensor,
                                bboxes: Tensor,
                                labels: Tensor,
                                img_meta: dict,
                                rcnn_test_cfg: ConfigType,
                                rescale: bool = False,
                                activate_map: bool = False):
        """One image's masks: ``(N, H, W)`` bitmaps (mmdet's) or, with
        ``rcnn_test_cfg.mask_format='rle'``, N compressed RLE dicts.

        Like ``FCNMaskHead``, ``bboxes`` are divided by the scale factor in
        place when ``rescale``.
        """
        fmt = rcnn_test_cfg.get('mask_format', 'bitmap')
        if fmt not in MASK_FORMATS:
            raise ValueError(f'mask_format must be one of {MASK_FORMATS}, '
                             f'got {fmt!r}')
        gathered = self.is_gathered(mask_preds)
        if gathered:
            labels = torch.zeros_like(labels)  # channel 0 is the label's
        if fmt == 'bitmap':
            return super()._predict_by_feat_single(
                mask_preds, bboxes, labels, img_meta, rcnn_test_cfg, rescale,
                activate_map)
        n = mask_preds.size(0)
        if not self.class_agnostic and not gathered:
            mask_preds = mask_preds[torch.arange(n, device=labels.device),
                                    labels][:, None]
        probs = mask_preds.sigmoid() if not activate_map else \
            bboxes.new_tensor(mask_preds)
        scale = bboxes.new_tensor(img_meta['scale_factor']).repeat((1, 2))
        img_h, img_w = img_meta['ori_shape'][:2]
        if rescale:
            bboxes /= scale
        else:
            img_h = int(np.round(img_h * scale[0, 1].item()))
            img_w = int(np.round(img_w * scale[0, 0].item()))
        return paste_masks_rle(probs[:, 0], bboxes, img_h, img_w,
                               rcnn_test_cfg.mask_thr_binary)
