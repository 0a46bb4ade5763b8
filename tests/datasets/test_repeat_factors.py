"""compute_repeat_factors: hand-derived values, mmengine's reference and the
definition written out as a per-image loop."""
import math

import numpy as np
import pytest
from mmengine.dataset import BaseDataset, ClassBalancedDataset

from mmlongtail.datasets import compute_repeat_factors
from mmlongtail.datasets import repeat_factors as rf_mod
from mmlongtail.datasets.repeat_factors import repeat_factors_from_pairs


def test_hand_computed_sqrt_and_linear():
    # N = 5: f(1) = 3/5, f(2) = 1/5, f(3) = 2/5; t = 0.5
    cats = [[1], [1, 2], [3, 3], [], [1, 3]]
    r = compute_repeat_factors(cats, repeat_thr=0.5)
    r2, r3 = math.sqrt(0.5 / 0.2), math.sqrt(0.5 / 0.4)  # 1.5811, 1.1180
    np.testing.assert_allclose(r, [1.0, r2, r3, 1.0, r3], rtol=0, atol=1e-12)
    assert r.dtype == np.float64 and r.shape == (5, )
    r = compute_repeat_factors(cats, repeat_thr=0.5, sqrt=False)
    np.testing.assert_allclose(r, [1.0, 2.5, 1.25, 1.0, 1.25], atol=1e-12)
    # a threshold below every frequency repeats nothing
    np.testing.assert_array_equal(
        compute_repeat_factors(cats, repeat_thr=0.1), np.ones(5))


def test_duplicates_count_once_per_image():
    # category 7 has 4 instances but is in 1 image of 4: f = 1/4
    r = compute_repeat_factors([[7, 7, 7, 7], [8], [8], [8]], repeat_thr=1.0)
    np.testing.assert_allclose(r, [2.0, math.sqrt(4 / 3)] + [math.sqrt(4 / 3)]
                               * 2)


def test_empty_inputs():
    assert compute_repeat_factors([], 1e-3).shape == (0, )
    np.testing.assert_array_equal(compute_repeat_factors([[], []], 0.5),
                                  [1.0, 1.0])


class _ListDataset(BaseDataset):
    """A BaseDataset whose items are category lists (for mmengine's CBD)."""

    def __init__(self, cats):
        self._cats = cats
        super().__init__(lazy_init=True, serialize_data=False)

    def load_data_list(self):
        return [dict(cats=list(c)) for c in self._cats]

    def get_cat_ids(self, idx):
        return self._cats[idx]


def _mmengine_factors(cats, thr):
    cbd = ClassBalancedDataset(_ListDataset(cats), oversample_thr=thr)
    return np.asarray(cbd._get_repeat_factors(cbd.dataset, thr))


@pytest.mark.parametrize('ids', ['small', 'large', 'negative'])
def test_matches_mmengine_reference(ids):
    rng = np.random.default_rng(0)
    n, k = 400, 60
    p = 1.0 / np.arange(1, k + 1)**1.3  # long-tailed
    p /= p.sum()
    cat_ids = {
        'small': np.arange(1, k + 1),
        'large': np.arange(k) * 10_000_019 + 5,  # np.unique path
        'negative': np.arange(k) - 30,
    }[ids]
    cats = []
    for _ in range(n):
        m = rng.integers(0, 8)  # some images have no annotations
        cats.append(cat_ids[rng.choice(k, size=m, p=p)].tolist())
    for thr in (1e-3, 0.05, 0.3):
        ours = compute_repeat_factors(cats, thr)
        ref = _mmengine_factors(cats, thr)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
        # identical arithmetic, so ceil agrees exactly
        np.testing.assert_array_equal(np.ceil(ours), np.ceil(ref))


def test_exact_integer_factors_ceil_like_mmengine():
    # f(c) = 1/4 and t = 1 -> r(c) = 2 exactly; ceil must give 2, not 3
    cats = [[1], [2], [2], [2]]
    ours = compute_repeat_factors(cats, 1.0)
    assert ours[0] == 2.0
    np.testing.assert_array_equal(np.ceil(ours), np.ceil(
        _mmengine_factors(cats, 1.0)))


