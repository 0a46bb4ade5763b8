"""Box-local mask results: paste each mask into its box's region only and
RLE-encode it from that region.

mmdet's ``FCNMaskHead`` pastes every mask into a full ``(N, H, W)`` image
tensor (300 x 800 x 1088 bools = 261 MB per LVIS image), which the metric
then transposes to Fortran order and encodes pixel by pixel. A mask is zero
outside its paste region (on CPU mmdet only ever writes that region), so its
COCO RLE follows from the region: the column-major runs of the region, put at
their global offsets ``x * H + y``, with the zero stretches between them.

:func:`paste_masks_rle` pastes one box at a time over its region, as mmdet's
``_do_paste_mask`` does on CPU (``skip_empty=True``): the same sampling grid,
computed with the same float32 operations, and the same ``grid_sample``
(:func:`paste_region`; boxes without area, or outside the image, go through
``_do_paste_mask`` itself), and encodes each region as it is pasted
(:func:`region_counts`); the RLEs are byte-identical to
``pycocotools.mask.encode`` of mmdet's full pasted masks (tested on boxes
touching the image border, degenerate boxes and masks empty after
thresholding). The COCO string compression is pycocotools' own
(``frPyObjects`` of the uncompressed counts).
"""
import math
from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Uncompressed run lengths of at most this many masks are held before
#: pycocotools compresses them.
ENCODE_CHUNK = 256


def region_counts(region: np.ndarray, y0: int, x0: int, height: int,
                  width: int) -> np.ndarray:
    """Uncompressed COCO RLE counts of an ``(height, width)`` mask that is
    zero outside ``region``, placed with its top-left pixel at ``(y0, x0)``.

    Args:
        region (np.ndarray): ``(h, w)`` bool/0-1 mask of the region.
        y0 (int): Top row of the region in the image.
        x0 (int): Left column of the region in the image.
        height (int): Image height ``H``.
        width (int): Image width ``W``.

    Returns:
        np.ndarray: uint32 counts, alternating zeros and ones, starting with
        zeros (possibly 0), in column-major pixel order, as
        ``pycocotools``' ``rleEncode`` makes them.
    """
    h, w = region.shape
    if y0 < 0 or x0 < 0 or y0 + h > height or x0 + w > width:
        raise ValueError(
            f'region ({h}, {w}) at ({y0}, {x0}) does not fit in an image of '
            f'({height}, {width})')
    total = height * width
    if h == 0 or w == 0:
        return np.array([total], np.uint32)
    # each column with a zero above and below, flattened column by column
    padded = np.zeros((w, h + 2), np.int8)
    padded[:, 1:-1] = region.T
    d = np.diff(padded.ravel())
    starts = np.flatnonzero(d == 1) + 1
    if starts.size == 0:
        return np.array([total], np.uint32)
    ends = np.flatnonzero(d == -1) + 1
    col, row = np.divmod(starts, h + 2)
    gs = (x0 + col) * height + (y0 + row - 1)
    col, row = np.divmod(ends, h + 2)
    ge = (x0 + col) * height + (y0 + row - 1)
    # runs that continue into the next column (full-height regions) merge
    joined = gs[1:] == ge[:-1]
    if joined.any():
        keep = ~joined
        gs = gs[np.concatenate(([True], keep))]
        ge = ge[np.concatenate((keep, [True]))]
    counts = np.empty(2 * gs.size + 1, np.int64)
    counts[0::2] = np.concatenate((gs, [total])) - np.concatenate(([0], ge))
    counts[1::2] = ge - gs
    if counts[-1] == 0:
        counts = counts[:-1]
    return counts.astype(np.uint32)


def encode_region_rle(regions: Sequence[np.ndarray],
                      origins: Sequence[Sequence[int]], height: int,
                      width: int) -> List[dict]:
    """Compressed COCO RLEs of full-image masks given by their regions.

    Args:
        regions (Sequence[np.ndarray]): ``(h_i, w_i)`` binary regions.
        origins (Sequence): ``(y0_i, x0_i)`` of each region.
        height (int): Image height.
        width (int): Image width.

    Returns:
        list[dict]: ``{'size': [H, W], 'counts': bytes}``, byte-identical to
        ``pycocotools.mask.encode`` of the full masks.
    """
    import pycocotools.mask as mask_util
    if len(regions) != len(origins):
        raise ValueError(f'{len(regions)} regions but {len(origins)} origins')
    if not regions:
        return []
    ucs = [{
        'size': [height, width],
        'counts': region_counts(r, int(o[0]), int(o[1]), height, width)
    } for r, o in zip(regions, origins)]
    return mask_util.frPyObjects(ucs, height, width)


