"""The held-out split of a training annotation file
(mmlongtail.datasets.heldout_split): deterministic, disjoint, covering,
stratified by class, categories consistent, bad input refused."""
import json
import os.path as osp
from collections import defaultdict

import numpy as np
import pytest

from mmlongtail.datasets.heldout_split import (choose_heldout,
                                               heldout_file_names,
                                               heldout_of_remaining,
                                               split_heldout, split_info)
from mmlongtail.datasets.category_stats import load_category_stats


def _load(path):
    with open(path) as f:
        return json.load(f)


def _hand_dataset():
    """10 images. Class 1 (A) in images 1, 2; class 2 (B) in all ten;
    class 3 (C) only in image 3."""
    images = [dict(id=i, file_name=f'{i}.png', height=8, width=8,
                   neg_category_ids=[], not_exhaustive_category_ids=[])
              for i in range(1, 11)]
    anns, k = [], 0
    for img in range(1, 11):
        cats = [2] + ([1] if img in (1, 2) else []) + ([3] if img == 3 else
                                                       [])
        for c in cats:
            k += 1
            anns.append(dict(id=k, image_id=img, category_id=c,
                             bbox=[0, 0, 2, 2], area=4, iscrowd=0))
    anns.append(dict(id=k + 1, image_id=5, category_id=2, bbox=[1, 1, 2, 2],
                     area=4, iscrowd=0))  # a second instance of B
    cats = [dict(id=1, name='a', frequency='r', image_count=2,
                 instance_count=2),
            dict(id=2, name='b', frequency='f', image_count=10,
                 instance_count=11),
            dict(id=3, name='c', frequency='r', image_count=1,
                 instance_count=1)]
    return dict(info=dict(description='hand'), images=images,
                annotations=anns, categories=cats)


@pytest.fixture
def hand_file(tmp_path):
    path = tmp_path / 'lvis_v1_train.json'
    path.write_text(json.dumps(_hand_dataset()))
    return str(path)


@pytest.mark.parametrize('seed', range(6))
def test_stratified_by_hand(hand_file, tmp_path, seed):
    """N = 2 of 10 (f = 0.2). Rarest first: C (1 image) is never held out
    (it would leave training); A (2 images) wants max(1, floor(0.4)) = 1:
    one of images 1, 2; B (10) wants max(1, 2) = 2, has 1 through A's
    image, and takes one more that leaves A and C a training image: one of
    4..10."""
    paths = split_heldout(hand_file, str(tmp_path / 'out'), seed=seed,
                          num_images=2)
    held = sorted(im['id'] for im in _load(paths['heldout'])['images'])
    assert len(held) == 2
    assert len({1, 2} & set(held)) == 1
    assert 3 not in held
    assert len(set(range(4, 11)) & set(held)) == 1


def test_names_counts_and_frequency(hand_file, tmp_path):
    paths = split_heldout(hand_file, str(tmp_path), seed=0, num_images=2)
    assert {k: osp.basename(v) for k, v in paths.items()} == \
        heldout_file_names(hand_file, 0, 2) == {
            'heldout': 'lvis_v1_train_heldout_seed0_n2.json',
            'remaining': 'lvis_v1_train_remaining_seed0_n2.json'}
    held, rest = _load(paths['heldout']), _load(paths['remaining'])
    for part in (held, rest):
        # counts recounted per part, groups kept from the source
        imgs, inst = defaultdict(set), defaultdict(int)
        for a in part['annotations']:
            imgs[a['category_id']].add(a['image_id'])
            inst[a['category_id']] += 1
        assert [(c['id'], c['name'], c['frequency']) for c in
                part['categories']] == [(1, 'a', 'r'), (2, 'b', 'f'),
                                        (3, 'c', 'r')]
        assert [c['image_count'] for c in part['categories']] == [
            len(imgs[i]) for i in (1, 2, 3)]
        assert [c['instance_count'] for c in part['categories']] == [
            inst[i] for i in (1, 2, 3)]
        assert part['info']['description'] == 'hand'
    assert [c['image_count'] for c in held['categories']] == [1, 2, 0]
    assert [c['image_count'] for c in rest['categories']] == [1, 8, 1]
    assert held['info']['heldout_split']['part'] == 'heldout'
    assert split_info(paths['remaining'])['files'] == \
        heldout_file_names(hand_file, 0, 2)
    # the remaining part is a training file whose twin is found
    twin, info = heldout_of_remaining(paths['remaining'])
    assert twin == paths['heldout'] and info['seed'] == 0
    assert heldout_of_remaining(hand_file) is None
    stats = load_category_stats(paths['remaining'])
    assert stats.image_count.tolist() == [1, 8, 1]


