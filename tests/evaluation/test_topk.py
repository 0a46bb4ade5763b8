"""PerClassTopK: the streaming per-category top-k selection of the fixed and
pooled protocols, against a brute-force sort of everything offered."""
import numpy as np
import pytest

from mmlongtail.evaluation.topk import PerClassTopK


def _stream(seed, num_images=60, num_classes=7, max_dets=40):
    """Images with few distinct scores (many ties) and ids out of order."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1, num_images + 1) * 3)
    out = []
    for img_id in ids.tolist():
        n = int(rng.integers(0, max_dets))
        out.append(dict(
            img_id=img_id,
            labels=rng.integers(0, num_classes, n),
            scores=rng.choice(np.float32([.1, .25, .5, .5, .75, .9]), n),
            bboxes=rng.random((n, 4)).astype(np.float32)))
    return out


def _brute_force(stream, num_classes, k):
    """Every offered row, sorted by (label, -score, image id, index in the
    image), first k of each label; as a set of (label, img, idx)."""
    rows = [(int(lab), -float(s), im['img_id'], j)
            for im in stream
            for j, (lab, s) in enumerate(zip(im['labels'], im['scores']))]
    rows.sort()
    kept, per = set(), np.zeros(num_classes, int)
    for label, _, img, j in rows:
        if per[label] < k:
            kept.add((label, img, j))
            per[label] += 1
    return kept


def _selected(sel):
    r = sel.result()
    return set(zip(r['labels'].tolist(), r['img_ids'].tolist(),
                   r['det_idx'].tolist()))


@pytest.mark.parametrize('chunk', [1, 25, 1 << 20])
def test_selection_equals_brute_force(chunk):
    stream = _stream(0)
    sel = PerClassTopK(7, 9, chunk=chunk)
    for im in stream:
        sel.add(im['img_id'], im['labels'], im['scores'], im['bboxes'])
    assert _selected(sel) == _brute_force(stream, 7, 9)
    r = sel.result()
    # results-file order: image id, then index within the image
    key = r['img_ids'] * 1000 + r['det_idx']
    assert (np.diff(key) > 0).all()
    # boxes travel with their rows
    by_img = {im['img_id']: im for im in stream}
    for i in range(0, len(r['labels']), 7):
        im = by_img[int(r['img_ids'][i])]
        np.testing.assert_array_equal(r['bboxes'][i],
                                      im['bboxes'][r['det_idx'][i]])
    # every class had more than k offers, so every class is full
    assert np.bincount(r['labels'], minlength=7).tolist() == [9] * 7


def test_threshold_drops_on_arrival_and_masks_only_for_survivors():
    sel = PerClassTopK(2, 2, with_masks=True, chunk=1)
    sel.add(1, [0, 0, 1], np.float32([.9, .8, .1]), np.zeros((3, 4)),
            masks=['m10', 'm11', 'm12'])
    assert sel.threshold.tolist() == [np.float32(.8), -np.inf]
    # class 0 is full at .8: .7 cannot enter, .8 (tie) and .95 can
    ok = sel.candidates(np.array([0, 0, 0, 1]),
                        np.float32([.7, .8, .95, 0.01]))
    assert ok.tolist() == [False, True, True, True]
    sel.add(2, [0, 0, 0], np.float32([.7, .8, .95]), np.zeros((3, 4)),
            masks=['m20', 'm21', 'm22'])
    r = sel.result()
    # class 0: .95 (img 2) and .9 (img 1); the tie .8 of image 2 loses to
    # the .8 of image 1 and both are cut; class 1 keeps its only row
    assert list(zip(r['img_ids'].tolist(), r['det_idx'].tolist(),
                    r['masks'])) == [(1, 0, 'm10'), (1, 2, 'm12'),
                                     (2, 2, 'm22')]
    assert len(sel) == 3


def test_merge_of_shards_equals_one_stream_and_counts_padding_once():
    stream = _stream(1)
    whole = PerClassTopK(7, 5, chunk=10)
    for im in stream:
        whole.add(im['img_id'], im['labels'], im['scores'], im['bboxes'])
    # three "ranks", rank-interleaved like mmengine's sampler, and the
    # sampler's padding: rank 2 sees the first image again
    shards = [PerClassTopK(7, 5, chunk=10) for _ in range(3)]
    for i, im in enumerate(stream + stream[:1]):
        shards[i % 3].add(im['img_id'], im['labels'], im['scores'],
                          im['bboxes'])
    shards[0].merge(shards[1].state())
    shards[0].merge(shards[2].state())
    assert _selected(shards[0]) == _selected(whole)
    assert shards[0].img_ids == {im['img_id'] for im in stream}


def test_bad_input_is_a_clear_error():
    sel = PerClassTopK(3, 2)
    with pytest.raises(ValueError, match=r'labels \[3\] of image 5'):
        sel.add(5, [0, 3], np.float32([.5, .5]), np.zeros((2, 4)))
    with pytest.raises(ValueError, match='NaN'):
        sel.add(5, [0], np.float32([np.nan]), np.zeros((1, 4)))
    with pytest.raises(ValueError, match='2 labels but 1 scores'):
        sel.add(5, [0, 1], np.float32([.5]), np.zeros((2, 4)))
    with pytest.raises(ValueError, match='need 1 masks'):
        PerClassTopK(3, 2, with_masks=True).add(5, [0], np.float32([.5]),
                                                np.zeros((1, 4)))
    with pytest.raises(ValueError, match='k must be >= 1'):
        PerClassTopK(3, 0)
    with pytest.raises(ValueError, match='top-2 selection over 3 classes'):
        PerClassTopK(4, 2).merge(sel.state())
