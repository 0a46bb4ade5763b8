"""RepeatFactorSampler: factors over real mmdet datasets, rounding, sharding,
determinism, and mmengine Runner loops."""
import collections
import json

import numpy as np
import pytest
import torch
from dist_utils import spawn_gloo
from lvis_toy import make_dataset, write_lvis
from sampler_helpers import (DIST_CATS, CatListDataset, record_rank_streams,
                             tiny_runner)
from mmengine.dataset import ClassBalancedDataset

from mmlongtail.datasets import RepeatFactorSampler, compute_repeat_factors
from mmlongtail.registry import DATA_SAMPLERS

# ---------------------------------------------------------------- fixtures --


@pytest.fixture(scope='module')
def lvis_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('rfs') / 'lvis_v1_train.json')
    write_lvis(path)
    return path


# 6 images; t = 0.5 -> r = [1, sqrt(2.5), 1, sqrt(1.25)...]
TOY = [[1], [1, 2], [3, 3], [], [1, 3], [1]]


def toy_factors(thr=0.5):
    return compute_repeat_factors(TOY, thr)


# ------------------------------------------------------- category sources --


@pytest.mark.parametrize('serialize', [True, False])
@pytest.mark.parametrize('filter_cfg', [
    None,
    dict(filter_empty_gt=True, min_size=32),
], ids=['nofilter', 'filtered'])
def test_bulk_path_aligned_with_dataset_indices(lvis_file, serialize,
                                                filter_cfg):
    ds = make_dataset(lvis_file, filter_cfg, serialize_data=serialize)
    s = RepeatFactorSampler(ds, repeat_thr=0.3, seed=0)
    assert s.category_source_used.startswith('annotation index')
    # per index: the categories of that index's image in the file
    with open(lvis_file) as f:
        raw = json.load(f)
    cats_of = collections.defaultdict(list)
    for a in raw['annotations']:
        cats_of[a['image_id']].append(a['category_id'])
    per_index = [cats_of[ds.get_data_info(i)['img_id']] for i in
                 range(len(ds))]
    np.testing.assert_array_equal(s.repeat_factors.numpy(),
                                  compute_repeat_factors(per_index, 0.3))
    # where mmdet's parser keeps every annotation, get_cat_ids agrees
    ref = RepeatFactorSampler(
        ds, repeat_thr=0.3, seed=0, category_source='get_cat_ids')
    assert ref.category_source_used == 'get_cat_ids'
    lost = [
        i for i in range(len(ds))
        if len(ds.get_cat_ids(i)) != len(per_index[i])
    ]
    assert len(lost) == 1  # position 8, the degenerate box
    keep = np.ones(len(ds), bool)
    keep[lost] = False
    # the category of the dropped box (40) occurs nowhere else: factors of
    # the other images agree exactly
    np.testing.assert_array_equal(s.repeat_factors.numpy()[keep],
                                  ref.repeat_factors.numpy()[keep])
    assert ref.repeat_factors[lost[0]] == 1.0
    assert s.repeat_factors[lost[0]] > 1.0  # category 40 is in 1 image


def test_filtering_changes_indices_and_stays_aligned(lvis_file):
    full = make_dataset(lvis_file)
    filt = make_dataset(lvis_file, dict(filter_empty_gt=True, min_size=32))
    assert len(filt) == len(full) - 3  # two empty images, one small image
    s = RepeatFactorSampler(filt, repeat_thr=0.3, seed=0)
    by_img = {full.get_data_info(i)['img_id']: i for i in range(len(full))}
    # a factor belongs to the image its index serves, not to a neighbour
    for i in range(len(filt)):
        iid = filt.get_data_info(i)['img_id']
        cats = {c for c in filt.get_cat_ids(i)}
        j = by_img[iid]
        assert cats == set(full.get_cat_ids(j))
    # the image with the rarest category (40, at file position 8, after two
    # dropped images) keeps the largest factor at its own index, 6
    with open(lvis_file) as f:
        rare_img = json.load(f)['images'][8]['id']
    top = int(torch.argmax(s.repeat_factors))
    assert top == 6 and filt.get_data_info(top)['img_id'] == rare_img


