"""LVISFormatDataset: classes from the file, malformed files refused with the
file and the problem named; LVISV1Dataset (the LVIS v1 configs' dataset):
files whose categories are not LVIS v1's refused."""
import json
import os.path as osp
import re
from glob import glob
from unittest import mock

import numpy as np
import pytest
from lvis_toy import (lvis_v05_like_categories, lvis_v1_categories,
                      write_lvis, write_with_categories)
from mmdet.datasets import LVISV1Dataset as MMDetLVISV1Dataset
from mmdet.registry import DATASETS
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmlongtail.datasets import LVISFormatDataset
from mmlongtail.datasets.annotation_file import AnnotationFileError
from mmlongtail.datasets.category_stats import load_category_stats
from mmlongtail.datasets.lvis_format import LVISV1Dataset


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_lvis_format_dataset_reads_classes_from_file(tiny_lvis):
    ds = LVISFormatDataset(
        data_root=tiny_lvis['root'],
        ann_file='annotations/lvis_v1_train.json',
        data_prefix=dict(img=''),
        pipeline=[])
    names = [c['name'] for c in _load(tiny_lvis['train'])['categories']]
    assert list(ds.metainfo['classes']) == names
    item = ds.get_data_info(0)
    assert osp.isfile(item['img_path'])
    assert all(0 <= i['bbox_label'] < 12 for i in item['instances'])
    assert len(ds) == len(_load(tiny_lvis['train'])['images'])


def test_lvis_format_dataset_refuses_unknown_categories(tiny_lvis, tmp_path):
    data = _load(tiny_lvis['train'])
    data['annotations'][0]['category_id'] = 999
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(data))
    with pytest.raises(AnnotationFileError,
                       match=r'category id 999 is not in .categories.'):
        LVISFormatDataset(ann_file=str(bad), data_prefix=dict(img=''),
                          pipeline=[])


# ------------------------------------------- LVIS v1 categories checked --
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _build(cls, path, **kw):
    return cls(ann_file=str(path), data_prefix=dict(img=''), pipeline=[],
               **kw)


def test_lvis_v1_configs_use_the_checked_dataset():
    """Every dataset of the LVIS v1 data configs (which every LVIS method
    config inherits) resolves to mmlongtail's checked LVISV1Dataset."""
    paths = sorted(
        glob(osp.join(ROOT, 'configs/_base_/datasets/lvis_v1_*.py')))
    assert len(paths) >= 6
    for path in paths:
        cfg = Config.fromfile(path)
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader'):
            ds = cfg[loader].dataset
            with DefaultScope.overwrite_default_scope('mmdet'):
                cls = DATASETS.get(ds.type)
            assert cls is LVISV1Dataset, (path, loader, ds.type)
    assert LVISV1Dataset.REFERENCE_CATEGORIES == 'lvis_v1'


def test_lvis_v1_file_loads_with_v1_classes(tmp_path):
    cats = lvis_v1_categories()
    assert len(cats) == 1203
    path = write_with_categories(tmp_path / 'v1.json', cats)
    ds = _build(LVISV1Dataset, path)
    assert ds.metainfo['classes'] == load_category_stats('lvis_v1').names
    # parsed exactly as mmdet's LVISV1Dataset parses it
    ref = _build(MMDetLVISV1Dataset, path)
    assert [ds.get_data_info(i) for i in range(len(ds))] == \
        [ref.get_data_info(i) for i in range(len(ref))]
    assert {i['bbox_label'] for i in ds.get_data_info(0)['instances']} == \
        {0, 1, 2}
    # the class names are known before the file is read
    lazy = _build(LVISV1Dataset, path, lazy_init=True)
    assert len(lazy.metainfo['classes']) == 1203


