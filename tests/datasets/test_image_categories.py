"""image_categories: per-image labels of mmdet datasets and mmengine wrappers,
both sources, matched by img_id; the CSR layout by hand."""
import collections
import json

import numpy as np
import pytest
import torch
from lvis_toy import make_dataset, write_lvis
from mmengine.dataset import (BaseDataset, ClassBalancedDataset,
                              ConcatDataset, RepeatDataset)

from mmlongtail.datasets import (RepeatFactorSampler, compute_repeat_factors,
                                 image_categories)
from mmlongtail.datasets.image_categories import from_pairs

FILTER = dict(filter_empty_gt=True, min_size=32)


@pytest.fixture(scope='module')
def lvis_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('cats') / 'lvis_v1_train.json')
    write_lvis(path)
    return path


def file_labels(lvis_file, ds):
    """Per index: sorted distinct labels of that image's annotations in the
    file (the definition of the annotation source)."""
    with open(lvis_file) as f:
        raw = json.load(f)
    label = {c['id']: i for i, c in enumerate(raw['categories'])}
    of_img = collections.defaultdict(set)
    for a in raw['annotations']:
        of_img[a['image_id']].add(label[a['category_id']])
    return [
        sorted(of_img[ds.get_data_info(i)['img_id']]) for i in range(len(ds))
    ]


def as_lists(cats):
    return [cats.labels_of(i).tolist() for i in range(cats.num_images)]


class ListDataset(BaseDataset):
    """A BaseDataset whose ``get_cat_ids`` reads a list, with declared
    classes."""

    def __init__(self, cats, classes):
        self._cats = cats
        super().__init__(
            metainfo=dict(classes=classes), lazy_init=True,
            serialize_data=False)

    def load_data_list(self):
        return [dict(img_id=100 + i) for i in range(len(self._cats))]

    def get_cat_ids(self, idx):
        return self._cats[idx]


# ----------------------------------------------------------- the layout --


def test_from_pairs_by_hand():
    # unsorted pairs with repeats; images 1 and 4 have none
    cats = from_pairs([2, 0, 2, 0, 2, 3, 0], [1, 0, 1, 2, 0, 1, 2],
                      num_images=5, num_classes=3)
    np.testing.assert_array_equal(cats.offsets, [0, 2, 2, 4, 5, 5])
    np.testing.assert_array_equal(cats.labels, [0, 2, 0, 1, 1])
    assert cats.num_images == 5 and cats.num_classes == 3
    assert cats.labels_of(2).tolist() == [0, 1]
    assert cats.labels_of(4).tolist() == []
    np.testing.assert_array_equal(cats.image_index(), [0, 0, 2, 2, 3])
    np.testing.assert_array_equal(cats.image_count(), [2, 2, 1])
    class_offsets, images = cats.images_per_class()
    np.testing.assert_array_equal(class_offsets, [0, 2, 4, 5])
    np.testing.assert_array_equal(images, [0, 2, 2, 3, 0])
    taken = cats.take([2, 2, 1, 0])
    np.testing.assert_array_equal(taken.offsets, [0, 2, 4, 4, 6])
    np.testing.assert_array_equal(taken.labels, [0, 1, 0, 1, 0, 2])
    assert taken.img_ids is None


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r'labels must lie in \[0, '
                       r'num_classes=3\), got \[3\]'):
        from_pairs([0, 1], [1, 3], num_images=2, num_classes=3)
    with pytest.raises(ValueError, match=r'got \[-1\]'):
        from_pairs([0], [-1], num_images=2, num_classes=3)
    with pytest.raises(ValueError, match=r'image_index must lie in \[0, 2\)'):
        from_pairs([2], [0], num_images=2, num_classes=3)
    with pytest.raises(ValueError, match='2 entries but labels has 1'):
        from_pairs([0, 1], [0], num_images=2, num_classes=3)
    with pytest.raises(ValueError, match='3 img_ids for 2 images'):
        from_pairs([0], [0], 2, 3, img_ids=[1, 2, 3])
    cats = from_pairs([0], [0], num_images=2, num_classes=1)
    with pytest.raises(ValueError, match=r'indices must lie in \[0, 2\)'):
        cats.take([0, 2])
    with pytest.raises(IndexError, match='outside'):
        cats.labels_of(2)
    with pytest.raises(ValueError, match='source must be one of'):
        image_categories(ListDataset([[0]], ('a', )), source='file')


# ------------------------------------------------------ mmdet datasets --


@pytest.mark.parametrize('serialize', [True, False])
@pytest.mark.parametrize('filter_cfg', [None, FILTER],
                         ids=['nofilter', 'filtered'])