def test_on_synthetic_set(tiny_lvis, tmp_path):
    """Deterministic, disjoint, covering; annotations follow their
    images; every class keeps training images; every class with >= 2
    images is in the held-out part (the budget allows it here)."""
    src = _load(tiny_lvis['train'])
    a = split_heldout(tiny_lvis['train'], str(tmp_path / 'a'), seed=1,
                      fraction=0.25)
    b = split_heldout(tiny_lvis['train'], str(tmp_path / 'b'), seed=1,
                      fraction=0.25)
    c = split_heldout(tiny_lvis['train'], str(tmp_path / 'c'), seed=2,
                      fraction=0.25)
    n = round(0.25 * len(src['images']))
    assert osp.basename(a['heldout']).endswith(f'_seed1_n{n}.json')
    for part in ('heldout', 'remaining'):
        with open(a[part], 'rb') as fa, open(b[part], 'rb') as fb:
            assert fa.read() == fb.read()
    held, rest = _load(a['heldout']), _load(a['remaining'])
    ids = lambda d: [im['id'] for im in d['images']]  # noqa: E731
    assert len(ids(held)) == n
    assert not set(ids(held)) & set(ids(rest))
    assert sorted(ids(held) + ids(rest)) == sorted(ids(src))
    assert ids(_load(c['heldout'])) != ids(held)
    for part in (held, rest):
        mine = set(ids(part))
        assert all(x['image_id'] in mine for x in part['annotations'])
    assert sorted(x['id'] for x in held['annotations'] + rest['annotations']
                  ) == sorted(x['id'] for x in src['annotations'])
    full = load_category_stats(tiny_lvis['train'])
    h, r = (load_category_stats(p) for p in (a['heldout'], a['remaining']))
    assert (h.image_count + r.image_count == full.image_count).all()
    assert (r.image_count >= 1).all()
    assert (h.image_count[full.image_count >= 2] >= 1).all()
    assert h.frequency == r.frequency == full.frequency
    # the file is not rewritten when it already holds this split
    mtime = osp.getmtime(a['heldout'])
    split_heldout(tiny_lvis['train'], str(tmp_path / 'a'), seed=1,
                  fraction=0.25)
    assert osp.getmtime(a['heldout']) == mtime


@pytest.mark.parametrize('kwargs, match', [
    (dict(fraction=0.0), r'fraction must lie in \(0, 1\)'),
    (dict(fraction=1.0), r'fraction must lie in \(0, 1\)'),
    (dict(fraction=-0.2), r'fraction must lie in \(0, 1\)'),
    (dict(fraction=1.5), r'fraction must lie in \(0, 1\)'),
    (dict(), 'exactly one of fraction'),
    (dict(fraction=0.2, num_images=2), 'exactly one of fraction'),
    (dict(num_images=10), 'leaves a part empty'),
    (dict(num_images=0), 'leaves a part empty'),
    (dict(num_images=2.5), 'num_images must be an integer'),
    (dict(num_images=2, seed=-1), 'seed must be an integer >= 0'),
    (dict(num_images=9), 'only 8 of the 9 requested images'),
])
def test_refuses_bad_input(hand_file, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_heldout(hand_file, str(tmp_path), **kwargs)
    assert not list(tmp_path.glob('*_heldout_*'))


def test_refuses_files_that_are_not_annotations(tmp_path):
    path = tmp_path / 'x.json'
    path.write_text(json.dumps(dict(images=[], categories=[])))
    with pytest.raises(ValueError, match="no 'annotations' list"):
        split_heldout(str(path), str(tmp_path), num_images=1)
    with pytest.raises(FileNotFoundError):
        split_heldout(str(tmp_path / 'none.json'), str(tmp_path),
                      num_images=1)


def test_choice_is_a_function_of_the_seed():
    labels = [[i % 5] for i in range(40)]
    a = choose_heldout(list(range(40)), labels, 8, seed=3)
    assert a.sum() == 8
    assert np.array_equal(a, choose_heldout(list(range(40)), labels, 8, 3))
    # 5 classes of 8 images, f = 0.2: floor(1.6) = 1 per class, then fill
    assert all(a[[i for i in range(40) if i % 5 == c]].sum() >= 1
               for c in range(5))


def test_given_images_and_file_names(hand_file, tmp_path):
    """A caller that drew the held-out images itself names them (and the
    files): those images exactly, the record says so, both parts as
    usual; every class must keep a remaining image."""
    from mmlongtail.datasets.heldout_split import GIVEN_RULE

    names = dict(heldout='held.json', remaining='train.json')
    paths = split_heldout(hand_file, str(tmp_path / 'o'), seed=4,
                          heldout_image_ids=[2, 7], file_names=names)
    assert paths == {p: str(tmp_path / 'o' / n) for p, n in names.items()}
    held, rest = _load(paths['heldout']), _load(paths['remaining'])
    assert [im['id'] for im in held['images']] == [2, 7]
    assert [im['id'] for im in rest['images']] == [1, 3, 4, 5, 6, 8, 9, 10]
    info = split_info(paths['heldout'])
    assert info == dict(split_info(paths['remaining']), part='heldout',
                        num_part_images=2)
    assert info['rule'] == GIVEN_RULE and info['seed'] == 4
    assert info['num_heldout_images'] == 2 and info['files'] == names
    # the remaining part finds its held-out twin by the recorded name
    assert heldout_of_remaining(paths['remaining'])[0] == paths['heldout']
    # A's counts per part; its r/c/f group the source's
    assert [c['image_count'] for c in held['categories']] == [1, 2, 0]
    assert [c['frequency'] for c in rest['categories']] == ['r', 'f', 'r']
    out = str(tmp_path / 'x')
    with pytest.raises(ValueError, match=r'images \[11\] are not in'):
        split_heldout(hand_file, out, heldout_image_ids=[2, 11])
    with pytest.raises(ValueError, match='not both'):
        split_heldout(hand_file, out, heldout_image_ids=[2], num_images=1)
    with pytest.raises(ValueError, match=r'classes with labels \[0\]'):
        split_heldout(hand_file, out, heldout_image_ids=[1, 2])
    with pytest.raises(ValueError, match='give distinct ids'):
        split_heldout(hand_file, out, heldout_image_ids=[2, 2])
    with pytest.raises(ValueError, match='file_names needs exactly'):
        split_heldout(hand_file, out, heldout_image_ids=[2],
                      file_names=dict(heldout='h.json'))
