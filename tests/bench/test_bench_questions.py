"""The answers section of the benchmark (mmlongtail_bench.benchmark.
questions): AP per IoU threshold from a run's saved detections, per-class
box / mask shifts and the post-hoc held-out curves, against hand-derived
values."""
import json
import os.path as osp
from types import SimpleNamespace

import numpy as np
import pycocotools.mask as mask_util
import pytest

from mmlongtail.evaluation import per_class_file
from mmlongtail_bench.benchmark import questions as q
from mmlongtail_bench.benchmark.methods import Method

H = W = 64
# category 1 frequent, 2 rare, 3 common (no ground truth in val: left out)
CATS = [dict(id=1, name='a', frequency='f'),
        dict(id=2, name='b', frequency='r'),
        dict(id=3, name='c', frequency='c')]


def _write_per_class(path, cats, box=None, mask=None, max_dets=100):
    """A per-class file written by its owner's writer (per-class AP only)."""

    def out(ap):
        return SimpleNamespace(summary={'AP': 0.0},
                               per_class=lambda: {'AP': np.array(ap, float)})

    standard = {} if box is None else {'bbox': out(box), 'segm': out(mask)}
    per_class_file.write(
        str(path), categories=cats, num_gt=np.ones(len(cats), int),
        backend='fast', ann_file=None, num_images=1, max_dets=max_dets,
        max_dets_per_cat=None, standard=standard, fixed={}, pooled={})
    return str(path)


def _rle(x, y, w, h):
    m = np.zeros((H, W), np.uint8, order='F')
    m[y:y + h, x:x + w] = 1
    r = mask_util.encode(m)
    r['counts'] = r['counts'].decode()
    return r


def _val(path):
    anns = [dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 10, 10],
                 area=100, segmentation=_rle(0, 0, 10, 10)),
            dict(id=2, image_id=1, category_id=2, bbox=[30, 30, 20, 20],
                 area=400, segmentation=_rle(30, 30, 20, 20))]
    data = dict(images=[dict(id=1, width=W, height=H, file_name='1.png',
                             neg_category_ids=[],
                             not_exhaustive_category_ids=[])],
                annotations=anns, categories=CATS)
    with open(path, 'w') as f:
        json.dump(data, f)
    return str(path)


def _run(tmp_path, name, box_h, mask_h, key='m', seed=0):
    """A run dir whose class-1 detection covers rows 0..box_h of the
    10 x 10 box (IoU box_h / 10) and whose mask covers mask_h rows; the
    class-2 detection is exact."""
    d = tmp_path / name
    d.mkdir()
    dets = [dict(image_id=1, category_id=1, bbox=[0, 0, 10, box_h],
                 score=0.9, segmentation=_rle(0, 0, 10, mask_h)),
            dict(image_id=1, category_id=2, bbox=[30, 30, 20, 20],
                 score=0.8, segmentation=_rle(30, 30, 20, 20))]
    with open(d / 'lvis.bbox.json', 'w') as f:
        json.dump([{k: v for k, v in x.items() if k != 'segmentation'}
                   for x in dets], f)
    with open(d / 'lvis.segm.json', 'w') as f:
        json.dump(dets, f)
    return dict(spec=dict(key=key, seed=seed, kind='train',
                          work_dir=str(d),
                          val_ann_file=_val(tmp_path / 'val.json')),
                per_class=_write_per_class(d / 'lvis.per_class.json', CATS))


def test_ap_per_iou_threshold_by_hand(tmp_path):
    # box IoU 7.8 / 10 = 0.78: matched at 0.50 ... 0.75 (6 thresholds);
    # mask IoU 0.6: matched at 0.50 ... 0.60 (3)
    rec = _run(tmp_path, 'r0', box_h=7.8, mask_h=6)
    out = q.iou_breakdown(rec)
    box, mask = out['bbox'], out['segm']
    np.testing.assert_allclose(box['f'], [1] * 6 + [0] * 4)
    np.testing.assert_allclose(box['r'], [1] * 10)
    np.testing.assert_allclose(box['all'], [1] * 6 + [0.5] * 4)
    assert np.isnan(box['c']).all()  # no ground truth
    np.testing.assert_allclose(mask['f'], [1] * 3 + [0] * 7)
    np.testing.assert_allclose(mask['all'], [1] * 3 + [0.5] * 7)
    # remembered beside the run, recomputed when the detections change
    assert osp.isfile(osp.join(rec['spec']['work_dir'], q.BREAKDOWN_FILE))
    assert json.dumps(q.iou_breakdown(rec)) == json.dumps(out)
    dets = json.load(open(osp.join(rec['spec']['work_dir'],
                                   'lvis.bbox.json')))
    dets[0]['bbox'] = [0, 0, 10, 9.2]  # IoU 0.92: 9 thresholds
    with open(osp.join(rec['spec']['work_dir'], 'lvis.bbox.json'),
              'w') as f:
        json.dump(dets, f)
    np.testing.assert_allclose(q.iou_breakdown(rec)['bbox']['f'],
                               [1] * 9 + [0])


