"""ClassAwareSampler: hand-derived class and image probabilities, realized
frequencies over many epochs against n_j^q, progressive endpoints, two gloo
ranks, resume, and mmengine's epoch and iteration loops."""
import collections
import json
import os.path as osp

import numpy as np
import pytest
import torch
from dist_utils import spawn_gloo
from lvis_toy import make_dataset, write_lvis
from sampler_helpers import (DIST_CATS, CatListDataset, record_rank_streams,
                             tiny_runner)

from mmlongtail.datasets import ClassAwareSampler, image_categories
from mmlongtail.registry import DATA_SAMPLERS

# 6 images; class 0 in 4 images, class 1 in 1, class 2 in 2; image 3 empty
TOY = [[0], [0, 1], [2], [], [0, 2], [0]]
N = np.array([4, 1, 2])


def test_hand_derived_probabilities():
    s = ClassAwareSampler(CatListDataset(TOY), q=0.0, seed=0)
    np.testing.assert_allclose(s.class_probabilities(0), [1 / 3] * 3)
    # P(I) = sum_{j in I} p_j / n_j
    np.testing.assert_allclose(
        s.image_probabilities(0),
        [1 / 12, 1 / 12 + 1 / 3, 1 / 6, 0, 1 / 12 + 1 / 6, 1 / 12])
    s = ClassAwareSampler(CatListDataset(TOY), q=1.0, seed=0)
    np.testing.assert_allclose(s.class_probabilities(0), [4 / 7, 1 / 7, 2 / 7])
    # q = 1: p_j / n_j = 1/7 for all j, so P(I) = |C(I)| / 7
    np.testing.assert_allclose(s.image_probabilities(0),
                               np.array([1, 2, 1, 0, 2, 1]) / 7)
    s = ClassAwareSampler(CatListDataset(TOY), q=0.5, seed=0)
    w = np.sqrt(N)
    np.testing.assert_allclose(s.class_probabilities(0), w / w.sum())


def test_classes_without_images_are_never_drawn():
    cats = [[0], [0, 3], [3]]  # classes 1, 2 have no image
    s = ClassAwareSampler(CatListDataset(cats), q=0.0, seed=0)
    np.testing.assert_allclose(s.class_probabilities(0), [.5, 0, 0, .5])
    classes, _ = s.epoch_draws(0)
    assert set(classes.tolist()) == {0, 3}


@pytest.mark.parametrize('q', [1.0, 0.5, 0.0])
def test_realized_class_frequencies_follow_n_to_the_q(q):
    # 40 images; class j in n_j of them (a long tail), some images hold two
    # classes
    n = np.array([16, 8, 4, 2, 1])
    cats = []
    for j, nj in enumerate(n):
        cats += [[j] for _ in range(nj)]
    cats[0] = [0, 4]  # co-occurrence: class 4 is now in 2 images
    cats[1] = [0, 3]
    cats += [[] for _ in range(40 - len(cats))]
    n = np.bincount([c for cs in cats for c in cs], minlength=5)
    s = ClassAwareSampler(CatListDataset(cats), q=q, seed=1)
    epochs = 300
    cls_count = np.zeros(5)
    img_count = np.zeros(len(cats))
    for e in range(epochs):
        classes, images = s.epoch_draws(e)
        assert torch.equal(images, s.epoch_indices(e))
        # every image drawn for class j contains j
        for c, i in zip(classes.tolist()[:50], images.tolist()[:50]):
            assert c in cats[i]
        cls_count += np.bincount(classes.numpy(), minlength=5)
        img_count += np.bincount(images.numpy(), minlength=len(cats))
    total = epochs * len(cats)
    p = n**q / (n**q).sum()
    # binomial std of a frequency <= 0.5 / sqrt(12000) = 0.0046; seeded
    np.testing.assert_allclose(cls_count / total, p, atol=0.015)
    np.testing.assert_allclose(
        img_count / total, s.image_probabilities(0), atol=0.01)
    empty = [i for i, c in enumerate(cats) if not c]
    assert len(empty) == 9 and img_count[empty].sum() == 0  # never drawn
    # realized ratios of the drawn classes follow (n_j / n_k)^q
    ratio = cls_count[0] / cls_count[2]
    assert ratio == pytest.approx((n[0] / n[2])**q, rel=0.1)


def test_one_class_per_image_contained_frequency_equals_p():
    cats = [[0]] * 12 + [[1]] * 3 + [[2]]
    s = ClassAwareSampler(CatListDataset(cats), q=0.5, seed=4)
    counts = np.zeros(3)
    for e in range(400):
        counts += np.bincount(
            [cats[i][0] for i in s.epoch_indices(e).tolist()], minlength=3)
    w = np.sqrt([12, 3, 1])
    np.testing.assert_allclose(counts / counts.sum(), w / w.sum(), atol=0.02)