def test_lvis_v05_file_in_the_v1_dataset_is_refused(tmp_path):
    """lvis-api's example file is LVIS v0.5: 1230 classes, from 'acorn'."""
    path = write_with_categories(tmp_path / 'lvis_v0.5_val_100.json',
                                 lvis_v05_like_categories())
    with pytest.raises(ValueError) as e:
        _build(LVISV1Dataset, path)
    msg = str(e.value)
    assert msg.startswith(f'{path} is not an LVIS v1 annotation file')
    assert '1230 categories, which looks like LVIS v0.5' in msg
    assert "id 1 'acorn' here, id 1 'aerosol_can' in LVIS v1" in msg
    assert ("train_dataloader = dict(dataset=dict("
            "type='mmlongtail.LVISFormatDataset'))") in msg
    assert 'num_classes = 1230' in msg
    # named as LVIS v0.5 even if its images lack what LVIS v1's have
    data = _load(path)
    for img in data['images']:
        img['file_name'] = img.pop('coco_url')[-16:]
    path_05 = tmp_path / 'v05_images.json'
    path_05.write_text(json.dumps(data))
    with pytest.raises(ValueError, match='looks like LVIS v0.5'):
        _build(LVISV1Dataset, path_05)
    # the arbitrary-file dataset is not held to LVIS v1: 1230 classes
    ds = _build(LVISFormatDataset, path)
    assert len(ds.metainfo['classes']) == 1230
    assert ds.metainfo['classes'][0] == 'acorn'


def test_renamed_category_in_a_v1_sized_file_is_refused(tmp_path):
    cats = lvis_v1_categories()
    v1_name = cats[699]['name']
    cats[699] = dict(cats[699], name='renamed')
    path = write_with_categories(tmp_path / 'v1_renamed.json', cats)
    with pytest.raises(ValueError) as e:
        _build(LVISV1Dataset, path)
    msg = str(e.value)
    assert ('has 1203 categories, as many as LVIS v1, but not the same ones; '
            f"the first difference is category #699: id 700 'renamed' here, "
            f'id 700 {v1_name!r} in LVIS v1') in msg
    # a missing category (1202, v1's ids otherwise) is refused too
    short = write_with_categories(tmp_path / 'v1_short.json',
                                  lvis_v1_categories()[:-1])
    with pytest.raises(ValueError, match=r'has 1202 categories .*lacks LVIS '
                       r"v1 categories from #1202 on \(id 1203 'zucchini'"):
        _build(LVISV1Dataset, short)


def test_arbitrary_files_keep_working(tmp_path, synthetic40):
    """The 40-class synthetic set and the 6-class toy file, parsed as mmdet
    parses them, with their own classes."""
    ds = LVISFormatDataset(data_root=synthetic40['root'],
                           ann_file='annotations/lvis_v1_train.json',
                           data_prefix=dict(img=''), pipeline=[])
    assert len(ds.metainfo['classes']) == 40
    path = tmp_path / 'toy.json'
    write_lvis(str(path))
    for filter_cfg in (None, dict(filter_empty_gt=True, min_size=32)):
        ds = _build(LVISFormatDataset, path, filter_cfg=filter_cfg)
        ref = _build(MMDetLVISV1Dataset, path, filter_cfg=filter_cfg,
                     metainfo=dict(classes=ds.metainfo['classes']))
        assert len(ds) == (60 if filter_cfg is None else 57)
        assert ds.cat_ids == ref.cat_ids and ds.cat2label == ref.cat2label
        assert dict(ds.cat_img_map) == dict(ref.cat_img_map)
        assert [ds.get_data_info(i) for i in range(len(ds))] == \
            [ref.get_data_info(i) for i in range(len(ref))]
    assert ds.metainfo['classes'] == tuple(f'cat_{c}'
                                           for c in (3, 7, 11, 20, 21, 40))
    items = [ds.get_data_info(i) for i in range(len(ds))]
    assert items == [ref.get_data_info(i) for i in range(len(ref))]
    labels = np.concatenate([[i['bbox_label'] for i in d['instances']]
                             for d in items])
    assert labels.min() == 0 and labels.max() == 4  # id 40: degenerate only


def test_the_file_is_decoded_once(tmp_path):
    """The checks and mmdet's parser share one decoded copy (lvis-api's
    reader would decode the file again)."""
    path = tmp_path / 'toy.json'
    write_lvis(str(path))
    size = path.stat().st_size
    decode = json.JSONDecoder.decode
    decoded = []

    def counting(self, s, *args, **kwargs):
        decoded.append(len(s))
        return decode(self, s, *args, **kwargs)

    with mock.patch.object(json.JSONDecoder, 'decode', counting):
        ds = _build(LVISFormatDataset, path)
    assert len(ds) == 60
    assert decoded.count(size) == 1


# ------------------------------------------------------- malformed files --
def _toy(tmp_path):
    path = tmp_path / 'ann.json'
    write_lvis(str(path))
    return path, _load(path)