def test_breakdown_table_needs_the_baseline_and_averages_seeds(tmp_path):
    methods = [Method('baseline_ce', 'Base', 'x.py'),
               Method('eqlv2', 'EQLv2', 'y.py')]
    recs = [_run(tmp_path, 'b0', 7.8, 6, key='baseline_ce', seed=0),
            _run(tmp_path, 'e0', 5.2, 10, key='eqlv2', seed=0),
            _run(tmp_path, 'e1', 7.2, 10, key='eqlv2', seed=1)]
    assert q.breakdown_table(recs[1:], methods) == ('', {})
    table, got = q.breakdown_table(recs, methods)
    rows = {tuple(c.strip() for c in line.split('|')[1:3]):
            [float(v) for v in line.split('|')[3:-1]]
            for line in table.splitlines()[2:]}
    # EQLv2 box: seed 0 IoU 0.52 (1 threshold), seed 1 0.72 (5): mean
    # class-1 AP at 0.5 / 0.6 / 0.7 / 0.8 / 0.9 = 1, 0.5, 0.5, 0, 0; the
    # rare class is exact: all = (1 + that) / 2
    assert rows[('EQLv2', 'box')] == [100.0, 75.0, 75.0, 50.0, 50.0,
                                      65.0, 100.0, 100.0]
    # exact masks
    assert rows[('EQLv2', 'mask')][:6] == [100.0] * 6
    assert rows[('Base', 'box')][:6] == [100.0, 100.0, 100.0, 50.0, 50.0,
                                         80.0]
    assert len(got['eqlv2']) == 2


def _per_class_run(tmp_path, name, key, seed, box, mask):
    d = tmp_path / name
    d.mkdir()
    cats = [dict(id=i + 1, frequency=f) for i, f in enumerate('rcff')]
    return dict(spec=dict(key=key, seed=seed, kind='train',
                          work_dir=str(d)),
                per_class=_write_per_class(d / 'lvis.per_class.json', cats,
                                           box, mask))


def test_per_class_shift_counts_by_band(tmp_path):
    base = [_per_class_run(tmp_path, f'b{s}', 'baseline_ce', s,
                           [0.2, 0.3, 0.4, 0.5], [0.2, 0.3, 0.4, 0.5])
            for s in (0, 1)]
    # seed means of the method: box 0.1, 0.35, 0.3, 0.6; mask 0.3, 0.25,
    # 0.5, 0.6 (the f class 3 loses box and gains mask, as the r class)
    bs = [_per_class_run(tmp_path, 's0', 'balanced_softmax', 0,
                         [0.0, 0.3, 0.2, 0.6], [0.2, 0.2, 0.5, 0.7]),
          _per_class_run(tmp_path, 's1', 'balanced_softmax', 1,
                         [0.2, 0.4, 0.4, 0.6], [0.4, 0.3, 0.5, 0.5])]
    shift = q.per_class_shift(base + bs)
    np.testing.assert_allclose(shift['bbox'], [-0.1, 0.05, -0.1, 0.1])
    np.testing.assert_allclose(shift['segm'], [0.1, -0.05, 0.1, 0.1])
    assert shift['counts']['r']['box down, mask up'] == 1
    assert shift['counts']['c']['box up, mask down'] == 1
    assert shift['counts']['f'] == {'box down, mask up': 1, 'both down': 0,
                                    'both up': 1, 'box up, mask down': 0,
                                    'classes': 2}
    assert shift['counts']['all']['box down, mask up'] == 2
    md = q.shift_markdown(shift, 'BS', 'CE')
    assert '| f | 2 | 1 | 0 | 1 | 0 | +0.0 | +10.0 |' in md
    assert q.per_class_shift(base) is None


def test_posthoc_curves_are_the_recorded_heldout_numbers():
    def rec(key, seed, aps, chosen):
        return dict(spec=dict(key=key, seed=seed, kind='posthoc'),
                    selection=dict(
                        param='LogitAdjustment.tau', values=[0.5, 1.0],
                        chosen=chosen,
                        heldout=[{'lvis/bbox_AP': a, 'lvis/bbox_APr': a / 2}
                                 for a in aps]))

    curves = q.posthoc_curves([rec('logit_adjustment', 1, [0.2, 0.3], 1.0),
                               rec('logit_adjustment', 0, [0.1, 0.4], 1.0),
                               rec('crt', 0, [0.9, 0.9], 0.5)])
    assert list(curves) == ['logit_adjustment']
    assert curves['logit_adjustment']['seeds'][0]['AP'] == [0.1, 0.4]
    md = q.curves_markdown(curves, {'logit_adjustment': 'LA'})
    assert '| held-out box AP | 15.0 | 35.0 |' in md
    assert '| held-out box AP_r | 7.5 | 17.5 |' in md
    assert 'Chosen: 1 (seed 0), 1 (seed 1).' in md