def test_lvis_dataset_both_sources(lvis_file, serialize, filter_cfg):
    ds = make_dataset(lvis_file, filter_cfg, serialize_data=serialize)
    want = file_labels(lvis_file, ds)
    ann = image_categories(ds)  # auto: the annotation index
    assert ann.source == 'annotation index'
    assert ann.num_images == len(ds) and ann.num_classes == 6
    assert as_lists(ann) == want
    np.testing.assert_array_equal(
        ann.img_ids, [ds.get_data_info(i)['img_id'] for i in range(len(ds))])
    ref = image_categories(ds, source='get_cat_ids')
    assert ref.source == 'get_cat_ids'
    assert as_lists(ref) == [sorted(set(ds.get_cat_ids(i)))
                             for i in range(len(ds))]
    np.testing.assert_array_equal(ref.img_ids, ann.img_ids)
    # the sources differ only where mmdet's parser dropped an annotation:
    # position 8's only box is degenerate (category 40, label 5)
    with open(lvis_file) as f:
        degenerate = json.load(f)['images'][8]['id']
    differ = [i for i in range(len(ds)) if ann.labels_of(i).tolist() !=
              ref.labels_of(i).tolist()]
    assert [int(ann.img_ids[i]) for i in differ] == [degenerate]
    assert ann.labels_of(differ[0]).tolist() == [5]
    assert ref.labels_of(differ[0]).tolist() == []


def test_filtered_images_drop_out_of_the_join(lvis_file):
    full = image_categories(make_dataset(lvis_file))
    filt_ds = make_dataset(lvis_file, FILTER)
    filt = image_categories(filt_ds)
    assert full.num_images - filt.num_images == 3
    row = {int(i): k for k, i in enumerate(full.img_ids)}
    for k, img_id in enumerate(filt.img_ids.tolist()):
        np.testing.assert_array_equal(filt.labels_of(k),
                                      full.labels_of(row[img_id]))
    # an image count is the number of (kept) images holding the label
    np.testing.assert_array_equal(
        filt.image_count(),
        [sum(c in filt.labels_of(k) for k in range(filt.num_images))
         for c in range(6)])


# ------------------------------------------------------------ wrappers --


def test_concat_repeat_and_class_balanced(lvis_file):
    a = make_dataset(lvis_file, FILTER)
    b = make_dataset(lvis_file)
    ca, cb = image_categories(a), image_categories(b)
    concat = image_categories(ConcatDataset([a, b]))
    assert concat.source == ('ConcatDataset of [annotation index, '
                             'annotation index]')
    assert as_lists(concat) == as_lists(ca) + as_lists(cb)
    np.testing.assert_array_equal(concat.img_ids,
                                  np.r_[ca.img_ids, cb.img_ids])

    rep = image_categories(RepeatDataset(a, times=3))
    assert as_lists(rep) == as_lists(ca) * 3
    assert rep.source == 'RepeatDataset(times=3) of annotation index'

    cbd = ClassBalancedDataset(a, oversample_thr=0.3)
    balanced = image_categories(cbd, source='get_cat_ids')
    assert len(cbd) == balanced.num_images > len(a)
    for j, i in enumerate(cbd.repeat_indices):
        assert balanced.labels_of(j).tolist() == sorted(
            set(cbd.get_cat_ids(j)))
        assert balanced.img_ids[j] == a.get_data_info(i)['img_id']


def test_sampler_over_a_concat_dataset(lvis_file):
    a = make_dataset(lvis_file, FILTER)
    b = make_dataset(lvis_file)
    ds = ConcatDataset([a, b])
    s = RepeatFactorSampler(ds, repeat_thr=0.3, seed=0)
    per_index = file_labels(lvis_file, a) + file_labels(lvis_file, b)
    np.testing.assert_array_equal(s.repeat_factors.numpy(),
                                  compute_repeat_factors(per_index, 0.3))
    assert set(s) <= set(range(len(ds)))


def test_get_cat_ids_datasets_and_errors():
    cats = image_categories(
        ListDataset([[2, 0, 2], [], [1]], classes=('a', 'b', 'c', 'd')))
    assert as_lists(cats) == [[0, 2], [], [1]]
    assert cats.num_classes == 4  # declared, not the largest label seen
    np.testing.assert_array_equal(cats.img_ids, [100, 101, 102])
    with pytest.raises(ValueError, match=r'num_classes=2\), got \[2\]'):
        image_categories(ListDataset([[0], [2]], classes=('a', 'b')))
    with pytest.raises(ValueError, match='different numbers of classes'):
        image_categories(
            ConcatDataset([
                ListDataset([[0]], ('a', )),
                ListDataset([[1]], ('a', 'b'))
            ],
                          ignore_keys=['classes']))
    with pytest.raises(ValueError, match='no loaded annotation index'):
        image_categories(ListDataset([[0]], ('a', )), source='annotations')
    sub = torch.utils.data.Subset(ListDataset([[0], [0]], ('a', )), [1])
    with pytest.raises(TypeError, match='Subset has no get_cat_ids'):
        image_categories(sub)
