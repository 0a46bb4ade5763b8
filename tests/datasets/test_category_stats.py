"""The category statistics loader on both file kinds (compact stats JSON and
LVIS/COCO annotation files), the packaged LVIS v1 statistics, bad files, and
tools/extract_category_stats.py."""
import importlib.util
import json
import os.path as osp

import numpy as np
import pytest

from mmlongtail.datasets.category_stats import (dump_category_stats,
                                                frequency_group,
                                                load_category_stats,
                                                packaged_stats_path)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def coco_file():
    """COCO format, no counts; ids unsorted and non-contiguous."""
    anns = []
    # category 7: images 1, 2 (3 instances); category 3: image 2 (1);
    # category 11: none; image 4 has no annotation
    for img, cat in [(1, 7), (1, 7), (2, 7), (2, 3)]:
        anns.append(
            dict(id=len(anns) + 1, image_id=img, category_id=cat,
                 bbox=[0, 0, 1, 1]))
    return dict(
        images=[dict(id=i) for i in (1, 2, 4)],
        annotations=anns,
        categories=[
            dict(id=11, name='k'),
            dict(id=7, name='g'),
            dict(id=3, name='c')
        ])


def test_coco_counts_from_annotations(tmp_path):
    stats = load_category_stats(write(tmp_path, 'coco.json', coco_file()))
    assert stats.cat_ids.tolist() == [3, 7, 11]  # label = rank of the id
    assert stats.names == ('c', 'g', 'k')
    assert stats.image_count.tolist() == [1, 2, 0]
    assert stats.instance_count.tolist() == [1, 3, 0]
    assert stats.num_images == 2  # images with at least one annotation
    assert stats.frequency == ('r', 'r', 'r')
    np.testing.assert_allclose(stats.image_frequency, [0.5, 1.0, 0.0])
    assert stats.num_classes == 3


def test_lvis_file_uses_category_counts(tmp_path):
    data = coco_file()
    for c, (ic, nc, f) in zip(data['categories'],
                              [(1, 9, 'f'), (2, 8, 'c'), (1, 7, 'r')]):
        c.update(image_count=ic, instance_count=nc, frequency=f)
    stats = load_category_stats(write(tmp_path, 'lvis.json', data))
    # the files' fields, not the counts from the annotations; sorted by id:
    # 3 -> (1, 7, r), 7 -> (2, 8, c), 11 -> (1, 9, f)
    assert stats.image_count.tolist() == [1, 2, 1]
    assert stats.instance_count.tolist() == [7, 8, 9]
    assert stats.frequency == ('r', 'c', 'f')
    assert stats.group_mask('c').tolist() == [False, True, False]


def test_frequency_rule():
    assert [frequency_group(n) for n in (0, 10, 11, 100, 101)] == \
        ['r', 'r', 'c', 'c', 'f']


def test_packaged_lvis_v1_and_compact_file():
    stats = load_category_stats('lvis_v1', num_classes=1203)
    assert stats.num_images == 99388
    assert stats.cat_ids.tolist() == sorted(stats.cat_ids.tolist())
    assert stats.names[0] == 'aerosol_can' and stats.image_count[0] == 64
    assert [int(stats.group_mask(g).sum()) for g in 'rcf'] == [337, 461, 405]
    same = load_category_stats(packaged_stats_path('lvis_v1'))
    assert same.instance_count.tolist() == stats.instance_count.tolist()


def test_dict_round_trip_and_passthrough(tmp_path):
    stats = load_category_stats(write(tmp_path, 'coco.json', coco_file()))
    path = str(tmp_path / 'stats.json')
    dump_category_stats(stats, path)
    again = load_category_stats(path)
    assert again.to_dict() == stats.to_dict()
    assert load_category_stats(stats.to_dict()).to_dict() == stats.to_dict()
    assert load_category_stats(stats) is stats


def test_num_classes_mismatch_names_both_numbers(tmp_path):
    path = write(tmp_path, 'coco.json', coco_file())
    with pytest.raises(ValueError, match=r'num_classes=80.*describe 3'):
        load_category_stats(path, num_classes=80, owner='EQLLoss')
    with pytest.raises(ValueError, match=r'EQLLoss has num_classes=1230'):
        load_category_stats('lvis_v1', num_classes=1230, owner='EQLLoss')


@pytest.mark.parametrize('content,error,match', [
    ('{"categories": [', ValueError, 'not valid JSON'),
    ('[1, 2]', ValueError, 'top level'),
    ('{"num_images": 3}', ValueError, "'categories'"),
    ('{"num_images": 3, "categories": []}', ValueError, "'categories'"),
    (json.dumps({'categories': [dict(id=1, image_count=1, instance_count=1,
                                     frequency='r')]}),
     ValueError, 'num_images'),
    (json.dumps({'num_images': 3, 'categories': [dict(id=1,
                                                      image_count=1)]}),
     ValueError, "no 'instance_count'"),
    (json.dumps({'num_images': 3, 'categories': [
        dict(id=1, image_count=1, instance_count=1, frequency='x')]}),
     ValueError, 'r/c/f'),
    (json.dumps({'num_images': 3, 'categories': [
        dict(id=1, image_count=-1, instance_count=1, frequency='r')]}),
     ValueError, 'negative'),
    (json.dumps({'num_images': 3, 'categories': [
        dict(id=1, image_count=5, instance_count=5, frequency='r')]}),
     ValueError, 'exceeds num_images'),
    (json.dumps({'num_images': 3, 'categories': [
        dict(id=1, image_count=1, instance_count=1, frequency='r'),
        dict(id=1, image_count=1, instance_count=1, frequency='r')]}),
     ValueError, 'duplicate category ids'),
    (json.dumps({'images': [], 'annotations': [
        dict(image_id=1, category_id=9)], 'categories': [dict(id=1)]}),
     ValueError, r'unknown category ids \[9\]'),
])
def test_malformed_files(tmp_path, content, error, match):
    path = write(tmp_path, 'bad.json', content)
    with pytest.raises(error, match=match):
        load_category_stats(path)


def test_missing_file_and_bad_type(tmp_path):
    missing = str(tmp_path / 'nope.json')
    with pytest.raises(FileNotFoundError, match='nope.json'):
        load_category_stats(missing)
    with pytest.raises(FileNotFoundError, match='lvis_v1'):
        load_category_stats('lvis_v2')  # lists the packaged names
    with pytest.raises(TypeError, match='int'):
        load_category_stats(3)


def _tool():
    spec = importlib.util.spec_from_file_location(
        'extract_category_stats',
        osp.join(ROOT, 'tools', 'extract_category_stats.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_extract_tool(tmp_path, capsys):
    tool = _tool()
    ann = write(tmp_path, 'coco.json', coco_file())
    out = str(tmp_path / 'sub' / 'stats.json')
    tool.main([ann, out, '--num-classes', '3'])
    assert '3 categories' in capsys.readouterr().out
    got = json.loads(open(out).read())
    assert got == load_category_stats(ann).to_dict()
    assert got['categories'][1] == dict(
        id=7, name='g', frequency='r', image_count=2, instance_count=3)
    with pytest.raises(ValueError, match='num_classes=5.*describe 3'):
        tool.main([ann, out, '--num-classes', '5'])
