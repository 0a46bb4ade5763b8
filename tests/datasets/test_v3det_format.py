"""V3Det-format files: category statistics, the extraction tool and
``mmlongtail.V3DetDataset`` (labels in category-id order, as the statistics).

The toy file has V3Det's fields (categories: ``name``, ``name_zh``,
``cat_info``, ``cat_info_gpt``, ``novel``, ``id``, no counts; images:
``file_name`` under ``images/<synset>/``) and lists its categories out of id
order.
"""
import json
import os.path as osp
import runpy

import numpy as np
import pytest

from mmlongtail.datasets import V3DetDataset, load_category_stats
from mmlongtail.datasets.category_stats import dump_category_stats

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# categories listed out of id order: ids 30, 10, 20
CATS = [(30, 'zebra'), (10, 'ashtray'), (20, 'cash machine')]
# (annotation id, image id, category id)
ANNS = [(1, 7, 30), (2, 7, 30), (3, 7, 10), (4, 8, 10), (5, 9, 20),
        (6, 9, 10), (7, 9, 10)]
# image 11 has no annotation


def v3det_dict():
    cats = [
        dict(id=cid, name=name, name_zh='x', cat_info=['d'],
             cat_info_gpt=['g'], novel=cid == 20) for cid, name in CATS
    ]
    images = [
        dict(id=i, file_name=f'images/n0{i}/img{i}.jpg', height=60,
             width=80) for i in (7, 8, 9, 11)
    ]
    anns = [
        dict(id=a, image_id=i, category_id=c, bbox=[4.0, 5.0, 20.0, 30.0],
             area=600.0, iscrowd=0) for a, i, c in ANNS
    ]
    return dict(images=images, annotations=anns, categories=cats)


@pytest.fixture
def v3det_file(tmp_path):
    path = tmp_path / 'v3det_toy.json'
    path.write_text(json.dumps(v3det_dict()))
    return str(path)


def test_stats_of_a_v3det_file_are_counted_by_hand(v3det_file):
    s = load_category_stats(v3det_file, num_classes=3)
    # label order: ids sorted, whatever the file's order
    assert s.cat_ids.tolist() == [10, 20, 30]
    assert s.names == ('ashtray', 'cash machine', 'zebra')
    # id 10: images 7, 8, 9 (4 instances); 20: image 9; 30: image 7 (2)
    assert s.image_count.tolist() == [3, 1, 1]
    assert s.instance_count.tolist() == [4, 1, 2]
    assert s.num_images == 3  # images with annotations
    # no frequency in the file: LVIS's rule on the counted image counts
    assert s.frequency == ('r', 'r', 'r')
    assert s.frequency_from == 'lvis_rule'


def test_lvis_rule_groups_and_round_trip(tmp_path):
    d = v3det_dict()
    # 11 images of category 10, 101 of category 20
    d['images'] = [dict(id=i, file_name=f'{i}.jpg', height=9, width=9)
                   for i in range(1, 120)]
    d['annotations'] = [
        dict(id=i, image_id=i, category_id=10, bbox=[0, 0, 2, 2], area=4)
        for i in range(1, 12)
    ] + [
        dict(id=100 + i, image_id=i, category_id=20, bbox=[0, 0, 2, 2],
             area=4) for i in range(1, 102)
    ]
    s = load_category_stats(d)
    assert s.image_count.tolist() == [11, 101, 0]
    assert s.frequency == ('c', 'f', 'r')
    out = tmp_path / 'stats.json'
    dump_category_stats(s, str(out))
    back = load_category_stats(str(out))
    assert back.frequency_from == 'lvis_rule'
    assert back.frequency == s.frequency
    np.testing.assert_array_equal(back.image_count, s.image_count)
    # LVIS's own groups are the file's
    assert load_category_stats('lvis_v1').frequency_from == 'file'


def test_some_categories_with_frequency_are_refused():
    d = v3det_dict()
    d['categories'][0]['frequency'] = 'f'
    with pytest.raises(ValueError, match="2 of 3 categories have no"):
        load_category_stats(d)


def test_extract_tool_on_a_v3det_file(v3det_file, tmp_path, capsys):
    tool = runpy.run_path(
        osp.join(ROOT, 'tools', 'extract_category_stats.py'))
    out = str(tmp_path / 'sub' / 'stats.json')
    tool['main']([v3det_file, out, '--num-classes', '3'])
    printed = capsys.readouterr().out
    assert 'r/c/f = 3/0/0' in printed and "LVIS's rule" in printed
    with open(out) as f:
        data = json.load(f)
    assert data['frequency_from'] == 'lvis_rule'
    assert [c['image_count'] for c in data['categories']] == [3, 1, 1]
    with pytest.raises(ValueError, match='13204'):
        tool['main']([v3det_file, out, '--num-classes', '13204'])


def _dataset(ann_file, **kw):
    return V3DetDataset(
        data_root=osp.dirname(ann_file),
        ann_file=osp.basename(ann_file),
        data_prefix=dict(img=''),
        pipeline=[],
        **kw)


def test_dataset_labels_follow_category_ids(v3det_file):
    ds = _dataset(v3det_file)
    assert ds.metainfo['classes'] == ('ashtray', 'cash machine', 'zebra')
    stats = load_category_stats(v3det_file)
    assert ds.cat_ids == stats.cat_ids.tolist()
    info = {d['img_id']: d for d in map(ds.get_data_info, range(len(ds)))}
    assert info[7]['img_path'] == osp.join(osp.dirname(v3det_file),
                                           'images/n07/img7.jpg')
    # image 7: two of id 30 (label 2), one of id 10 (label 0)
    assert [i['bbox_label'] for i in info[7]['instances']] == [2, 2, 0]
    assert info[11]['instances'] == []
    # the per-image categories a sampler reads give the statistics' counts
    from mmlongtail.datasets import image_categories
    cats = image_categories(ds)
    np.testing.assert_array_equal(cats.image_count(), stats.image_count)


def test_repeat_factor_sampler_on_the_dataset(v3det_file):
    from mmlongtail.datasets import RepeatFactorSampler
    ds = _dataset(v3det_file, filter_cfg=dict(filter_empty_gt=True))
    sampler = RepeatFactorSampler(ds, repeat_thr=0.5, seed=0)
    # f = images with the category / 3 images: 1, 1/3, 1/3; the rarer two
    # get r = sqrt(0.5 / (1/3)); image 8 has only the common category
    ids = [ds.get_data_info(i)['img_id'] for i in range(len(ds))]
    assert ids == [7, 8, 9]
    r = dict(zip(ids, sampler.repeat_factors.tolist()))
    assert r[8] == 1.0
    assert r[7] == pytest.approx(1.5**0.5) and r[9] == pytest.approx(1.5**0.5)


def test_dataset_refuses_unknown_category(tmp_path):
    d = v3det_dict()
    d['annotations'][3]['category_id'] = 99
    path = tmp_path / 'bad.json'
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r'bad.json.*\(4, 99\)'):
        _dataset(str(path))


def test_v3det_configs_use_the_dataset():
    from mmengine.config import Config
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', 'v3det',
                 'faster_rcnn_r50_fpn_normed_sigmoid_ms_rfs_2x_v3det.py'))
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        assert loader.dataset.type == 'mmlongtail.V3DetDataset'
