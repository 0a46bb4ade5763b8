"""The inference path on the device equals the CPU: the early-stopping NMS
(and mmdet's, which it replaces), the label-gathered mask head (forward,
loss gradients, predicted masks) and mask pasting with RLE encoding.

Exact where the computation is exact on both (kept detections, labels,
order, RLE bytes of the same binary masks); thresholded masks may differ
only at pixels whose CPU float64 probability lies within ``MASK_EPS`` of
the threshold (rounding of the convolutions and bilinear sampling).
"""
import copy
import types

import numpy as np
import pytest
import torch
from mmdet.models.layers import multiclass_nms
from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope

import mmlongtail  # noqa: F401
from mmlongtail.evaluation.lvis_detections import compact_rles
from mmlongtail.models.mask_heads import decode_rles, paste_masks_rle
from mmlongtail.models.utils import LazyDecodedBoxes, exact_multiclass_nms

pytestmark = pytest.mark.cuda

NMS = dict(type='nms', iou_threshold=0.5)
IMG_SHAPE = (480, 640)
RESCALE = [1 / 1.3, 1 / 1.25]
#: A pixel may binarize differently on the two devices only this close to
#: the threshold (probability; the logits differ by float32 rounding, at
#: most ~4e-5 measured, which moves a probability by at most a quarter of
#: that).
MASK_EPS = 1e-4


def _nms_inputs(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    rois = torch.rand(n, 4, generator=g) * 300
    rois[:, 2:] += rois[:, :2] + 1
    deltas = torch.randn(n, 4 * c, generator=g)
    # distinct scores: no ties, so the order is defined by the scores alone
    scores = (torch.randperm(n * (c + 1), generator=g).float() + 1).view(
        n, c + 1) / (n * (c + 1) + 1)
    return rois, deltas, scores


def _coder():
    return DeltaXYWHBBoxCoder(target_stds=[0.1, 0.1, 0.2, 0.2])


def _nms(device, rois, deltas, scores, c, thr, max_num, topk):
    rois, deltas, scores = (t.to(device) for t in (rois, deltas, scores))
    lazy = LazyDecodedBoxes(rois, deltas, _coder(), IMG_SHAPE, RESCALE, c)
    eager = lazy.decode_all()
    out = [exact_multiclass_nms(boxes, scores, thr, NMS, max_num, topk)
           for boxes in (lazy, eager)]
    dets, labels = multiclass_nms(eager, scores, thr, NMS, max_num)
    return out, (dets[:, :4], dets[:, 4], labels)


@pytest.mark.parametrize('n, c, thr, max_num, topk', [
    (200, 80, 0.05, 100, -1),
    (150, 120, 1e-4, 300, -1),   # mmcv's per-class loop (> split_thr)
    (120, 30, 0.0, -1, 20),      # Fixed AP: no cap, top-k per class
])
def test_nms_equals_cpu(n, c, thr, max_num, topk, cuda_device):
    inputs = _nms_inputs(n, c, seed=n + c)
    ours, mmdet_dev = _nms(cuda_device, *inputs, c, thr, max_num, topk)
    ref, mmdet_cpu = _nms(torch.device('cpu'), *inputs, c, thr, max_num,
                          topk)
    for (b, s, lab, inds), (rb, rs, rl, ri) in zip(ours + ours, ref + ref):
        assert b.device.type == cuda_device.type
        assert torch.equal(lab.cpu(), rl) and torch.equal(inds.cpu(), ri)
        assert torch.equal(s.cpu(), rs)
        # decoding (exp, clamps) may round differently on the device
        torch.testing.assert_close(b.cpu(), rb, rtol=1e-6, atol=1e-4)
    assert len(ref[0][2]) > 0
    # mmdet's multiclass_nms (mmcv's device kernel) keeps the same ones
    if topk <= 0:
        assert torch.equal(mmdet_dev[2].cpu(), mmdet_cpu[2])
        assert torch.equal(mmdet_dev[1].cpu(), mmdet_cpu[1])
        assert torch.equal(ours[0][2].cpu(), mmdet_dev[2].cpu())


def _mask_heads(device):
    cfg = dict(type='mmlongtail.LabelGatheredFCNMaskHead', num_convs=2,
               in_channels=8, conv_out_channels=8, num_classes=37,
               predictor_cfg=dict(type='mmlongtail.NormedConv2d',
                                  temperature=20),
               loss_mask=dict(type='CrossEntropyLoss', use_mask=True,
                              loss_weight=1.0))
    with DefaultScope.overwrite_default_scope('mmdet'):
        torch.manual_seed(0)
        head = MMDET_MODELS.build(cfg)
    head.init_weights()
    with torch.no_grad():
        head.conv_logits.bias.normal_()  # gathering the biases is tested
    ours = copy.deepcopy(head).to(device)
    return head.double(), ours


def _off_threshold_equal(got, want, prob, thr, what):
    """Binary masks equal except where ``prob`` is within MASK_EPS of
    ``thr``."""
    differ = got != want
    near = (prob - thr).abs() < MASK_EPS
    assert not (differ & ~near).any(), (
        f'{what}: {int((differ & ~near).sum())} pixels differ away from '
        'the threshold')


def test_label_gathered_mask_head_equals_cpu(cuda_device, exact_fp32):
    reference, ours = _mask_heads(cuda_device)
    g = torch.Generator().manual_seed(1)
    n = 11
    x = torch.randn(n, 8, 14, 14, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 37, (n, ), generator=g)
    targets = (torch.rand(n, 28, 28, generator=g) > 0.5).double()
    results = [types.SimpleNamespace(pos_gt_labels=labels[:6]),
               types.SimpleNamespace(pos_gt_labels=labels[6:])]
    outs = []
    for head, dev, dtype in ((reference, torch.device('cpu'), torch.float64),
                             (ours, cuda_device, torch.float32)):
        target = targets.to(dev, dtype)
        head.get_targets = lambda *a, _t=target, **k: _t
        xx = x.to(dev, dtype).clone().requires_grad_(True)
        head.zero_grad()
        preds = head(xx, labels.to(dev))
        assert preds.shape == (n, 1, 28, 28)
        loss = head.loss_and_target(
            preds, [types.SimpleNamespace(
                pos_gt_labels=r.pos_gt_labels.to(dev)) for r in results],
            None, None)['loss_mask']['loss_mask']
        loss.backward()
        outs.append((preds.detach().cpu().double(),
                     loss.detach().cpu().double(), xx.grad.cpu().double(),
                     {k: p.grad.cpu().double()
                      for k, p in head.named_parameters()}))
    (p_ref, loss_ref, gx_ref, gp_ref), (p, loss, gx, gp) = outs
    # float32 through two convs, the upsampling and the normalized
    # predictor (temperature 20): measured 3.5e-5 on logits up to ~20
    torch.testing.assert_close(p, p_ref, rtol=1e-4,
                               atol=1e-5 * float(p_ref.abs().max()))
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4,
                               atol=1e-5 * float(gx_ref.abs().max()))
    for k in gp_ref:
        torch.testing.assert_close(gp[k], gp_ref[k], rtol=1e-4,
                                   atol=1e-5 * float(gp_ref[k].abs().max()))

    # predicted masks: bitmaps and RLE (rescaled to the original image)
    boxes = torch.rand(n, 4, generator=g) * 40
    boxes[:, 2:] += boxes[:, :2] + 2
    boxes[0] = torch.tensor([0., 0., 75., 62.])
    meta = dict(scale_factor=(1.25, 1.25), ori_shape=(50, 60),
                img_shape=(62, 75))
    masks = {}
    for side, head, dev in (('cpu', reference.float(), torch.device('cpu')),
                            ('dev', ours, cuda_device)):
        with torch.no_grad():
            gathered = head(x.to(dev, torch.float32), labels.to(dev))
            for fmt in ('bitmap', 'rle'):
                masks[side + fmt] = head._predict_by_feat_single(
                    gathered, boxes.to(dev).clone(), labels.to(dev), meta,
                    ConfigDict(mask_thr_binary=0.5, mask_format=fmt),
                    rescale=True)
    assert masks['devbitmap'].device.type == cuda_device.type
    # the probabilities of the pasted masks, from the float64 logits
    prob = _do_paste_mask(p_ref.sigmoid().float(), boxes / 1.25, 50, 60,
                          skip_empty=False)[0]
    cpu_bitmap = masks['cpubitmap']
    assert cpu_bitmap.any()
    _off_threshold_equal(masks['devbitmap'].cpu(), cpu_bitmap, prob, 0.5,
                         'bitmap')
    _off_threshold_equal(decode_rles(masks['devrle']),
                         decode_rles(masks['cpurle']), prob, 0.5, 'rle')
    assert torch.equal(decode_rles(masks['cpurle']), cpu_bitmap)