def _refused(path, data=None):
    if data is not None:
        path.write_text(json.dumps(data))
    with pytest.raises(AnnotationFileError) as e:
        _build(LVISFormatDataset, path)
    msg = str(e.value)
    assert str(path) in msg
    return msg


def test_truncated_json_names_the_file(tmp_path):
    path, _ = _toy(tmp_path)
    text = path.read_text()
    path.write_text(text[:len(text) // 2])
    msg = _refused(path)
    assert f'annotation file {path} is truncated' in msg
    assert f'ends in the middle after {len(text) // 2} characters' in msg
    path.write_text(text[:-1])  # only the closing brace lost
    assert 'is truncated' in _refused(path)
    path.write_text('')
    assert 'is empty' in _refused(path)
    path.write_text('{"images": [], oops}')
    assert 'is not valid JSON: Expecting property name' in _refused(path)
    path.write_bytes(b'PK\x03\x04\x14\x00\x00\x00\x08\x00\xb3\x9c')
    assert 'unzip it' in _refused(path)
    path.write_text('[]')
    assert 'its top level is a JSON list' in _refused(path)


@pytest.mark.parametrize('key', ['bbox', 'category_id', 'image_id', 'id',
                                 'area'])
def test_annotation_without_a_key_names_ids_and_key(tmp_path, key):
    path, data = _toy(tmp_path)
    ann = data['annotations'][4]
    del ann[key]
    data['annotations'][9].pop(key)
    msg = _refused(path, data)
    where = (f"annotation id {ann['id']}" if key != 'id' else
             'annotation #4 (no id)')
    where += (f", image id {ann['image_id']}" if key != 'image_id' else
              ', no image_id')
    assert (f"missing_key: 2 of {len(data['annotations'])} "
            f"(first: {where}: no {key!r}; ") in msg


def test_annotation_of_no_image_is_refused_not_dropped(tmp_path):
    """mmdet's parser walks the images, so this annotation would vanish."""
    path, data = _toy(tmp_path)
    ann = data['annotations'][0]
    ann['image_id'] = 123456789
    msg = _refused(path, data)
    assert (f"unknown_image: 1 of {len(data['annotations'])} (first: "
            f"annotation id {ann['id']}, image id 123456789: image id "
            "123456789 is not in 'images')") in msg


@pytest.mark.parametrize('box', [[1, 2, 3], [1, 2, 3, 4, 5], None,
                                 [1, 2, '3', 4]])
def test_bbox_that_is_not_four_numbers(tmp_path, box):
    path, data = _toy(tmp_path)
    ann = data['annotations'][2]
    ann['bbox'] = box
    msg = _refused(path, data)
    assert (f"wrong_type: 1 of {len(data['annotations'])} (first: "
            f"annotation id {ann['id']}, image id {ann['image_id']}: bbox is "
            f'{box!r}, not 4 numbers [x, y, width, height])') in msg


def test_several_problems_reported_together(tmp_path):
    path, data = _toy(tmp_path)
    data['annotations'][0]['category_id'] = 999
    del data['annotations'][1]['bbox']
    msg = _refused(path, data)
    assert "missing_key: 1 of" in msg
    assert "category id 999 is not in 'categories'" in msg


@pytest.mark.parametrize('edit, match', [
    (lambda d: d['images'][1].pop('coco_url'),
     r"image id \d+ has no 'coco_url'; every image needs 'id', 'coco_url', "
     r"'height', 'width'"),
    (lambda d: d['images'].append(dict(d['images'][0])),
     r'duplicate image ids \[\d+\] \(1 repeats\); each image needs its '
     'own id'),
    (lambda d: d['categories'].append(dict(d['categories'][-1])),
     r'duplicate category ids \[40\]'),
    (lambda d: d['categories'][2].pop('name'),
     r"category id 11 has no 'name'"),
    (lambda d: d.pop('images'), r"missing or not a list: 'images'"),
    (lambda d: d['annotations'].append(dict(d['annotations'][0])),
     r'duplicate annotation ids \[1\] \(1 repeats\)'),
])
def test_malformed_images_and_categories(tmp_path, edit, match):
    path, data = _toy(tmp_path)
    edit(data)
    assert re.search(match, _refused(path, data))