@pytest.mark.parametrize('mode', ['mix', 'exponent'])
def test_progressive_endpoints(mode):
    s = ClassAwareSampler(
        CatListDataset(TOY),
        q=0.0,
        progressive=dict(begin=2, end=6, mode=mode),
        seed=0)
    ib = np.array([4, 1, 2]) / 7
    cb = np.array([1, 1, 1]) / 3
    for e in (0, 1, 2):  # before and at begin: instance-balanced
        np.testing.assert_allclose(s.class_probabilities(e), ib)
    for e in (6, 7, 100):  # at and after end: class-balanced
        np.testing.assert_allclose(s.class_probabilities(e), cb)
    mid = s.class_probabilities(4)  # half way
    if mode == 'mix':  # Kang et al.: (1 - t/T) p_IB + t/T p_CB
        np.testing.assert_allclose(mid, (ib + cb) / 2)
    else:  # DCL-style: the exponent moves, q = 0.5
        w = np.sqrt([4, 1, 2])
        np.testing.assert_allclose(mid, w / w.sum())
    assert s.progress(3) == pytest.approx(0.25)
    # the draws follow the schedule: epoch 0 is instance-balanced
    counts = np.zeros(3)
    for _ in range(1):
        s2 = ClassAwareSampler(
            CatListDataset(TOY),
            q=0.0,
            progressive=dict(end=4, mode=mode),
            num_samples=6000,
            seed=0)
        counts += np.bincount(s2.epoch_draws(0)[0].numpy(), minlength=3)
    np.testing.assert_allclose(counts / counts.sum(), ib, atol=0.02)


def test_bad_arguments_raise():
    ds = CatListDataset(TOY)
    for kwargs, match in [
        (dict(q='x'), 'q must be a finite number'),
        (dict(q=float('nan')), 'q must be a finite number'),
        (dict(progressive=dict(begin=0)), 'progressive needs `end`'),
        (dict(progressive=dict(end=0)), 'must exceed begin'),
        (dict(progressive=dict(end=3, mode='cosine')), 'progressive mode'),
        (dict(progressive=dict(end=3, step=1)), 'unknown progressive keys'),
        (dict(num_samples=0), 'num_samples'),
        (dict(category_source='x'), 'category_source'),
        (dict(seed=-1), 'seed'),
    ]:
        with pytest.raises(ValueError, match=match):
            ClassAwareSampler(ds, seed=kwargs.pop('seed', 0), **kwargs)
    with pytest.raises(ValueError, match='no class has an image'):
        ClassAwareSampler(CatListDataset([[], []]), seed=0)


def test_real_lvis_dataset_uses_image_categories(tmp_path):
    path = str(tmp_path / 'lvis.json')
    write_lvis(path)
    ds = make_dataset(path, dict(filter_empty_gt=True, min_size=32))
    s = ClassAwareSampler(ds, q=0.0, seed=0)
    cats = image_categories(ds)
    np.testing.assert_array_equal(s.image_count, cats.image_count())
    assert s.category_source_used.startswith('annotation index')
    classes, images = s.epoch_draws(0)
    for c, i in zip(classes.tolist(), images.tolist()):
        assert c in cats.labels_of(i).tolist()


# ----------------------------------------------------- determinism/resume --


def test_determinism_and_resume():
    a = ClassAwareSampler(CatListDataset(TOY), q=0.5, seed=7)
    b = ClassAwareSampler(CatListDataset(TOY), q=0.5, seed=7)
    c = ClassAwareSampler(CatListDataset(TOY), q=0.5, seed=8)
    streams = []
    for e in range(4):
        a.set_epoch(e)
        b.set_epoch(e)
        sa = list(a)
        assert sa == list(b) and len(sa) == len(a) == len(TOY)
        streams.append(sa)
    assert len({tuple(x) for x in streams}) > 1
    assert any(c.epoch_indices(e).tolist() != streams[e] for e in range(4))
    fresh = ClassAwareSampler(CatListDataset(TOY), q=0.5, seed=7)
    fresh.set_epoch(2)
    assert list(fresh) == streams[2]


def test_build_from_registry_and_infinite():
    s = DATA_SAMPLERS.build(
        dict(type='mmlongtail.ClassAwareSampler', q=0.0, infinite=True,
             seed=5),
        default_args=dict(dataset=CatListDataset(TOY)))
    it = iter(s)
    got = [next(it) for _ in range(40)]
    want = torch.cat([s.epoch_indices(e) for e in range(7)]).tolist()[:40]
    assert got == want


def _dist_worker(rank, world, out_dir):
    record_rank_streams(
        rank, out_dir,
        lambda ds: ClassAwareSampler(
            ds, q=0.0, num_samples=25, progressive=dict(end=2)),
        lambda ds, seed: ClassAwareSampler(
            ds, q=0.0, seed=seed, infinite=True),
        infinite_draws=60)


