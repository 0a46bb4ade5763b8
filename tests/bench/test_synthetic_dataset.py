"""The rendered synthetic long-tailed LVIS-format dataset."""
import hashlib
import json
import os
import os.path as osp
from collections import Counter

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mmlongtail.datasets.category_stats import (frequency_group,
                                                load_category_stats)
from mmlongtail_bench.synthetic import (HELDOUT_ANN_FILE,
                                        SyntheticLVISConfig,
                                        generate_synthetic_lvis,
                                        heldout_image_counts,
                                        target_image_counts,
                                        write_heldout_split)


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_lvis_api_loads_both_splits(tiny_lvis):
    from lvis import LVIS
    for split in ('train', 'val'):
        api = LVIS(tiny_lvis[split])
        assert len(api.get_cat_ids()) == 12
        assert len(api.get_img_ids()) > 0
        img = api.load_imgs(api.get_img_ids()[:1])[0]
        assert 'neg_category_ids' in img
        assert 'not_exhaustive_category_ids' in img


def test_counts_and_frequency_groups_agree(tiny_lvis):
    cfg = tiny_lvis['cfg']
    data = _load(tiny_lvis['train'])
    per_cat_imgs = Counter()
    seen = set()
    for a in data['annotations']:
        if (a['image_id'], a['category_id']) not in seen:
            seen.add((a['image_id'], a['category_id']))
            per_cat_imgs[a['category_id']] += 1
    per_cat_inst = Counter(a['category_id'] for a in data['annotations'])
    groups = Counter()
    for c in data['categories']:
        assert c['image_count'] == per_cat_imgs[c['id']]
        assert c['instance_count'] == per_cat_inst[c['id']]
        assert c['frequency'] == frequency_group(c['image_count'],
                                                 cfg.rare_max, cfg.common_max)
        groups[c['frequency']] += 1
    assert groups == {'r': 4, 'c': 4, 'f': 4}
    # the realised counts are exactly the designed long tail
    by_id = sorted(data['categories'], key=lambda c: c['id'])
    assert [c['image_count'] for c in by_id
            ] == target_image_counts(cfg).tolist()
    # rare classes are LVIS-rare: 1..rare_max training images
    rare = [c['image_count'] for c in by_id if c['frequency'] == 'r']
    assert min(rare) >= 1 and max(rare) <= cfg.rare_max
    # the stats loader reads the same numbers from the annotation file
    stats = load_category_stats(tiny_lvis['train'], num_classes=12)
    assert stats.image_count.tolist() == [c['image_count'] for c in by_id]
    assert stats.num_images == len({a['image_id']
                                    for a in data['annotations']})


def test_val_is_balanced_and_federated_fields_are_right(tiny_lvis):
    val = _load(tiny_lvis['val'])
    per_cat = Counter()
    present = {}
    for a in val['annotations']:
        present.setdefault(a['image_id'], set()).add(a['category_id'])
    for cats in present.values():
        per_cat.update(cats)
    assert set(per_cat.values()) == {tiny_lvis['cfg'].val_images_per_class}
    all_ids = {c['id'] for c in val['categories']}
    for img in val['images']:
        pos = present.get(img['id'], set())
        assert set(img['neg_category_ids']) == all_ids - pos
        assert img['not_exhaustive_category_ids'] == []
    # val carries the training split's groups, as LVIS does
    train = _load(tiny_lvis['train'])
    assert val['categories'] == train['categories']


def test_masks_are_exact(tiny_lvis):
    """The polygon covers the object's pixels and nothing of another's."""
    data = _load(tiny_lvis['train'])
    img_info = data['images'][0]
    img = cv2.imread(osp.join(tiny_lvis['root'], img_info['file_name']))
    bg = np.median(img.reshape(-1, 3), 0)
    foreground = np.abs(img.astype(int) - bg).sum(-1) > 90
    union = np.zeros(foreground.shape, bool)
    anns = [a for a in data['annotations'] if a['image_id'] == img_info['id']]
    assert anns
    for a in anns:
        rle = mask_utils.frPyObjects(a['segmentation'], img_info['height'],
                                     img_info['width'])
        m = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
        assert abs(m.sum() - a['area']) <= 0.25 * a['area'] + 8
        x, y, w, h = a['bbox']
        ys, xs = np.nonzero(m)
        assert xs.min() >= np.floor(x) - 1 and xs.max() <= x + w + 1
        assert ys.min() >= np.floor(y) - 1 and ys.max() <= y + h + 1
        assert not (union & m).any(), 'objects must not overlap'
        union |= m
    # high-contrast pixels lie inside the masks (edges are anti-aliased)
    inner = cv2.erode(foreground.astype(np.uint8), np.ones((3, 3))) > 0
    assert (inner & ~union).sum() <= 0.02 * inner.sum() + 2


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            with open(osp.join(dirpath, name), 'rb') as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path):
    cfg = SyntheticLVISConfig(
        num_rare=2, num_common=2, num_frequent=2, num_train_images=20,
        val_images_per_class=1, image_size=48, min_size=8, max_size=16,
        rare_max=2, common_max=4, frequent_max_fraction=0.5, seed=11)
    generate_synthetic_lvis(str(tmp_path / 'a'), cfg, show_progress=False)
    generate_synthetic_lvis(str(tmp_path / 'b'), cfg, show_progress=False)
    assert _digest(tmp_path / 'a') == _digest(tmp_path / 'b')
    cfg.seed = 12
    generate_synthetic_lvis(str(tmp_path / 'c'), cfg, show_progress=False)
    assert _digest(tmp_path / 'a') != _digest(tmp_path / 'c')


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_rare=100, num_common=10, num_frequent=10), 'distinct'),
    (dict(num_rare=-1), 'class counts'),
    (dict(rare_max=10, common_max=5), 'rare_max < common_max'),
    (dict(num_train_images=40, common_max=30), 'frequent classes need more'),
    (dict(min_size=50, max_size=80, image_size=64), 'min_size'),
    (dict(val_images_per_class=0), 'val_images_per_class'),
])
def test_impossible_requests_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_synthetic_lvis(
            str(tmp_path), SyntheticLVISConfig(**kwargs), show_progress=False)
    assert not osp.exists(tmp_path / 'annotations')