def test_section_and_plot(tmp_path):
    methods = [Method('baseline_ce', 'Base', 'x.py'),
               Method('balanced_softmax', 'BS', 'y.py')]
    recs = [_run(tmp_path, 'b0', 7.8, 6, key='baseline_ce'),
            _run(tmp_path, 's0', 5.2, 10, key='balanced_softmax')]
    for r, box, mask in ((recs[0], [0.6, 1.0, np.nan], [0.3, 1.0, np.nan]),
                         (recs[1], [0.1, 1.0, np.nan], [1.0, 1.0, np.nan])):
        _write_per_class(r['per_class'], CATS, box, mask)
    text, path = q.questions_section(recs, methods,
                                     str(tmp_path / 'questions.png'))
    assert '**Boxes and masks per IoU threshold**' in text
    assert '| f | 1 | 1 | 0 | 0 | 0 | -50.0 | +70.0 |' in text
    # balanced softmax's class-1 mask (IoU 1) matches, its box (0.52) too
    assert '| BS | f | 1 | 1 | 0% | 0.52 | 1.00 | 0.52 |' in text
    assert osp.getsize(path) > 10_000
    assert q.questions_section([], methods, 'x.png') == ('', None)


@pytest.mark.parametrize('band, expected', [(None, 0.75), ('r', 1.0),
                                            ('f', 0.5)])
def test_ap_per_iou_leaves_out_classes_without_ground_truth(band, expected):
    # (T=1, R=2, K=3, A=1): class 2 has no ground truth (-1)
    p = np.array([[0.5, 1.0, -1], [0.5, 1.0, -1]]).reshape(1, 2, 3, 1)
    got = q.ap_per_iou(p, ['f', 'r', 'c'], band)
    np.testing.assert_allclose(got, [expected])


def test_mask_matched_boxes_by_hand(tmp_path):
    """The frequent object's mask matches (IoU 0.6) while the same
    detection's box covers 4 of its 10 rows (IoU 0.4, area 0.4 of the
    object's); a higher-scoring detection whose mask misses is passed
    over; the rare object is exact."""
    rec = _run(tmp_path, 'r0', box_h=4, mask_h=6, key='balanced_softmax')
    path = osp.join(rec['spec']['work_dir'], 'lvis.segm.json')
    dets = json.load(open(path))
    dets.append(dict(image_id=1, category_id=1, bbox=[0, 0, 10, 10],
                     score=0.95, segmentation=_rle(40, 0, 10, 10)))
    with open(path, 'w') as f:
        json.dump(dets, f)
    got = q.mask_matched_boxes(rec)
    assert got['f'] == dict(objects=1, found=1, box_below_half=1.0,
                            box_iou=pytest.approx(0.4),
                            mask_iou=pytest.approx(0.6),
                            area_ratio=pytest.approx(0.4))
    assert got['r'] == dict(objects=1, found=1, box_below_half=0.0,
                            box_iou=1.0, mask_iou=1.0, area_ratio=1.0)
    assert got['c'] == dict(objects=0, found=0, box_below_half=None,
                            box_iou=None, mask_iou=None, area_ratio=None)
    assert got['all']['found'] == 2 and got['all']['box_below_half'] == 0.5
    assert got['all']['area_ratio'] == pytest.approx(0.7)
    # remembered; a mask that no longer matches is computed again
    assert osp.isfile(osp.join(rec['spec']['work_dir'], q.MATCHED_FILE))
    dets[0]['segmentation'] = _rle(0, 0, 10, 4)  # mask IoU 0.4
    with open(path, 'w') as f:
        json.dump(dets, f)
    again = q.mask_matched_boxes(rec)
    assert again['f']['found'] == 0 and again['f']['box_iou'] is None
    # the table reads both rows' seeds; boxes only: no row
    base = _run(tmp_path, 'b0', box_h=10, mask_h=10, key='baseline_ce')
    table = q.matched_markdown([base, rec], {'baseline_ce': 'Base',
                                             'balanced_softmax': 'BS'})
    assert '| Base | f | 1 | 1 | 0% | 1.00 | 1.00 | 1.00 |' in table
    assert '| BS | r | 1 | 1 | 0% | 1.00 | 1.00 | 1.00 |' in table
    assert '| BS | f | 1 | 0 | - | - | - | - |' in table
    import os
    os.remove(path)
    assert q.mask_matched_boxes(rec) is None
    assert q.matched_markdown([base, rec], {}) == ''