def test_many_dedup_blocks(monkeypatch):
    # shrink the scratch table so pairs cross many blocks
    monkeypatch.setattr(rf_mod, '_DEDUP_TABLE_SIZE', 64)
    rng = np.random.default_rng(1)
    cats = [rng.integers(0, 40, size=rng.integers(0, 12)).tolist()
            for _ in range(300)]
    np.testing.assert_allclose(
        compute_repeat_factors(cats, 0.2), _mmengine_factors(cats, 0.2),
        atol=1e-12)


def test_pairs_grouping_modes_agree():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 50, size=500)
    cat = rng.integers(0, 30, size=500) * 3
    by_img = np.argsort(img, kind='stable')
    by_cat = np.argsort(cat, kind='stable')
    a = repeat_factors_from_pairs(img[by_img], cat[by_img], 60, 0.1)
    b = repeat_factors_from_pairs(
        img[by_cat], cat[by_cat], 60, 0.1, grouped_by='category')
    c = repeat_factors_from_pairs(img, cat, 60, 0.1, grouped_by='unsorted')
    for other in (b, c):
        np.testing.assert_array_equal(a.image, other.image)
        np.testing.assert_array_equal(a.category_ids, other.category_ids)
        np.testing.assert_array_equal(a.image_count, other.image_count)
    assert (a.image[50:] == 1).all()  # images 50..59 have no pairs
    # image counts are distinct images per category
    for cid, cnt in zip(a.category_ids, a.image_count):
        assert cnt == len(set(img[cat == cid].tolist()))
    with pytest.raises(ValueError, match='sorted by category'):
        repeat_factors_from_pairs(img, cat, 60, 0.1, grouped_by='category')


def test_bad_input():
    with pytest.raises(ValueError, match='repeat_thr'):
        compute_repeat_factors([[1]], 0.0)
    with pytest.raises(ValueError, match='repeat_thr'):
        compute_repeat_factors([[1]], float('nan'))
    with pytest.raises(TypeError, match='integer category ids'):
        compute_repeat_factors([[1.5, 2.0]], 0.1)
    with pytest.raises(TypeError, match='sequence'):
        compute_repeat_factors('abc', 0.1)
    with pytest.raises(ValueError, match=r'image_index must lie in \[0, 3\)'):
        repeat_factors_from_pairs([0, 3], [1, 1], 3, 0.1)


def _python_loop(cats, thr):
    """The definition, written out per image."""
    n = len(cats)
    count = {}
    for c in cats:
        for k in set(c):
            count[k] = count.get(k, 0) + 1
    rep = {k: max(1.0, math.sqrt(thr / (v / n))) for k, v in count.items()}
    return np.array([max((rep[k] for k in set(c)), default=1.0) for c in cats])


def test_equals_loop_at_scale():
    rng = np.random.default_rng(3)
    p = 1.0 / np.arange(1, 301)**1.2
    p /= p.sum()
    cats = [(rng.choice(300, size=rng.integers(0, 25), p=p) * 7 + 1).tolist()
            for _ in range(5000)]
    ours = compute_repeat_factors(cats, 1e-3)
    np.testing.assert_allclose(ours, _python_loop(cats, 1e-3), atol=1e-12)
    assert ours.flags.writeable and ours.dtype == np.float64


def test_any_integer_sequences():
    # tuples, sets, arrays, NumPy integer scalars, an outer tuple
    cats = ([1, 2], (2, 2), {3}, np.array([1, 3], dtype=np.int32), [],
            [np.int64(4), np.uint8(2)])
    expected = _python_loop([[int(x) for x in c] for c in cats], 0.4)
    np.testing.assert_allclose(compute_repeat_factors(cats, 0.4), expected,
                               atol=1e-12)
    np.testing.assert_allclose(compute_repeat_factors(list(cats), 0.4),
                               expected, atol=1e-12)