def test_too_crowded_images_are_refused_not_retried_forever(tmp_path):
    # 40 classes on 120 images: ~5 classes (~7 objects) per 64 px image;
    # this used to shrink the objects to the floor and then loop forever
    cfg = SyntheticLVISConfig(num_train_images=120, image_size=64,
                              min_size=10, max_size=24)
    with pytest.raises(ValueError, match=r'train image \d+: \d+ objects do '
                       r'not fit in 64 x 64 px even at 5 px each'):
        generate_synthetic_lvis(str(tmp_path), cfg, show_progress=False)


def test_heldout_image_counts_follow_the_training_split():
    # ceil(0.1 n): 1 for every rare class, 0.1 x 30 = 3 exactly
    np.testing.assert_array_equal(
        heldout_image_counts(np.array([1, 10, 11, 30, 31, 180]), 0.1),
        [1, 1, 2, 3, 4, 18])
    np.testing.assert_array_equal(
        heldout_image_counts(np.array([1, 4, 9]), 1.0), [1, 4, 9])
    with pytest.raises(ValueError, match=r'fraction must be in \(0, 1\]'):
        heldout_image_counts(np.array([3]), 0.0)
    with pytest.raises(ValueError, match='counts >= 1'):
        heldout_image_counts(np.array([3, 0]), 0.1)


def _file_digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_heldout_split_is_new_images_of_the_training_distribution(
        tmp_path):
    from lvis import LVIS
    cfg = SyntheticLVISConfig(num_train_images=120, val_images_per_class=1,
                              image_size=96, min_size=10, max_size=24)
    paths = generate_synthetic_lvis(str(tmp_path / 'a'), cfg,
                                    show_progress=False)
    before = {k: _file_digest(p) for k, p in paths.items()}
    old_train = _load(paths['train'])
    path = write_heldout_split(str(tmp_path / 'a'), 0.1, show_progress=False)
    assert path == osp.join(str(tmp_path / 'a'), HELDOUT_ANN_FILE)
    # val untouched; the training file keeps its images, annotations and
    # categories (the split's record is added to its info: it is the
    # remaining part of the library's split, see test_bench_identity.py)
    assert _file_digest(paths['val']) == before['val']
    train, held = _load(paths['train']), _load(path)
    for key in ('images', 'annotations', 'categories'):
        assert train[key] == old_train[key]
    assert train['info']['heldout_split']['part'] == 'remaining'
    # the training r/c/f groups; each part's own counts
    assert [c['frequency'] for c in held['categories']] == [
        c['frequency'] for c in train['categories']]
    assert held['info']['heldout'] == dict(fraction=0.1, images=len(
        held['images']), source='lvis_v1_train.json')
    # class c in ceil(0.1 x its training images) held-out images
    pairs = {(a['image_id'], a['category_id']) for a in held['annotations']}
    got = Counter(c for _, c in pairs)
    want = heldout_image_counts(
        np.array([c['image_count'] for c in train['categories']]), 0.1)
    assert [got[c['id']] for c in train['categories']] == want.tolist()
    # as many classes per image as in training: 16 images here
    per_train = sum(c['image_count'] for c in train['categories']) / 120
    assert len(held['images']) == int(np.ceil(want.sum() / per_train)) == 16
    # new images (own ids and folder), exhaustive federated fields
    ids = {i['id'] for i in held['images']}
    assert not ids & {i['id'] for i in train['images']}
    for img in held['images']:
        assert img['file_name'].startswith('heldout2017/')
        assert osp.isfile(osp.join(str(tmp_path / 'a'), img['file_name']))
        present = {c for i, c in pairs if i == img['id']}
        assert set(img['neg_category_ids']) == set(range(1, 41)) - present
    LVIS(path)
    # deterministic
    generate_synthetic_lvis(str(tmp_path / 'b'), cfg, show_progress=False)
    again = write_heldout_split(str(tmp_path / 'b'), 0.1,
                                show_progress=False)

    def content(p):  # but for the record's absolute source path
        data = _load(p)
        data['info']['heldout_split'].pop('source')
        return data

    assert content(again) == content(path)
    # where a config says (the benchmark passes its heldout_ann_file),
    # beside the training file (where the library finds a remaining part's
    # held-out twin)
    named = str(tmp_path / 'b' / 'annotations' / 'held.json')
    assert write_heldout_split(str(tmp_path / 'b'), 0.1, show_progress=False,
                               ann_file=named) == named
    assert _load(named)['images'] == held['images']
    assert _load(paths['train'].replace('/a/', '/b/'))['info'][
        'heldout_split']['files']['heldout'] == 'held.json'
    with pytest.raises(ValueError, match="in the training file's folder"):
        write_heldout_split(str(tmp_path / 'b'), 0.1, show_progress=False,
                            ann_file=str(tmp_path / 'cfg' / 'held.json'))
    with pytest.raises(FileNotFoundError, match='make the dataset first'):
        write_heldout_split(str(tmp_path / 'none'))