def test_images_without_annotations_keep_factor_one_and_index(lvis_file):
    ds = make_dataset(lvis_file)  # no filter: empty images stay
    s = RepeatFactorSampler(ds, repeat_thr=0.9, seed=0, shuffle=False,
                            rounding='ceil')
    empty = [i for i in range(len(ds)) if not ds.get_cat_ids(i)]
    assert 3 in empty and 17 in empty
    assert all(s.repeat_factors[i] == 1.0 for i in (3, 17))
    # the unshuffled ceil stream lists every index in order, reps times
    stream = s.epoch_indices(0).tolist()
    reps = np.ceil(s.repeat_factors.numpy()).astype(int)
    assert stream == [i for i in range(len(ds)) for _ in range(reps[i])]


@pytest.mark.parametrize('filter_cfg', [
    None,
    dict(filter_empty_gt=True, min_size=32),
], ids=['nofilter', 'filtered'])
def test_ceil_reproduces_class_balanced_dataset(lvis_file, filter_cfg):
    ds = make_dataset(lvis_file, filter_cfg)
    cbd = ClassBalancedDataset(ds, oversample_thr=0.3)
    s = RepeatFactorSampler(
        ds,
        repeat_thr=0.3,
        rounding='ceil',
        category_source='get_cat_ids',
        seed=1)
    for epoch in (0, 1):
        s.set_epoch(epoch)
        assert collections.Counter(list(s)) == collections.Counter(
            cbd.repeat_indices)
    assert len(s) == len(cbd)


def test_unsupported_sources_raise():
    with pytest.raises(ValueError, match='no loaded annotation index'):
        RepeatFactorSampler(
            CatListDataset(TOY), category_source='annotations', seed=0)
    with pytest.raises(ValueError, match='category_source'):
        RepeatFactorSampler(CatListDataset(TOY), category_source='x', seed=0)
    with pytest.raises(ValueError, match='rounding'):
        RepeatFactorSampler(CatListDataset(TOY), rounding='floor', seed=0)
    with pytest.raises(ValueError, match='seed'):
        RepeatFactorSampler(CatListDataset(TOY), seed=-1)


# ------------------------------------------------------------- sampling --


def test_mean_draws_equal_repeat_factors():
    s = RepeatFactorSampler(CatListDataset(TOY), repeat_thr=0.5, seed=3)
    r = toy_factors()
    epochs = 1000
    counts = np.zeros(len(TOY))
    for e in range(epochs):
        counts += np.bincount(s.epoch_indices(e).numpy(), minlength=len(TOY))
    s.set_epoch(epochs)
    assert sorted(list(s)) == sorted(s.epoch_indices(epochs).tolist())
    # Bernoulli std of the mean <= 0.5 / sqrt(1000) = 0.016; seeded, so
    # the outcome is fixed
    np.testing.assert_allclose(counts / epochs, r, atol=0.05)
    assert r[1] > 1.5  # the test is about real fractional repeats


def test_stochastic_draws_are_floor_or_ceil():
    s = RepeatFactorSampler(CatListDataset(TOY), repeat_thr=2.0, seed=0)
    r = s.repeat_factors.numpy()
    for e in range(20):
        c = np.bincount(s.epoch_indices(e).numpy(), minlength=len(TOY))
        assert ((c == np.floor(r)) | (c == np.ceil(r))).all()


def test_determinism_and_resume():
    a = RepeatFactorSampler(CatListDataset(TOY), repeat_thr=0.5, seed=7)
    b = RepeatFactorSampler(CatListDataset(TOY), repeat_thr=0.5, seed=7)
    c = RepeatFactorSampler(CatListDataset(TOY), repeat_thr=0.5, seed=8)
    streams = []
    for e in range(4):
        a.set_epoch(e)
        b.set_epoch(e)
        c.set_epoch(e)
        sa = list(a)
        assert sa == list(b) and len(sa) == len(a)
        streams.append(sa)
    assert len({tuple(x) for x in streams}) > 1  # epochs differ
    assert any(list(c.epoch_indices(e)) != streams[e] for e in range(4))
    # a resumed run (fresh sampler, set_epoch) replays the epoch exactly
    fresh = RepeatFactorSampler(CatListDataset(TOY), repeat_thr=0.5, seed=7)
    fresh.set_epoch(2)
    assert list(fresh) == streams[2]