def paste_region(mask_prob: Tensor, box: Tensor, img_h: int, img_w: int,
                 grid_y: Tensor, grid_x: Tensor):
    """One mask pasted over its box's region, as mmdet's ``_do_paste_mask``
    with one box and ``skip_empty=True`` computes it (bit for bit), with
    less per-call work.

    Args:
        mask_prob (Tensor): ``(h, w)`` probabilities.
        box (Tensor): ``(4,)`` float32 xyxy box.
        img_h (int): Image height.
        img_w (int): Image width.
        grid_y (Tensor): ``arange(img_h) + 0.5`` in float32.
        grid_x (Tensor): ``arange(img_w) + 0.5`` in float32.

    Returns:
        tuple: ``(region, (y0, x0))``: the ``(h', w')`` float32 pasted
        region and its top-left pixel, or None where the box has no area,
        lies outside the image or gives non-finite grid coordinates (then
        mmdet's own function is the reference).
    """
    x0, y0, x1, y1 = box.tolist()
    if not (x1 > x0 and y1 > y0):
        return None
    # mmdet: floor(min) - 1 clamped at 0; ceil(max) + 1 clamped at the size
    x0_int = max(math.floor(x0) - 1, 0)
    y0_int = max(math.floor(y0) - 1, 0)
    x1_int = min(math.ceil(x1) + 1, img_w)
    y1_int = min(math.ceil(y1) + 1, img_h)
    if x1_int <= x0_int or y1_int <= y0_int:
        return None
    b = box.view(4, 1)
    # the float32 operations of _do_paste_mask, in its order
    img_y = (grid_y[y0_int:y1_int] - b[1]) / (b[3] - b[1]) * 2 - 1
    img_x = (grid_x[x0_int:x1_int] - b[0]) / (b[2] - b[0]) * 2 - 1
    if not (torch.isfinite(img_x).all() and torch.isfinite(img_y).all()):
        return None
    h, w = img_y.numel(), img_x.numel()
    grid = torch.stack(
        [img_x[None, None, :].expand(1, h, w),
         img_y[None, :, None].expand(1, h, w)], dim=3)
    region = F.grid_sample(
        mask_prob[None, None].to(torch.float32), grid, align_corners=False)
    return region[0, 0], (y0_int, x0_int)


def paste_masks_rle(mask_probs: Tensor, bboxes: Tensor, img_h: int,
                    img_w: int, threshold: float) -> List[dict]:
    """Paste masks into their boxes' regions and RLE-encode them.

    Args:
        mask_probs (Tensor): ``(N, h, w)`` mask probabilities of each box's
            class.
        bboxes (Tensor): ``(N, 4)`` xyxy boxes in the output image's scale.
        img_h (int): Output image height.
        img_w (int): Output image width.
        threshold (float): Binarization threshold (``>=``), mmdet's
            ``mask_thr_binary``; must be ``>= 0`` (soft masks are not RLE).

    Returns:
        list[dict]: N compressed RLEs, byte-identical to encoding mmdet's
        ``FCNMaskHead`` full-image masks with pycocotools.

    Memory: one detection's box-local region (float probabilities, then its
    binary mask: about 6 bytes per box pixel, never a full image) at a time;
    besides, per detection, its run lengths (4 bytes per run, at most
    :data:`ENCODE_CHUNK` detections uncompressed) and its compressed RLE.
    """
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import \
        _do_paste_mask
    if threshold < 0:
        raise ValueError(
            f'RLE masks need a binarization threshold >= 0, got {threshold} '
            '(a negative mask_thr_binary asks for soft masks: use full '
            'masks)')
    if mask_probs.dim() != 3 or bboxes.shape != (mask_probs.size(0), 4):
        raise ValueError(
            f'mask_probs must be (N, h, w) and bboxes (N, 4), got '
            f'{tuple(mask_probs.shape)} and {tuple(bboxes.shape)}')
    import pycocotools.mask as mask_util
    img_h, img_w = int(img_h), int(img_w)
    device = mask_probs.device
    grid_y = torch.arange(img_h, device=device).to(torch.float32) + 0.5
    grid_x = torch.arange(img_w, device=device).to(torch.float32) + 0.5
    boxes = bboxes.to(torch.float32)
    rles: List[dict] = []
    pending: List[dict] = []
    for i in range(mask_probs.size(0)):
        pasted = paste_region(mask_probs[i], boxes[i], img_h, img_w, grid_y,
                              grid_x)
        if pasted is None:
            region, (ys, xs) = _do_paste_mask(
                mask_probs[i:i + 1, None], bboxes[i:i + 1], img_h, img_w,
                skip_empty=True)
            pasted = region[0], (int(ys.start), int(xs.start))
        region, (y0, x0) = pasted
        # the region is dropped here: only its run lengths are kept
        pending.append({
            'size': [img_h, img_w],
            'counts': region_counts((region >= threshold).cpu().numpy(), y0,
                                    x0, img_h, img_w)
        })
        if len(pending) == ENCODE_CHUNK:
            rles.extend(mask_util.frPyObjects(pending, img_h, img_w))
            pending = []
    if pending:
        rles.extend(mask_util.frPyObjects(pending, img_h, img_w))
    return rles


def decode_rles(rles: Sequence[dict]) -> Tensor:
    """``(N, H, W)`` bool masks from RLEs (for visualization and tests)."""
    import pycocotools.mask as mask_util
    if len(rles) == 0:
        return torch.zeros(0, 0, 0, dtype=torch.bool)
    return torch.from_numpy(
        mask_util.decode(list(rles)).transpose(2, 0, 1).astype(bool))
