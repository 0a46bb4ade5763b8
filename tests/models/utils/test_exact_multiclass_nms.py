"""exact_multiclass_nms: identical to mmdet 3.3.0's multiclass_nms (boxes,
scores, labels, order) on random and adversarial inputs, lazy decoding equal
to mmdet's eager decode, the exact offset maximum, and the per-class top-k
(Fixed AP) mode against mmdet followed by a per-class cut."""
import pytest
import torch
from mmdet.models.layers import multiclass_nms
from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
from mmdet.structures.bbox import scale_boxes

from mmlongtail.models.utils import (LazyDecodedBoxes, exact_multiclass_nms,
                                     supports_nms_cfg)

NMS = dict(type='nms', iou_threshold=0.5)
IMG_SHAPE = (480, 640)
RESCALE = [1 / 1.3, 1 / 1.25]


def _unique_scores(n, c, g):
    """(n, c + 1) scores in (0, 1) with no two equal (no ties)."""
    return (torch.randperm(n * (c + 1), generator=g).float() + 1).view(
        n, c + 1) / (n * (c + 1) + 1)


def _proposals(n, g, size=300.):
    rois = torch.rand(n, 4, generator=g) * size
    rois[:, 2:] += rois[:, :2] + 1
    return rois


def _coder():
    return DeltaXYWHBBoxCoder(target_stds=[0.1, 0.1, 0.2, 0.2])


def _eager(rois, deltas, c, img_shape=IMG_SHAPE, rescale=RESCALE):
    """What mmdet's BBoxHead._predict_by_feat_single decodes."""
    coder = _coder()
    n = rois.size(0)
    if deltas.size(1) == 4:
        boxes = coder.decode(rois, deltas, max_shape=img_shape)
    else:
        boxes = coder.decode(rois.repeat_interleave(c, 0),
                             deltas.view(-1, 4), max_shape=img_shape)
    if rescale is not None:
        boxes = scale_boxes(boxes, rescale)
    return boxes.view(n, -1)


def _reference(boxes, scores, thr, nms, max_num, topk=-1):
    """mmdet's multiclass_nms; with topk, uncapped and then cut per class."""
    dets, labels = multiclass_nms(boxes, scores, thr, nms,
                                  -1 if topk > 0 else max_num)
    if topk > 0:
        seen = {}
        keep = []
        for i, lab in enumerate(labels.tolist()):
            seen[lab] = seen.get(lab, 0) + 1
            if seen[lab] <= topk:
                keep.append(i)
        keep = torch.tensor(keep, dtype=torch.long)
        dets, labels = dets[keep], labels[keep]
        if max_num > 0:
            dets, labels = dets[:max_num], labels[:max_num]
    return dets[:, :4], dets[:, 4], labels


def _assert_same(ours, ref):
    b, s, lab, inds = ours
    rb, rs, rl = ref
    assert b.shape == rb.shape and s.shape == rs.shape
    assert torch.equal(lab, rl)
    assert torch.equal(s, rs)
    assert torch.equal(b, rb)
    assert inds.shape == lab.shape


@pytest.mark.parametrize('n,c,agnostic,thr,max_num', [
    (60, 5, False, 0.05, 100),
    (200, 80, False, 0.05, 100),
    (200, 80, True, 0.05, 100),
    (150, 120, False, 1e-4, 300),       # > split_thr: mmcv's per-class loop
    (150, 120, False, 0.995, 300),      # few candidates
    (120, 30, False, 0.0, -1),          # no cap
    (120, 30, False, 0.9, 1000),        # fewer survivors than max_num
])
def test_random_equals_mmdet(n, c, agnostic, thr, max_num):
    g = torch.Generator().manual_seed(n + c)
    rois = _proposals(n, g)
    deltas = torch.randn(n, 4 if agnostic else 4 * c, generator=g)
    scores = _unique_scores(n, c, g)
    boxes = _eager(rois, deltas, c)
    ref = _reference(boxes, scores, thr, NMS, max_num)
    lazy = LazyDecodedBoxes(rois, deltas, _coder(), IMG_SHAPE, RESCALE, c)
    _assert_same(exact_multiclass_nms(lazy, scores, thr, NMS, max_num), ref)
    _assert_same(exact_multiclass_nms(boxes, scores, thr, NMS, max_num), ref)


