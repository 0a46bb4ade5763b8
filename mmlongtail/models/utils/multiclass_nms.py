"""Exact early-stopping multiclass NMS with lazy box decoding.

mmdet's ``multiclass_nms`` takes every class of every proposal above
``score_thr`` (up to 1000 x 1203 = 1.2M candidates per image at LVIS's
``score_thr=1e-4``), decodes all of them beforehand (in ``BBoxHead``), runs
per-class NMS over all of them, and then keeps the best ``max_per_img``.
Greedy NMS only lets a box be suppressed by a higher-scoring *kept* box of
the same class, so the candidates can be visited in score order and the
search stopped once ``max_per_img`` survivors exist: the later candidates
cannot reach the output and cannot change an earlier decision. Only the
visited candidates need decoding (:class:`LazyDecodedBoxes`).

Exactness. The result (boxes, scores, labels, order) is identical to
``mmdet.models.layers.multiclass_nms`` followed by ``[:max_per_img]``:

* the IoU test is mmcv's CPU ``nms`` arithmetic (float32, same operation
  order), applied to the same offset boxes ``mmcv.ops.batched_nms`` makes
  (``box + label * (max_coordinate + 1)``, rounded to float32 as there), so
  rounding at the offset scale decides borderline IoUs the same way. This
  needs ``max_coordinate``, the largest coordinate over *all* candidates
  above the threshold; :meth:`LazyDecodedBoxes.max_coordinate` finds it
  exactly from per-proposal upper bounds, decoding only the proposals whose
  bound can beat the running maximum.
* exact ties in score are visited, and output, in flat candidate order
  (proposal index, then class), i.e. ``(-score, proposal, class)``
  lexicographically. mmdet sorts with torch's unstable sort, whose order
  among equal scores is unspecified (it differs from ours once more than 16
  scores are sorted); so the two outputs agree exactly whenever no two
  candidates that reach the output, or suppress one another, have bitwise
  equal scores, and otherwise differ at most in the order of, and choice
  among, the tied candidates.
* boxes are assumed non-negative (``BBoxHead`` clamps them to the image), so
  that the offsets keep classes apart as in mmdet.
* ``nms_cfg['class_agnostic']=True``: like mmcv's ``batched_nms``, NMS is
  across classes only below ``split_thr`` candidates (default 10,000); at or
  above it mmcv loops over classes on the raw boxes, and so does this.

``topk_per_class=k`` (the Fixed AP test-time mode, Dave et al. 2021) keeps at
most ``k`` survivors per class: identical to mmdet's NMS without a cap
followed by each class's first ``k`` (by score) survivors.
"""
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from mmcv.ops import nms as mmcv_nms
from torch import Tensor

#: ``nms_cfg`` keys this implementation reproduces exactly.
SUPPORTED_NMS_KEYS = ('type', 'iou_threshold', 'iou_thr', 'offset',
                      'class_agnostic', 'split_thr', 'max_num',
                      'score_threshold')

# candidates visited per round: the first round takes the best
# max(4 * max_num, _MIN_CHUNK), later rounds double, up to _MAX_CHUNK
_MIN_CHUNK = 1024
_MAX_CHUNK = 16384
# relative and absolute slack on the per-proposal coordinate upper bounds
_BOUND_SLACK = 1e-5
# max_coordinate: up to this many valid candidates are simply decoded
_EXACT_MAX_DECODE = 65536
# proposals decoded under the loose (global) bound before tighter bounds
_LOOSE_SCAN_ROWS = 64


def supports_nms_cfg(nms_cfg: Optional[dict]) -> bool:
    """Whether :func:`exact_multiclass_nms` reproduces ``nms_cfg`` exactly:
    hard NMS (``type='nms'``) with keys in :data:`SUPPORTED_NMS_KEYS`."""
    if nms_cfg is None:
        return False
    if nms_cfg.get('type', 'nms') not in ('nms', mmcv_nms):
        return False
    return all(k in SUPPORTED_NMS_KEYS for k in nms_cfg)