def test_two_gloo_ranks_partition_the_epoch(tmp_path):
    spawn_gloo(_dist_worker, str(tmp_path))
    r0, r1 = (json.load(open(tmp_path / f'rank{k}.json')) for k in (0, 1))
    assert r0['seed'] == r1['seed']  # seed=None was synchronized
    cats = DIST_CATS
    ref = ClassAwareSampler(CatListDataset(cats), q=0.0, num_samples=25,
                            progressive=dict(end=2), seed=r0['seed'])
    for e in ('0', '1'):
        full = ref.epoch_indices(int(e)).tolist()
        a, b = r0['epochs'][e], r1['epochs'][e]
        assert len(a) == len(b) == r0['lens'][e] == 13
        padded = (full * 2)[:26]  # 25 draws, one padding index
        assert a == padded[0::2] and b == padded[1::2]
        assert collections.Counter(a + b) - collections.Counter(full) == \
            collections.Counter(full[:1])
    ref_inf = ClassAwareSampler(CatListDataset(cats), q=0.0, seed=r0['seed'])
    stream = torch.cat([ref_inf.epoch_indices(e) for e in range(6)]).tolist()
    assert r0['infinite'] == stream[0:120:2]
    assert r1['infinite'] == stream[1:120:2]


# ---------------------------------------------------------- Runner loops --


def test_epoch_based_runner_loop(tmp_path):
    seen = []
    runner = tiny_runner(
        tmp_path, dict(type='EpochBasedTrainLoop', max_epochs=3),
        dict(type='mmlongtail.ClassAwareSampler', q=0.0,
             progressive=dict(end=3)), seen, TOY * 3)
    runner.train()
    s = runner.train_dataloader.sampler
    assert isinstance(s, ClassAwareSampler) and s.seed == 11
    want = [i for e in range(3) for i in s.epoch_indices(e).tolist()]
    assert seen == want


def test_iter_based_runner_resumes_exactly(tmp_path):
    sampler = dict(type='mmlongtail.ClassAwareSampler', q=0.5, infinite=True)
    train_cfg = dict(type='IterBasedTrainLoop', max_iters=14)
    hooks = dict(
        checkpoint=dict(type='CheckpointHook', interval=6, by_epoch=False),
        logger=dict(type='LoggerHook', interval=1000))
    seen = []
    tiny_runner(tmp_path / 'a', train_cfg, sampler, seen, TOY * 2,
                default_hooks=hooks).train()
    assert len(seen) == 28  # 14 iterations of 2, over several epochs
    resumed = []
    tiny_runner(
        tmp_path / 'b', train_cfg, sampler, resumed, TOY * 2,
        default_hooks=hooks,
        load_from=str(tmp_path / 'a' / 'iter_6.pth'),
        resume=True).train()
    # mmengine skips the 6 trained batches; the rest is served as before
    assert resumed == seen[12:]


@pytest.mark.parametrize('name,progressive', [
    ('class_aware_sampling/mask_rcnn_r50_fpn_ms_cas_1x_lvis.py', None),
    ('class_aware_sampling/mask_rcnn_r50_fpn_ms_pbs_1x_lvis.py',
     dict(end=12, start_q=1.0, mode='mix')),
])
def test_lvis_configs_build_the_sampler(name, progressive):
    from mmengine.config import Config
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(root, 'configs', name))
    s = DATA_SAMPLERS.build(
        cfg.train_dataloader.sampler,
        default_args=dict(dataset=CatListDataset(TOY), seed=0))
    assert isinstance(s, ClassAwareSampler) and s.q == 0.0
    assert s.progressive == (None if progressive is None else dict(
        progressive, begin=0, shape='linear', base=None))


@pytest.mark.parametrize('shape,base,g', [
    ('linear', None, lambda s, L: 1 - s / L),
    ('convex', None, lambda s, L: np.cos(s / L * np.pi / 2)),
    ('composite', None, lambda s, L: 0.5 * np.cos(s / L * np.pi) + 0.5),
    ('concave', 0.5, lambda s, L: 0.5**s),
])
def test_dcl_sampling_shapes(shape, base, g):
    """DCL (Wang et al., ICCV 2019, Sec. 3.1): ``p_j ∝ n_j^{g(l)}``, with
    ``g`` written out here; ``l`` counts epochs from ``begin``."""
    s = ClassAwareSampler(
        CatListDataset(TOY),
        q=0.0,
        progressive=dict(
            begin=1, end=5, mode='exponent', shape=shape, base=base),
        seed=0)
    for epoch in (0, 1, 2, 3, 4, 5, 9):
        step = min(max(epoch - 1, 0), 4)
        w = N.astype(float)**g(step, 4)
        np.testing.assert_allclose(
            s.class_probabilities(epoch), w / w.sum(), rtol=1e-12)
        assert s.progress(epoch) == pytest.approx(1 - g(step, 4), abs=1e-12)
    if shape != 'concave':  # balanced from `end` on
        np.testing.assert_allclose(s.class_probabilities(5), [1 / 3] * 3)


def test_dcl_shape_bad_arguments():
    ds = CatListDataset(TOY)
    for prog, match in [
        (dict(end=3, shape='cosine'), 'shape must be one of'),
        (dict(end=3, shape='concave'), 'needs 0 < base < 1'),
        (dict(end=3, shape='concave', base=1.0), 'needs 0 < base < 1'),
        (dict(end=3, shape='convex', base=0.5), "base is only for"),
    ]:
        with pytest.raises(ValueError, match=match):
            ClassAwareSampler(ds, seed=0, progressive=prog)
