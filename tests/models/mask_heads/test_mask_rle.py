"""Box-local RLE: byte-identical to pycocotools' encoding of the full
masks, and paste_masks_rle identical to mmdet FCNMaskHead's pasted bitmaps
(border-touching, degenerate and out-of-image boxes, masks empty after
thresholding)."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmengine.config import ConfigDict

from mmlongtail.models.mask_heads import (decode_rles, encode_region_rle,
                                          paste_masks_rle, region_counts)


def _coco(full):
    return mask_util.encode(np.asfortranarray(
        full.astype(np.uint8).transpose(1, 2, 0)))


@pytest.mark.parametrize('h,w,y0,x0,rh,rw', [
    (20, 30, 3, 4, 7, 9),      # interior
    (20, 30, 0, 0, 20, 30),    # the whole image
    (20, 30, 0, 5, 20, 6),     # full height: runs continue across columns
    (20, 30, 13, 21, 7, 9),    # bottom-right corner
    (20, 30, 0, 0, 1, 1),
    (20, 30, 5, 5, 0, 4),      # empty region
])
def test_region_counts_match_pycocotools(h, w, y0, x0, rh, rw):
    rng = np.random.default_rng(h * w + y0 + x0)
    for density in (0.0, 0.3, 0.97, 1.0):
        region = rng.random((rh, rw)) < density
        full = np.zeros((1, h, w), bool)
        full[0, y0:y0 + rh, x0:x0 + rw] = region
        ours = encode_region_rle([region], [(y0, x0)], h, w)
        assert ours == _coco(full)
        assert np.array_equal(decode_rles(ours).numpy(), full)


def test_region_outside_image_raises():
    with pytest.raises(ValueError, match='does not fit'):
        region_counts(np.ones((5, 5), bool), 18, 0, 20, 30)


def _mmdet_bitmaps(probs, boxes, h, w, thr):
    head = FCNMaskHead(num_convs=0, in_channels=4, conv_out_channels=4,
                       num_classes=1, class_agnostic=True)
    cfg = ConfigDict(mask_thr_binary=thr)
    meta = dict(scale_factor=(1.0, 1.0), ori_shape=(h, w))
    logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6))[:, None]
    return head._predict_by_feat_single(logits, boxes.clone(),
                                        torch.zeros(len(boxes)).long(), meta,
                                        cfg, rescale=True), logits


def test_paste_masks_rle_equals_mmdet_full_paste():
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
    n = boxes.size(0)
    probs = torch.rand(n, 28, 28, generator=g)
    probs[3] *= 0.4  # empty after thresholding
    full, logits = _mmdet_bitmaps(probs, boxes, h, w, 0.5)
    ours = paste_masks_rle(torch.sigmoid(logits[:, 0]), boxes.clone(), h, w,
                           0.5)
    assert ours == _coco(full.numpy())
    assert torch.equal(decode_rles(ours), full)
    assert not full[3].any()


def test_paste_masks_rle_rejects_soft_masks():
    with pytest.raises(ValueError, match='threshold'):
        paste_masks_rle(torch.rand(1, 28, 28), torch.tensor([[0., 0., 5.,
                                                               5.]]), 10, 10,
                        -1)


def test_paste_masks_rle_across_encode_chunks(monkeypatch):
    """Compression in chunks of ENCODE_CHUNK masks: same bytes, same order."""
    from mmlongtail.models.mask_heads import mask_rle
    monkeypatch.setattr(mask_rle, 'ENCODE_CHUNK', 3)
    g = torch.Generator().manual_seed(1)
    h, w = 40, 50
    xy = torch.rand(8, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + 2 + torch.rand(8, 2, generator=g) * 20], 1)
    probs = torch.rand(8, 28, 28, generator=g)
    full, logits = _mmdet_bitmaps(probs, boxes, h, w, 0.5)
    ours = paste_masks_rle(torch.sigmoid(logits[:, 0]), boxes.clone(), h, w,
                           0.5)
    assert ours == _coco(full.numpy())


def test_paste_masks_rle_holds_no_regions(monkeypatch):
    """The box-local regions are encoded one at a time and dropped: when a
    region is encoded, no earlier region is alive (memory: one region, not
    N of them)."""
    import gc
    import weakref

    from mmlongtail.models.mask_heads import mask_rle
    refs, alive = [], []
    original = mask_rle.region_counts

    def spy(region, *args):
        gc.collect()
        alive.append(sum(r() is not None for r in refs))
        refs.append(weakref.ref(region))
        return original(region, *args)

    monkeypatch.setattr(mask_rle, 'region_counts', spy)
    n = 50
    boxes = torch.tensor([[10., 10., 90., 70.]]).repeat(n, 1)
    rles = paste_masks_rle(torch.rand(n, 28, 28), boxes, 100, 120, 0.5)
    assert len(rles) == n and len(alive) == n
    assert max(alive) == 0, alive


def test_paste_region_equals_mmdet_do_paste_mask_bit_for_bit():
    """The per-box paste reproduces _do_paste_mask's float region exactly
    (fractional, border-crossing, thin and huge boxes); boxes without area
    are left to mmdet's function."""
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import \
        _do_paste_mask

    from mmlongtail.models.mask_heads import paste_region
    g = torch.Generator().manual_seed(7)
    h, w = 97, 131
    n = 400
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 1.2, h * 1.2]) - 10
    wh = torch.rand(n, 2, generator=g) ** 3 * torch.tensor([w, h]) + 0.01
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[0] = torch.tensor([0., 0., w, h])
    boxes[1] = torch.tensor([-50., -50., w + 50., h + 50.])
    probs = torch.rand(n, 28, 28, generator=g)
    gy = torch.arange(h).to(torch.float32) + 0.5
    gx = torch.arange(w).to(torch.float32) + 0.5
    fast = 0
    for i in range(n):
        ours = paste_region(probs[i], boxes[i], h, w, gy, gx)
        if ours is None:
            continue
        fast += 1
        ref, (ys, xs) = _do_paste_mask(probs[i:i + 1, None], boxes[i:i + 1],
                                       h, w, skip_empty=True)
        assert ours[1] == (ys.start, xs.start)
        assert torch.equal(ours[0], ref[0]), i
    assert fast > 300
    assert paste_region(probs[0], torch.tensor([5., 5., 5., 9.]), h, w, gy,
                        gx) is None