def test_build_from_registry_and_seed_none():
    s = DATA_SAMPLERS.build(
        dict(type='mmlongtail.RepeatFactorSampler', repeat_thr=0.5),
        default_args=dict(dataset=CatListDataset(TOY)))
    assert isinstance(s.seed, int) and s.seed >= 0
    assert sorted(set(s)) == list(range(len(TOY)))


def test_infinite_is_concatenated_epochs():
    s = RepeatFactorSampler(
        CatListDataset(TOY), repeat_thr=0.5, seed=5, infinite=True)
    it = iter(s)
    got = [next(it) for _ in range(60)]
    want = torch.cat([s.epoch_indices(e) for e in range(15)]).tolist()[:60]
    assert got == want
    # a second iter() restarts the stream deterministically
    it2 = iter(s)
    assert [next(it2) for _ in range(60)] == got


# --------------------------------------------------------- distributed --


def _dist_worker(rank, world, out_dir):
    record_rank_streams(
        rank, out_dir, lambda ds: RepeatFactorSampler(ds, repeat_thr=0.4),
        lambda ds, seed: RepeatFactorSampler(
            ds, repeat_thr=0.4, seed=seed, infinite=True),
        infinite_draws=100)


def test_two_gloo_ranks_partition_the_epoch(tmp_path):
    spawn_gloo(_dist_worker, str(tmp_path))
    r0, r1 = (json.load(open(tmp_path / f'rank{k}.json')) for k in (0, 1))
    assert r0['seed'] == r1['seed']  # seed=None was synchronized
    cats = DIST_CATS
    ref = RepeatFactorSampler(
        CatListDataset(cats), repeat_thr=0.4, seed=r0['seed'])
    for e in ('0', '1'):
        full = ref.epoch_indices(int(e)).tolist()
        a, b = r0['epochs'][e], r1['epochs'][e]
        assert len(a) == len(b) == r0['lens'][e] == r1['lens'][e]
        # rank k holds positions k, k + 2, ... of the (padded) stream
        padded = (full * 2)[:2 * len(a)]
        assert a == padded[0::2] and b == padded[1::2]
        # together, the ranks draw the epoch once, plus at most 1 padding
        assert len(a) + len(b) - len(full) == len(full) % 2
        assert collections.Counter(a + b) - collections.Counter(full) == \
            collections.Counter(full[:len(full) % 2])
    stream = torch.cat([ref.epoch_indices(e) for e in range(20)]).tolist()
    assert r0['infinite'] == stream[0:200:2]
    assert r1['infinite'] == stream[1:200:2]


# ---------------------------------------------------------- Runner loops --


def test_epoch_based_runner_loop(tmp_path):
    seen = []
    cats = TOY * 3
    runner = tiny_runner(
        tmp_path, dict(type='EpochBasedTrainLoop', max_epochs=3),
        dict(type='mmlongtail.RepeatFactorSampler', repeat_thr=0.5), seen,
        cats)
    runner.train()
    s = runner.train_dataloader.sampler
    assert isinstance(s, RepeatFactorSampler)
    assert s.seed == 11  # the Runner's seed reached the sampler
    want = [i for e in range(3) for i in s.epoch_indices(e).tolist()]
    assert seen == want  # every epoch was set_epoch'ed and served in full


def test_iter_based_runner_loop_infinite(tmp_path):
    seen = []
    cats = TOY * 2
    runner = tiny_runner(
        tmp_path, dict(type='IterBasedTrainLoop', max_iters=25),
        dict(
            type='mmlongtail.RepeatFactorSampler',
            repeat_thr=0.5,
            infinite=True), seen, cats)
    runner.train()
    s = runner.train_dataloader.sampler
    stream = torch.cat([s.epoch_indices(e) for e in range(10)]).tolist()
    assert len(seen) == 50 > len(s.epoch_indices(0))  # several epochs
    assert seen == stream[:50]
