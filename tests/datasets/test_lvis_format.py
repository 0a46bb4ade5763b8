"""LVISFormatDataset: classes from the file, malformed files refused (on the
synthetic dataset of the ``tiny_lvis`` fixture)."""
import json
import os.path as osp

import pytest

from mmlongtail.datasets import LVISFormatDataset


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
    with pytest.raises(ValueError, match=r'category ids \[999\]'):
        LVISFormatDataset(ann_file=str(bad), data_prefix=dict(img=''),
                          pipeline=[])
