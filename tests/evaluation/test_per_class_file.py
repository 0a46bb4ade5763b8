"""The per-class results file: one owner with write and load."""
import json

import numpy as np
import pytest

from mmlongtail.analysis import load_per_class as analysis_load
from mmlongtail.evaluation import per_class_file
from mmlongtail.evaluation.lvis_eval_output import EvalOutput


def _output(ap_a):
    """Two categories; the second has no ground truth (-1)."""
    precision = -np.ones((10, 101, 2, 4))
    precision[:, :, 0] = ap_a
    recall = -np.ones((10, 2, 4))
    recall[:, 0] = 0.5
    return EvalOutput({'AP': ap_a, 'APr': ap_a}, precision, recall, [1, 2])


CATS = [dict(id=1, name='a', frequency='r', image_count=3,
             instance_count=4),
        dict(id=2, name='b', frequency='f')]


def test_write_load_round_trip(tmp_path):
    path = str(tmp_path / 'x.per_class.json')
    per_class_file.write(
        path, categories=CATS, num_gt=np.array([5, 0]), backend='fast',
        ann_file='gt.json', num_images=7, max_dets=300,
        max_dets_per_cat=10000, standard={'bbox': _output(0.25)},
        fixed={'bbox': _output(0.5)}, pooled={'bbox': {'all': 0.4}})
    r = per_class_file.load(path)
    assert analysis_load is per_class_file.load  # one owner
    assert r.protocol == 'standard' and r.iou_types == ['bbox']
    np.testing.assert_array_equal(r.cat_ids, [1, 2])
    np.testing.assert_array_equal(r.num_gt, [5, 0])
    np.testing.assert_array_equal(r.image_count, [3, -1])
    assert r.per_class('bbox', 'AP').tolist()[0] == 0.25
    assert np.isnan(r.per_class('bbox', 'AP')[1])
    assert r.per_class('bbox', 'AP', protocol='fixed')[0] == 0.5
    assert r.per_class('bbox', 'AR')[0] == 0.5
    assert r.protocols['pooled']['bbox']['summary'] == {'all': 0.4}
    with open(path) as f:
        doc = json.load(f)
    assert doc['format'] == per_class_file.FORMAT
    assert doc['metrics']['bbox']['per_class']['AP'] == [0.25, None]
    with pytest.raises(KeyError, match="no 'segm' results"):
        r.per_class('segm')


def test_fixed_only_file_reads_as_fixed(tmp_path):
    path = str(tmp_path / 'f.json')
    per_class_file.write(
        path, categories=CATS, num_gt=np.array([5, 0]), backend='lvis',
        ann_file=None, num_images=7, max_dets=300, max_dets_per_cat=10,
        standard={}, fixed={'segm': _output(0.75)}, pooled={})
    r = per_class_file.load(path)
    assert r.protocol == 'fixed' and r.iou_types == ['segm']
    assert r.per_class('segm')[0] == 0.75


def test_version_1_files_load(tmp_path):
    doc = dict(format='mmlongtail.lvis_per_class/1', backend='fast',
               ann_file=None, num_images=1, max_dets=300,
               categories=[dict(id=1, name='a', frequency='r',
                                image_count=None, instance_count=None,
                                num_gt=1)],
               metrics={'bbox': {'summary': {'AP': 0.5},
                                 'per_class': {'AP': [0.5]}}})
    path = str(tmp_path / 'v1.json')
    with open(path, 'w') as f:
        json.dump(doc, f)
    r = per_class_file.load(path)
    assert r.protocol == 'standard' and r.per_class('bbox')[0] == 0.5
    doc['format'] = 'something/else'
    with open(path, 'w') as f:
        json.dump(doc, f)
    with pytest.raises(ValueError, match='not a mmlongtail.lvis_per_class'):
        per_class_file.load(path)