class LazyDecodedBoxes:
    """The boxes ``BBoxHead._predict_by_feat_single`` would decode, on demand.

    Decoding is element-wise per (proposal, delta) row, so decoding any
    subset through the same ``bbox_coder`` gives bitwise the same boxes as
    decoding all of them (tested).

    Args:
        priors (Tensor): Proposals, ``(N, 4)`` xyxy.
        deltas (Tensor, optional): Regression output, ``(N, C * 4)``
            (class-specific) or ``(N, 4)`` (class-agnostic). None: the
            proposals themselves, clamped to ``img_shape`` as mmdet does for
            heads without regression.
        bbox_coder: The head's box coder (its ``decode(priors, deltas,
            max_shape=...)`` is called).
        img_shape (tuple, optional): ``(h, w)`` to clamp to.
        rescale_factor (Sequence[float], optional): Multiplied into the
            boxes after decoding (mmdet's ``scale_boxes`` with
            ``[1 / s for s in scale_factor]``). None: no rescale.
        num_classes (int): ``C``.
    """

    def __init__(self,
                 priors: Tensor,
                 deltas: Optional[Tensor],
                 bbox_coder: Any,
                 img_shape: Optional[Sequence[int]],
                 rescale_factor: Optional[Sequence[float]],
                 num_classes: int) -> None:
        if priors.dim() != 2 or priors.size(-1) != 4:
            raise ValueError(
                f'priors must be (N, 4), got {tuple(priors.shape)}')
        n = priors.size(0)
        if deltas is not None and (deltas.dim() != 2 or deltas.size(0) != n
                                   or deltas.size(1) not in (4,
                                                             4 * num_classes)):
            raise ValueError(
                f'deltas must be (N, 4) or (N, {4 * num_classes}) for N={n} '
                f'priors and {num_classes} classes, got {tuple(deltas.shape)}')
        self.priors = priors
        self.deltas = deltas
        self.bbox_coder = bbox_coder
        self.img_shape = img_shape
        self.rescale_factor = rescale_factor
        self.num_classes = num_classes
        self.class_agnostic = deltas is None or deltas.size(1) == 4
        self._agnostic_boxes: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.priors.size(0)

    def _rescale(self, boxes: Tensor) -> Tensor:
        if self.rescale_factor is None or boxes.size(0) == 0:
            return boxes
        from mmdet.structures.bbox import scale_boxes
        return scale_boxes(boxes, list(self.rescale_factor))

    def _decode(self, priors: Tensor, deltas: Tensor) -> Tensor:
        return self.bbox_coder.decode(
            priors, deltas, max_shape=self.img_shape)

    def agnostic_boxes(self) -> Tensor:
        """All ``(N, 4)`` boxes of a class-agnostic head (decoded once)."""
        if self._agnostic_boxes is None:
            if self.deltas is None:
                boxes = self.priors.clone()
                if self.img_shape is not None:
                    boxes[:, [0, 2]].clamp_(min=0, max=self.img_shape[1])
                    boxes[:, [1, 3]].clamp_(min=0, max=self.img_shape[0])
            else:
                boxes = self._decode(self.priors, self.deltas)
            self._agnostic_boxes = self._rescale(boxes)
        return self._agnostic_boxes

    def decode(self, prop: Tensor, cls: Tensor) -> Tensor:
        """Boxes of candidates (proposal ``prop[i]``, class ``cls[i]``),
        ``(K, 4)``."""
        if self.class_agnostic:
            return self.agnostic_boxes()[prop]
        if prop.numel() == 0:
            return self.priors.new_zeros((0, 4))
        deltas = self.deltas.view(len(self), self.num_classes, 4)[prop, cls]
        return self._rescale(self._decode(self.priors[prop], deltas))

    def decode_all(self) -> Tensor:
        """Every box, ``(N, C * 4)`` or ``(N, 4)``: mmdet's eager decode."""
        if self.class_agnostic:
            return self.agnostic_boxes()
        n = len(self)
        boxes = self._decode(
            self.priors.repeat_interleave(self.num_classes, dim=0),
            self.deltas.reshape(-1, 4))
        return self._rescale(boxes).view(n, -1)

    def _bounds_are_sound(self) -> bool:
        """Whether per-proposal maxima of the deltas bound x2/y2 from above:
        the coder is mmdet's plain ``DeltaXYWHBBoxCoder`` (x2 = cx + w / 2
        increases with dx and dw when the stds are positive and the
        proposals have non-negative size)."""
        from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
        coder = self.bbox_coder
        if type(coder) is not DeltaXYWHBBoxCoder:
            return False
        if any(float(s) <= 0 for s in coder.stds):
            return False
        wh = self.priors[:, 2:] - self.priors[:, :2]
        if self.rescale_factor is not None and any(
                float(s) <= 0 for s in self.rescale_factor):
            return False
        return bool((wh >= 0).all())

    def max_coordinate(self, valid: Tensor,
                       flat: Optional[Tensor] = None) -> Tensor:
        """``boxes.max()`` over the candidates in ``valid``, exactly.

        Args:
            valid (Tensor): ``(N, C)`` bool, the candidates above the score
                threshold (at least one).
            flat (Tensor, optional): ``valid.view(-1).nonzero()``, if known.

        Returns:
            Tensor: 0-d, the largest coordinate of any valid candidate's box
            (what ``mmcv.ops.batched_nms`` offsets by).
        """
        if self.class_agnostic:
            rows = valid.any(1)
            return self.agnostic_boxes()[rows].max()
        num_valid = int(valid.sum()) if flat is None else flat.numel()
        if num_valid <= _EXACT_MAX_DECODE or not self._bounds_are_sound():
            if flat is None:
                prop, cls = valid.nonzero(as_tuple=True)
            else:
                prop, cls = flat // self.num_classes, flat % self.num_classes
            return self.decode(prop, cls).max()
        rows = valid.any(1).nonzero(as_tuple=True)[0]
        # the largest delta of all bounds every dx, dy, dw, dh: one cheap
        # reduction gives each proposal an upper bound of its x2 and y2
        # (x1 <= x2, y1 <= y2), loose but usually enough, as some box
        # reaches the clamp
        top = self.deltas.max().expand(rows.numel(), 4)
        best, left = self._scan_bounds(valid, rows, self._upper(rows, top),
                                       None, _LOOSE_SCAN_ROWS)
        if left.numel():
            # tighter: each proposal's own largest deltas over valid classes
            n, c = valid.shape
            neg = torch.finfo(self.deltas.dtype).min
            dmax = self.deltas.view(n, c, 4)[left].masked_fill(
                ~valid[left][:, :, None], neg).amax(1)
            best, _ = self._scan_bounds(valid, left, self._upper(left, dmax),
                                        best, None)
        return best

    def _upper(self, rows: Tensor, deltas: Tensor) -> Tensor:
        """float64 upper bounds of the largest coordinate of ``rows``'
        boxes decoded with at most ``deltas``, with slack for rounding."""
        ub = self._rescale(self._decode(self.priors[rows], deltas))
        ub = torch.maximum(ub[:, 2], ub[:, 3]).double()
        ub = ub + ub.abs() * _BOUND_SLACK + _BOUND_SLACK
        if self.img_shape is not None and getattr(self.bbox_coder,
                                                  'clip_border', True):
            h, w = self.img_shape[:2]
            cap = self._rescale(
                self.priors.new_tensor([[w, h, w, h]], dtype=torch.float32))
            ub = ub.clamp(max=float(cap[0, 2:].max()))
        return ub

    def _scan_bounds(self, valid: Tensor, rows: Tensor, ub: Tensor,
                     best: Optional[Tensor],
                     limit: Optional[int]) -> Tuple[Tensor, Tensor]:
        """Decode ``rows`` (their valid classes) in decreasing bound order
        until the running maximum reaches the next bound.

        Returns the running maximum and the rows left unexamined when
        ``limit`` rows were decoded first (empty when the maximum is exact).
        """
        order = ub.argsort(descending=True)
        rows, ub = rows[order], ub[order]
        start, step = 0, 8
        while start < rows.numel():
            if best is not None and float(best) >= float(ub[start]):
                return best, rows[:0]
            if limit is not None and start >= limit:
                return best, rows[start:]
            chunk = rows[start:start + step]
            prop, cls = valid[chunk].nonzero(as_tuple=True)
            m = self.decode(chunk[prop], cls).max()
            best = m if best is None else torch.maximum(best, m)
            start += step
            step *= 2
        return best, rows[:0]