def test_heavy_overlap_few_survivors():
    """Near-identical boxes: NMS leaves about one box per class, fewer than
    max_num, so every candidate is visited."""
    g = torch.Generator().manual_seed(1)
    n, c = 400, 40
    base = torch.tensor([100., 120., 260., 300.])
    rois = base + torch.rand(n, 4, generator=g) * 3
    deltas = torch.randn(n, 4 * c, generator=g) * 0.01
    scores = _unique_scores(n, c, g)
    boxes = _eager(rois, deltas, c)
    ref = _reference(boxes, scores, 0.01, NMS, 300)
    assert ref[0].size(0) < 300
    lazy = LazyDecodedBoxes(rois, deltas, _coder(), IMG_SHAPE, RESCALE, c)
    _assert_same(exact_multiclass_nms(lazy, scores, 0.01, NMS, 300), ref)


def test_offset_rounding_is_reproduced():
    """mmcv offsets class c's boxes by c * (max_coordinate + 1) in float32;
    at class 1000 the rounding (1/16 px) turns a raw IoU of 0.503 into 0.5,
    which is not above the threshold: both boxes survive in mmdet, and here.
    """
    c = 1001
    boxes = torch.zeros(3, 4 * c)
    scores = torch.zeros(3, c + 1)
    boxes[:, 4 * 1000:4 * 1001] = torch.tensor([[0., 0., 10., 10.],
                                                [0., 0., 10., 5.03],
                                                [0., 0., 10., 10.]])
    scores[0, 1000], scores[1, 1000] = 0.9, 0.8
    boxes[2, :4] = torch.tensor([0., 0., 1000., 1000.])  # max_coordinate
    scores[2, 0] = 0.7
    raw_iou = (10 * 5.03) / 100
    assert raw_iou > 0.5
    ref = _reference(boxes, scores, 0.05, NMS, 100)
    assert ref[0].size(0) == 3  # the second box was not suppressed
    _assert_same(exact_multiclass_nms(boxes, scores, 0.05, NMS, 100), ref)


def test_empty_and_score_thr_edges():
    g = torch.Generator().manual_seed(2)
    c = 7
    empty = exact_multiclass_nms(
        torch.zeros(0, 4 * c), torch.zeros(0, c + 1), 0.05, NMS, 100)
    assert [t.shape[0] for t in empty] == [0, 0, 0, 0]
    assert empty[0].shape == (0, 4)
    rois = _proposals(20, g)
    deltas = torch.randn(20, 4 * c, generator=g)
    boxes = _eager(rois, deltas, c)
    scores = torch.full((20, c + 1), 0.25)
    scores[:5, 2] = 0.5
    scores[5:9, 3] = torch.nextafter(torch.tensor(0.5), torch.tensor(1.))
    # exactly at the threshold is out (strict >), just above is in
    ours = exact_multiclass_nms(boxes, scores, 0.5, NMS, 100)
    assert set(ours[2].tolist()) == {3}
    _assert_same(ours, _reference(boxes, scores, 0.5, NMS, 100))
    # nothing above the threshold
    assert exact_multiclass_nms(boxes, scores, 0.9, NMS, 100)[0].shape == (0,
                                                                          4)


@pytest.mark.parametrize('n,c', [(50, 20), (300, 50)])  # below / above 10k
def test_class_agnostic_nms(n, c):
    """nms_cfg class_agnostic=True: across classes below split_thr, per class
    on raw boxes at or above it (mmcv's batched_nms)."""
    g = torch.Generator().manual_seed(n)
    rois = _proposals(n, g)
    deltas = torch.randn(n, 4, generator=g)
    scores = _unique_scores(n, c, g)
    nms = dict(type='nms', iou_threshold=0.5, class_agnostic=True)
    boxes = _eager(rois, deltas, c)
    lazy = LazyDecodedBoxes(rois, deltas, _coder(), IMG_SHAPE, RESCALE, c)
    for max_num, topk in [(100, -1), (100, 3), (-1, 3)]:
        ref = _reference(boxes, scores, 0.0, nms, max_num, topk)
        _assert_same(
            exact_multiclass_nms(lazy, scores, 0.0, nms, max_num, topk), ref)


@pytest.mark.parametrize('max_num,topk', [(-1, 1), (-1, 7), (100, 3),
                                          (1000, 5)])