def test_paste_and_rle_equal_cpu(cuda_device):
    g = torch.Generator().manual_seed(0)
    h, w = 61, 83
    boxes = torch.tensor([
        [10.3, 5.7, 40.2, 30.9],
        [0.0, 0.0, 83.0, 61.0],      # the whole image
        [-5.0, -3.0, 20.0, 15.0],    # out of the image top-left
        [70.5, 50.2, 95.0, 70.0],    # out of the image bottom-right
        [30.0, 30.0, 30.0, 45.0],    # zero width
        [12.0, 12.0, 12.4, 12.2],    # sub-pixel
        [5.0, 40.0, 60.0, 61.0],     # touches the bottom border
    ])
    probs = torch.rand(len(boxes), 28, 28, generator=g)
    ref = paste_masks_rle(probs, boxes.clone(), h, w, 0.5)
    got = paste_masks_rle(probs.to(cuda_device), boxes.to(cuda_device), h,
                          w, 0.5)
    prob = _do_paste_mask(probs[:, None], boxes, h, w, skip_empty=False)[0]
    _off_threshold_equal(decode_rles(got), decode_rles(ref), prob, 0.5,
                         'paste_masks_rle')
    # the metric's compact RLEs of device masks equal those of CPU masks
    masks = decode_rles(ref)
    assert masks.any()
    compact = compact_rles(masks.to(cuda_device))
    assert compact == compact_rles(masks) == compact_rles(
        masks.numpy().astype(np.uint8))
    assert all(isinstance(r['counts'], str) for r in compact)