def _iou_suppressed(boxes: Tensor, areas: Tensor, kept: Tensor,
                    kept_areas: Tensor, offset: int,
                    iou_thr: Tensor) -> Tensor:
    """Which ``boxes`` some ``kept`` box overlaps by IoU > ``iou_thr``,
    computed exactly as mmcv's CPU ``nms`` computes it (float32)."""
    if kept.size(0) == 0 or boxes.size(0) == 0:
        return boxes.new_zeros(boxes.size(0), dtype=torch.bool)
    xx1 = torch.maximum(kept[None, :, 0], boxes[:, None, 0])
    yy1 = torch.maximum(kept[None, :, 1], boxes[:, None, 1])
    xx2 = torch.minimum(kept[None, :, 2], boxes[:, None, 2])
    yy2 = torch.minimum(kept[None, :, 3], boxes[:, None, 3])
    w = (xx2 - xx1 + offset).clamp_(min=0)
    h = (yy2 - yy1 + offset).clamp_(min=0)
    inter = w * h
    ovr = inter / (kept_areas[None, :] + areas[:, None] - inter)
    return (ovr > iou_thr).any(1)


class _Candidates:
    """The above-threshold candidates of one image, in visiting order."""

    def __init__(self, scores: Tensor, score_thr: float, extra_thr: float):
        n, c1 = scores.shape
        self.num_classes = c1 - 1
        cls_scores = scores[:, :-1]
        valid = cls_scores > score_thr
        if extra_thr > 0:
            valid &= cls_scores > extra_thr
        self.valid = valid
        # flat index i * C + c, ascending: the tie order
        self.flat = valid.view(-1).nonzero(as_tuple=True)[0]
        self.scores = cls_scores.reshape(-1)[self.flat]

    def __len__(self) -> int:
        return self.flat.numel()