def test_topk_per_class(max_num, topk):
    g = torch.Generator().manual_seed(topk)
    n, c = 150, 60
    rois = _proposals(n, g)
    deltas = torch.randn(n, 4 * c, generator=g)
    scores = _unique_scores(n, c, g)
    boxes = _eager(rois, deltas, c)
    ref = _reference(boxes, scores, 0.001, NMS, max_num, topk)
    lazy = LazyDecodedBoxes(rois, deltas, _coder(), IMG_SHAPE, RESCALE, c)
    ours = exact_multiclass_nms(lazy, scores, 0.001, NMS, max_num, topk)
    _assert_same(ours, ref)
    assert torch.bincount(ours[2]).max() <= topk


def test_ties_ordered_by_proposal_then_class():
    """Equal scores: output order is (-score, proposal, class)."""
    n, c = 30, 4
    boxes = torch.arange(n, dtype=torch.float32)[:, None] * 20 + torch.tensor(
        [0., 0., 10., 10.])  # disjoint boxes: nothing suppressed
    scores = torch.zeros(n, c + 1)
    scores[:, :c] = 0.5
    scores[::3, 1] = 0.7
    b, s, lab, inds = exact_multiclass_nms(boxes, scores, 0.1, NMS, 1000)
    assert s.tolist() == sorted(s.tolist(), reverse=True)
    key = list(zip((-s).tolist(), (inds // c).tolist(), (inds % c).tolist()))
    assert key == sorted(key)
    assert torch.equal(inds % c, lab)
    assert torch.equal(b, boxes[inds // c])


def test_lazy_decode_equals_eager_bitwise():
    g = torch.Generator().manual_seed(3)
    n, c = 97, 31
    rois = _proposals(n, g)
    deltas = torch.randn(n, 4 * c, generator=g) * 2
    eager = _eager(rois, deltas, c).view(n, c, 4)
    lazy = LazyDecodedBoxes(rois, deltas, _coder(), IMG_SHAPE, RESCALE, c)
    assert torch.equal(lazy.decode_all().view(n, c, 4), eager)
    for k in (1, 3, 17, 500):
        prop = torch.randint(0, n, (k, ), generator=g)
        cls = torch.randint(0, c, (k, ), generator=g)
        assert torch.equal(lazy.decode(prop, cls), eager[prop, cls])


@pytest.mark.parametrize('img_shape,rescale,size', [
    (IMG_SHAPE, RESCALE, 300.),   # boxes reach the border: the cap
    ((4000, 4000), RESCALE, 300.),  # no box reaches it: bounds prune
    (None, None, 300.),           # no clamp, no rescale
])
@pytest.mark.parametrize('path', ['decode', 'loose_bound', 'tight_bound'])
def test_max_coordinate_exact(img_shape, rescale, size, path, monkeypatch):
    from mmlongtail.models.utils import multiclass_nms as mod
    if path != 'decode':  # force the bound search
        monkeypatch.setattr(mod, '_EXACT_MAX_DECODE', 0)
    if path == 'tight_bound':
        monkeypatch.setattr(mod, '_LOOSE_SCAN_ROWS', 0)
    g = torch.Generator().manual_seed(4)
    n, c = 200, 50
    rois = _proposals(n, g, size)
    deltas = torch.randn(n, 4 * c, generator=g) * 0.5
    eager = _eager(rois, deltas, c, img_shape, rescale).view(n, c, 4)
    lazy = LazyDecodedBoxes(rois, deltas, _coder(), img_shape, rescale, c)
    for frac in (1.0, 0.3, 0.001):
        valid = torch.rand(n, c, generator=g) < frac
        valid[0, 0] = True
        assert torch.equal(lazy.max_coordinate(valid), eager[valid].max())


def test_bad_input_raises():
    c = 3
    with pytest.raises(ValueError, match='scores must be'):
        exact_multiclass_nms(torch.zeros(2, 4), torch.zeros(2), 0.1, NMS)
    with pytest.raises(ValueError, match='boxes must be'):
        exact_multiclass_nms(torch.zeros(2, 8), torch.zeros(2, c + 1), 0.1,
                             NMS)
    soft = dict(type='soft_nms', iou_threshold=0.5)
    assert not supports_nms_cfg(soft) and not supports_nms_cfg(None)
    assert supports_nms_cfg(NMS)
    with pytest.raises(ValueError, match='hard NMS'):
        exact_multiclass_nms(torch.zeros(2, 4), torch.zeros(2, c + 1), 0.1,
                             soft)
    with pytest.raises(ValueError, match='deltas must be'):
        LazyDecodedBoxes(torch.zeros(2, 4), torch.zeros(2, 8), _coder(),
                         None, None, c)