def _stable_desc(scores: Tensor) -> Tensor:
    """Argsort by descending score; ties keep their (ascending) position."""
    return torch.sort(scores, descending=True, stable=True)[1]


def exact_multiclass_nms(
    boxes: Union[Tensor, LazyDecodedBoxes],
    scores: Tensor,
    score_thr: float,
    nms_cfg: Dict[str, Any],
    max_num: int = -1,
    topk_per_class: int = -1,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Early-stopping multiclass NMS, identical to mmdet's ``multiclass_nms``.

    Args:
        boxes (Tensor | LazyDecodedBoxes): ``(N, C * 4)`` or ``(N, 4)``
            (shared by all classes) decoded boxes, or boxes decoded on demand.
        scores (Tensor): ``(N, C + 1)``, background last (ignored).
        score_thr (float): Candidates need a score strictly above it.
        nms_cfg (dict): mmcv ``batched_nms`` config, hard NMS only (see
            :func:`supports_nms_cfg`).
        max_num (int): Detections kept per image (mmdet's ``max_per_img``);
            ``<= 0``: no cap.
        topk_per_class (int): At most this many detections per class
            (the Fixed AP mode); ``<= 0``: no per-class cap.

    Returns:
        tuple: ``bboxes`` ``(K, 4)``, ``scores`` ``(K,)``, ``labels``
        ``(K,)`` int64 and ``inds`` ``(K,)``: each detection's flat candidate
        index ``proposal * C + class``. Sorted by descending score, ties by
        ``inds`` (see the module docstring).
    """
    if scores.dim() != 2 or scores.size(1) < 2:
        raise ValueError('scores must be (N, C + 1) with a background column '
                         f'last, got {tuple(scores.shape)}')
    n, num_classes = scores.size(0), scores.size(1) - 1
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.size(0) != n or boxes.size(1) not in (
                4, 4 * num_classes):
            raise ValueError(
                f'boxes must be (N, 4) or (N, {4 * num_classes}) for scores '
                f'{tuple(scores.shape)}, got {tuple(boxes.shape)}')
    elif len(boxes) != n or boxes.num_classes != num_classes:
        raise ValueError(
            f'{len(boxes)} lazily decoded boxes of {boxes.num_classes} '
            f'classes do not match scores {tuple(scores.shape)}')
    if not supports_nms_cfg(nms_cfg):
        raise ValueError(
            f'exact_multiclass_nms reproduces hard NMS with keys '
            f'{SUPPORTED_NMS_KEYS}; got {nms_cfg!r} (use mmdet\'s '
            'multiclass_nms for it)')
    cfg = dict(nms_cfg)
    iou = cfg.get('iou_threshold', cfg.get('iou_thr'))
    if iou is None:
        raise ValueError(f'nms_cfg {nms_cfg!r} has no iou_threshold')
    offset = int(cfg.get('offset', 0))
    class_agnostic = bool(cfg.get('class_agnostic', False))
    nms_max = int(cfg.get('max_num', -1))
    if nms_max > 0:
        max_num = nms_max if max_num <= 0 else min(max_num, nms_max)
    cand = _Candidates(scores, score_thr, float(cfg.get('score_threshold',
                                                        0)))
    empty = (scores.new_zeros((0, 4)), scores.new_zeros((0, )),
             torch.zeros(0, dtype=torch.long, device=scores.device),
             torch.zeros(0, dtype=torch.long, device=scores.device))
    if len(cand) == 0:
        return empty

    if isinstance(boxes, Tensor):
        if boxes.size(1) == 4:
            def decode(prop: Tensor, cls: Tensor) -> Tensor:
                return boxes[prop]
            max_coord = boxes[cand.valid.any(1)].max()
        else:
            def decode(prop: Tensor, cls: Tensor) -> Tensor:
                return boxes.view(n, num_classes, 4)[prop, cls]
            max_coord = boxes.view(n, num_classes, 4)[cand.valid].max()
    else:
        decode = boxes.decode
        max_coord = None if class_agnostic else boxes.max_coordinate(
            cand.valid, cand.flat)
    shift = None
    if not class_agnostic:
        # mmcv batched_nms: offsets = idxs.to(boxes) * (max + tensor(1))
        shift = max_coord + torch.tensor(1).to(max_coord)
    iou_thr = torch.tensor(float(iou), dtype=torch.float32)

    if class_agnostic and len(cand) >= int(cfg.get('split_thr', 10000)):
        # mmcv's batched_nms loops over classes at or above split_thr, on the
        # raw boxes, even with class_agnostic=True: reproduce that
        keep = _per_class(cand, decode, None, offset, iou_thr, iou,
                          topk_per_class, False)
        if max_num > 0:
            keep = keep[:max_num]
    elif max_num > 0:
        keep = _global_rounds(cand, decode, shift, offset, iou_thr, iou,
                              max_num, topk_per_class, class_agnostic)
    else:
        keep = _per_class(cand, decode, shift, offset, iou_thr, iou,
                          topk_per_class, class_agnostic)
    if keep.numel() == 0:
        return empty
    flat = cand.flat[keep]
    prop, cls = flat // num_classes, flat % num_classes
    return decode(prop, cls), cand.scores[keep], cls, flat


def _offset_boxes(boxes: Tensor, cls: Tensor,
                  shift: Optional[Tensor]) -> Tensor:
    if shift is None:
        return boxes
    return boxes + (cls.to(boxes) * shift)[:, None]


def _areas(b: Tensor, offset: int) -> Tensor:
    return (b[:, 2] - b[:, 0] + offset) * (b[:, 3] - b[:, 1] + offset)


def _greedy(boxes_off: Tensor, iou: float, offset: int) -> Tensor:
    """mmcv's ``nms`` on boxes already in visiting order (a strictly
    decreasing surrogate score pins that order): kept positions."""
    k = boxes_off.size(0)
    if k == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes_off.device)
    order_scores = torch.arange(k, 0, -1, dtype=torch.float32,
                                device=boxes_off.device)
    _, inds = mmcv_nms(boxes_off.float(), order_scores, iou, offset=offset)
    return inds.sort()[0]


def _global_rounds(cand: _Candidates, decode: Callable,
                   shift: Optional[Tensor], offset: int, iou_thr: Tensor,
                   iou: float, max_num: int,
                   topk_per_class: int, class_agnostic: bool) -> Tensor:
    """Visit candidates in score order, a round at a time, until ``max_num``
    survive. Returns positions into ``cand`` in output order."""
    c = cand.num_classes
    remaining = cand.scores
    alive = torch.ones_like(remaining, dtype=torch.bool)
    kept_pos, kept_off, kept_area = [], remaining.new_zeros(
        (0, 4)), remaining.new_zeros((0, ))
    per_class = torch.zeros(c, dtype=torch.long, device=remaining.device)
    num_kept = 0
    chunk = max(4 * max_num, _MIN_CHUNK)
    pos = None  # the first round starts from every candidate
    while num_kept < max_num:
        if pos is None:
            pos = torch.arange(len(cand), device=remaining.device)
            s = cand.scores
        else:
            pos = alive.nonzero(as_tuple=True)[0]
            if pos.numel() == 0:
                break
            s = cand.scores[pos]
        if s.numel() > chunk:
            # every candidate at least as good as the chunk-th best: ties
            # never straddle two rounds
            kth = s.topk(chunk, sorted=False).values.min()
            take = s >= kth
            pos, s = pos[take], s[take]
        alive[pos] = False
        pos = pos[_stable_desc(s)]
        flat = cand.flat[pos]
        cls = flat % c
        if topk_per_class > 0 and not class_agnostic:
            # a full class's later candidates can neither be output nor
            # suppress another class: skip them undecoded
            room = per_class[cls] < topk_per_class
            pos, flat, cls = pos[room], flat[room], cls[room]
        boxes = decode(flat // c, cls)
        off = _offset_boxes(boxes, cls, shift)
        areas = _areas(off, offset)
        sup = _iou_suppressed(off, areas, kept_off, kept_area, offset,
                              iou_thr)
        live = (~sup).nonzero(as_tuple=True)[0]
        k = live[_greedy(off[live], iou, offset)]
        # every survivor suppresses later boxes, output or not
        kept_off = torch.cat([kept_off, off[k]])
        kept_area = torch.cat([kept_area, areas[k]])
        if topk_per_class > 0 and k.numel():
            kc = cls[k]
            k = k[per_class[kc] + _rank_within(kc, c) < topk_per_class]
            per_class += torch.bincount(cls[k], minlength=c)
        kept_pos.append(pos[k])
        num_kept += k.numel()
        chunk = min(chunk * 2, _MAX_CHUNK)
    keep = torch.cat(kept_pos) if kept_pos else alive.new_zeros(
        0, dtype=torch.long)
    return keep[:max_num]


def _rank_within(labels: Tensor, num_classes: int) -> Tensor:
    """0, 1, 2, ... within each label, in the given order."""
    order = torch.sort(labels, stable=True)[1]
    sorted_lab = labels[order]
    starts = torch.zeros(num_classes + 1, dtype=torch.long,
                         device=labels.device)
    starts[1:] = torch.bincount(sorted_lab, minlength=num_classes).cumsum(0)
    rank_sorted = torch.arange(labels.numel(), device=labels.device) - \
        starts[sorted_lab]
    rank = torch.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return rank


def _per_class(cand: _Candidates, decode: Callable, shift: Optional[Tensor],
               offset: int, iou_thr: Tensor, iou: float, topk_per_class: int,
               class_agnostic: bool) -> Tensor:
    """No per-image cap: NMS class by class (mmdet's own loop above
    ``split_thr``), each class stopping at ``topk_per_class`` survivors."""
    c = cand.num_classes
    order = _stable_desc(cand.scores)
    if class_agnostic:
        groups = [order]
    else:
        cls_sorted = (cand.flat[order] % c)
        by_cls = torch.sort(cls_sorted, stable=True)
        order = order[by_cls[1]]
        counts = torch.bincount(by_cls[0], minlength=c).tolist()
        groups = [g for g in order.split(counts) if g.numel()]
    kept = []
    for g in groups:
        kept_off = cand.scores.new_zeros((0, 4))
        kept_area = cand.scores.new_zeros((0, ))
        got = []
        start, step = 0, max(2 * topk_per_class, 256) if (
            topk_per_class > 0 and not class_agnostic) else g.numel()
        while start < g.numel():
            pos = g[start:start + step]
            flat = cand.flat[pos]
            cls = flat % c
            off = _offset_boxes(decode(flat // c, cls), cls, shift)
            areas = _areas(off, offset)
            live = (~_iou_suppressed(off, areas, kept_off, kept_area, offset,
                                     iou_thr)).nonzero(as_tuple=True)[0]
            k = live[_greedy(off[live], iou, offset)]
            got.append(pos[k])
            kept_off = torch.cat([kept_off, off[k]])
            kept_area = torch.cat([kept_area, areas[k]])
            start += step
            if 0 < topk_per_class <= kept_off.size(0):
                break
        g_kept = torch.cat(got)
        if topk_per_class > 0:
            if class_agnostic:
                # all classes in one NMS: each class's first k survivors
                kc = cand.flat[g_kept] % c
                g_kept = g_kept[_rank_within(kc, c) < topk_per_class]
            else:
                g_kept = g_kept[:topk_per_class]
        kept.append(g_kept)
    keep = torch.cat(kept)
    # output order: score descending, ties by flat index
    return keep[_stable_desc_by_flat(cand, keep)]


def _stable_desc_by_flat(cand: _Candidates, keep: Tensor) -> Tensor:
    """Argsort of ``keep`` by (descending score, ascending flat index)."""
    by_flat = torch.sort(cand.flat[keep], stable=True)[1]
    by_score = _stable_desc(cand.scores[keep][by_flat])
    return by_flat[by_score]


#: ``rcnn_test_cfg`` keys of this module: ``early_stop_nms=True`` selects
#: :func:`exact_multiclass_nms`; ``topk_per_class=k`` (> 0, with
#: ``max_per_img=-1`` for Fixed AP) keeps each class's best k per image.
EARLY_STOP_KEY = 'early_stop_nms'
TOPK_PER_CLASS_KEY = 'topk_per_class'


def uses_exact_nms(rcnn_test_cfg: Optional[Any]) -> bool:
    """Whether ``rcnn_test_cfg`` asks for :func:`lazy_decode_and_nms`
    (``early_stop_nms=True`` or ``topk_per_class > 0``)."""
    if rcnn_test_cfg is None:
        return False
    return bool(rcnn_test_cfg.get(EARLY_STOP_KEY, False)) or int(
        rcnn_test_cfg.get(TOPK_PER_CLASS_KEY, -1) or -1) > 0


def lazy_decode_and_nms(bbox_head: Any, roi: Tensor,
                        bbox_pred: Optional[Tensor], scores: Tensor,
                        img_meta: dict, rescale: bool,
                        rcnn_test_cfg: Any) -> Any:
    """A box head's decode + NMS (the tail of mmdet's
    ``BBoxHead._predict_by_feat_single``) through
    :func:`exact_multiclass_nms`, decoding only visited candidates.

    Args:
        bbox_head: The ``BBoxHead`` (``bbox_coder``, ``num_classes``,
            ``reg_class_agnostic``).
        roi (Tensor): ``(N, 5)`` rois ``(batch_index, x1, y1, x2, y2)``.
        bbox_pred (Tensor, optional): ``(N, 4)`` / ``(N, 4 * C)`` deltas.
        scores (Tensor): ``(N, C + 1)`` probabilities, background last.
        img_meta (dict): ``img_shape``; ``scale_factor`` with ``rescale``.
        rescale (bool): Boxes in the original image space.
        rcnn_test_cfg: ``score_thr``, ``nms``, ``max_per_img`` and
            optionally ``topk_per_class``.

    Returns:
        InstanceData: ``bboxes`` ``(K, 4)``, ``scores`` ``(K,)``, ``labels``
        ``(K,)``, equal to mmdet's (see :func:`exact_multiclass_nms`).

    Raises:
        ValueError: The NMS config or box coder is one this cannot
            reproduce exactly (soft NMS, boxes that are not 4-d).
    """
    from mmengine.structures import InstanceData
    coder = bbox_head.bbox_coder
    if bbox_pred is not None and getattr(coder, 'encode_size', 4) != 4:
        raise ValueError(
            f'{EARLY_STOP_KEY}/{TOPK_PER_CLASS_KEY} need 4-d boxes; '
            f'{type(coder).__name__} encodes {coder.encode_size}')
    rescale_factor = None
    if rescale:
        if img_meta.get('scale_factor') is None:
            raise ValueError('rescale=True needs img_meta["scale_factor"]')
        rescale_factor = [1 / s for s in img_meta['scale_factor']]
    n = roi.size(0)
    deltas = None if bbox_pred is None else bbox_pred.view(n, -1)
    boxes = LazyDecodedBoxes(roi[:, 1:], deltas, coder, img_meta['img_shape'],
                             rescale_factor, bbox_head.num_classes)
    topk = int(rcnn_test_cfg.get(TOPK_PER_CLASS_KEY, -1) or -1)
    bboxes, det_scores, labels, _ = exact_multiclass_nms(
        boxes, scores, rcnn_test_cfg.score_thr, rcnn_test_cfg.nms,
        rcnn_test_cfg.max_per_img, topk)
    results = InstanceData()
    results.bboxes = bboxes
    results.scores = det_scores
    results.labels = labels
    return results
