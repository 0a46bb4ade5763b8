"""Tests of mmlongtail.LVISMetric: agreement with lvis-api run directly,
hand-derived federated/max-dets cases, robustness and multi-rank gathering."""
import json
import logging
import os.path as osp

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from tiny_federated import pred_rows as _pred
from tiny_federated import tiny_federated_gt, tiny_federated_predictions

import mmlongtail  # noqa: F401  (registers)
from mmlongtail.compat import patch_lvis_numpy
from mmlongtail.evaluation import LVISMetric, per_class_file
from mmlongtail.evaluation.lvis_metric import check_label_range
from mmlongtail.registry import METRICS
from mmlongtail_bench.synthetic import make_lvis_gt, make_predictions

AP_ITEMS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc', 'APf')


# ---------------------------------------------------------------- helpers
def _samples(preds, gt, with_masks=False):
    sizes = {im['id']: (im['height'], im['width']) for im in gt['images']}
    out = []
    for p in preds:
        inst = dict(
            bboxes=torch.from_numpy(p['bboxes']),
            scores=torch.from_numpy(p['scores']),
            labels=torch.from_numpy(p['labels']))
        if with_masks:
            inst['masks'] = torch.from_numpy(p['masks'])
        out.append(
            dict(
                img_id=p['img_id'],
                ori_shape=sizes[p['img_id']],
                pred_instances=inst))
    return out


def _classes(gt):
    return [c['name'] for c in sorted(gt['categories'], key=lambda c: c['id'])]


def _run_metric(ann_file, gt, samples, backend, metric='bbox', **kw):
    m = METRICS.build(
        dict(
            type='mmlongtail.LVISMetric',
            ann_file=ann_file,
            metric=metric,
            backend=backend,
            **kw))
    m.dataset_meta = dict(classes=_classes(gt))
    for i in range(0, len(samples), 4):
        m.process({}, samples[i:i + 4])
    return m.evaluate(len(samples))


def _reference_lvis(ann_file, gt, preds, iou_type):
    """lvis-api run directly, with a per-detection reference conversion."""
    patch_lvis_numpy()
    from lvis import LVIS, LVISEval, LVISResults
    cat_ids = sorted(c['id'] for c in gt['categories'])
    anns = []
    for p in preds:
        for k in range(len(p['scores'])):
            x1, y1, x2, y2 = (float(v) for v in p['bboxes'][k])
            ann = dict(
                image_id=p['img_id'],
                category_id=cat_ids[int(p['labels'][k])],
                bbox=[x1, y1, x2 - x1, y2 - y1],
                score=float(p['scores'][k]))
            if iou_type == 'segm':
                rle = mask_util.encode(
                    np.asfortranarray(p['masks'][k].astype(np.uint8)))
                rle['counts'] = rle['counts'].decode()
                ann['segmentation'] = rle
            anns.append(ann)
    lvis_gt = LVIS(ann_file)
    ev = LVISEval(lvis_gt, LVISResults(lvis_gt, anns, max_dets=300),
                  iou_type)
    ev.run()
    return ev.get_results()


def _write(tmp_path, gt, name='gt.json'):
    path = str(tmp_path / name)
    with open(path, 'w') as f:
        json.dump(gt, f)
    return path


class _Capture(logging.Handler):

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _capture_warnings():
    from mmengine.logging import MMLogger
    h = _Capture()
    MMLogger.get_current_instance().addHandler(h)
    return h


def _release(h):
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().removeHandler(h)


# ---------------------------------------------- agreement with lvis-api
@pytest.fixture(scope='module')
def bbox_case(tmp_path_factory):
    # 60 LVIS categories (all three groups), federated fields, a few empty
    # images, and images with more than 300 detections.
    gt = make_lvis_gt(
        40, 'lvis_v1', num_classes=60, seed=3, empty_image_prob=0.1,
        mean_categories=4, category_power=0.2)
    preds = make_predictions(gt, dets_per_image=310, seed=4)
    assert any(len(p['scores']) > 300 for p in preds)
    assert any(im['not_exhaustive_category_ids'] for im in gt['images'])
    path = _write(tmp_path_factory.mktemp('bbox'), gt)
    return gt, preds, path


@pytest.fixture(scope='module')
def segm_case(tmp_path_factory):
    gt = make_lvis_gt(
        24, 'lvis_v1', num_classes=45, seed=5, with_masks=True,
        image_size=(120, 160), empty_image_prob=0.1, category_power=0.2)
    preds = make_predictions(gt, dets_per_image=40, seed=6, with_masks=True)
    path = _write(tmp_path_factory.mktemp('segm'), gt)
    return gt, preds, path


@pytest.mark.parametrize('backend', ['fast', 'lvis'])
def test_bbox_agrees_with_lvis_api(bbox_case, backend):
    gt, preds, path = bbox_case
    ref = _reference_lvis(path, gt, preds, 'bbox')
    res = _run_metric(path, gt, _samples(preds, gt), backend)
    assert set(res) == {f'lvis/bbox_{k}' for k in AP_ITEMS}
    for k in AP_ITEMS:
        assert res[f'lvis/bbox_{k}'] == pytest.approx(ref[k], abs=6e-4), k
    # the case is not degenerate
    assert 0.05 < ref['AP'] < 0.95 and ref['APr'] > -1 and ref['APc'] > -1


@pytest.mark.parametrize('backend', ['fast', 'lvis'])
def test_segm_agrees_with_lvis_api(segm_case, backend):
    gt, preds, path = segm_case
    ref = _reference_lvis(path, gt, preds, 'segm')
    res = _run_metric(
        path, gt, _samples(preds, gt, with_masks=True), backend,
        metric=['bbox', 'segm'])
    for k in AP_ITEMS:
        assert res[f'lvis/segm_{k}'] == pytest.approx(ref[k], abs=6e-4), k
    assert ref['AP'] > 0.01
    # bbox and segm differ (masks are not boxes)
    assert res['lvis/bbox_AP'] != res['lvis/segm_AP']


def test_backends_agree_per_class(bbox_case, tmp_path):
    gt, preds, path = bbox_case
    docs = {}
    for b in ('fast', 'lvis'):
        prefix = str(tmp_path / b)
        _run_metric(path, gt, _samples(preds, gt), b, outfile_prefix=prefix)
        with open(prefix + '.per_class.json') as f:
            docs[b] = json.load(f)
    for key in ('AP', 'AP50', 'AR'):
        a = np.array(docs['fast']['metrics']['bbox']['per_class'][key],
                     dtype=float)
        b = np.array(docs['lvis']['metrics']['bbox']['per_class'][key],
                     dtype=float)
        np.testing.assert_allclose(a, b, atol=1e-9, equal_nan=True)
        assert np.isfinite(a).sum() > 20
    # categories without GT are null, the others have num_gt > 0
    cats = docs['fast']['categories']
    ap = docs['fast']['metrics']['bbox']['per_class']['AP']
    assert all((v is None) == (c['num_gt'] == 0) for c, v in zip(cats, ap))


# ------------------------------------------------ hand-derived federated
@pytest.mark.parametrize('backend', ['fast', 'lvis'])
def test_federated_rules_hand_derived(tmp_path, backend):
    gt = tiny_federated_gt()
    path = _write(tmp_path, gt)
    preds = tiny_federated_predictions()
    res = _run_metric(
        path, gt, _samples(preds, gt), backend,
        metric_items=list(AP_ITEMS) + ['AR@300'],
        outfile_prefix=str(tmp_path / 'r'))
    # a: FP .99 (img 4, negative), FP .95, TP .90 -> precision 1/3 at
    #    recall 1, at every IoU threshold -> AP 1/3.
    # b: FP .70 (img 4, negative), TP .50 -> AP 1/2.
    # c: the unmatched .99 box is ignored (not exhaustive) -> AP 1.
    # d: no ground truth anywhere -> excluded (its detection in image 1 is
    #    dropped, the one in image 4 is not even a negative there).
    # e: the exact box is the 301st by score -> cut -> AP 0, AR 0.
    ap = dict(a=1 / 3, b=1 / 2, c=1.0, e=0.0)
    assert res['lvis/bbox_AP'] == pytest.approx(
        round(np.mean(list(ap.values())), 3))
    assert res['lvis/bbox_APr'] == pytest.approx(round(1 / 3, 3))
    assert res['lvis/bbox_APc'] == pytest.approx(0.5)
    assert res['lvis/bbox_APf'] == pytest.approx(0.5)
    assert res['lvis/bbox_AR@300'] == pytest.approx(0.75)
    with open(tmp_path / 'r.per_class.json') as f:
        doc = json.load(f)
    per = doc['metrics']['bbox']['per_class']['AP']
    assert per[3] is None
    np.testing.assert_allclose([per[i] for i in (0, 1, 2, 4)],
                               [1 / 3, 1 / 2, 1.0, 0.0], atol=1e-12)
    # the results file keeps 300 detections for image 3
    with open(tmp_path / 'r.bbox.json') as f:
        dets = json.load(f)
    assert sum(d['image_id'] == 3 for d in dets) == 300
    assert min(d['score'] for d in dets if d['image_id'] == 3) > 0.5


def test_max_dets_is_configurable(tmp_path):
    gt = tiny_federated_gt()
    path = _write(tmp_path, gt)
    res = _run_metric(
        path, gt, _samples(tiny_federated_predictions(), gt), 'fast',
        max_dets=301,
        metric_items=['APf'])
    # e keeps its TP at rank 301: precision 1/301 at recall 1
    assert res['lvis/bbox_APf'] == pytest.approx(round((1 + 1 / 301) / 2, 3))


# ------------------------------------------------------------ robustness
@pytest.mark.parametrize('backend', ['fast', 'lvis'])
def test_no_predictions_gives_zeros_and_warning(tmp_path, backend):
    gt = tiny_federated_gt()
    path = _write(tmp_path, gt)
    empty = [
        _pred(im['id'], np.zeros((0, 6))) for im in gt['images']
    ]
    h = _capture_warnings()
    try:
        res = _run_metric(path, gt, _samples(empty, gt), backend,
                          metric=['bbox'])
    finally:
        _release(h)
    assert res == {f'lvis/bbox_{k}': 0.0 for k in AP_ITEMS}
    assert any('no bbox predictions' in m for m in h.messages)


def test_label_outside_classes_is_a_clear_error(tmp_path):
    gt = tiny_federated_gt()
    path = _write(tmp_path, gt)
    bad = [_pred(2, [[5, 5, 40, 40, .5, 5]])]  # 5 classes: labels 0..4
    m = LVISMetric(ann_file=path)
    with pytest.raises(ValueError, match=r'labels \[5\].*image 2.*5 '):
        m.process({}, _samples(bad, gt))
    # also when the check can only happen at evaluation (no dataset_meta,
    # ground truth from samples)
    m = LVISMetric(category_stats={'num_images': 10, 'categories': [
        dict(id=1, name='a', frequency='r', image_count=1,
             instance_count=1)]})
    s = _samples([_pred(7, [[1, 1, 5, 5, .5, 3]])],
                 {'images': [dict(id=7, height=100, width=100)]})
    s[0]['instances'] = []
    m.process({}, s)
    with pytest.raises(ValueError, match=r'labels \[3\].*image 7.*1 '):
        m.evaluate(1)


def test_metric_reports_the_files_it_wrote(tmp_path):
    """What the metric wrote, named by the metric (and the per-class path
    by its owner), so callers never rebuild a file name."""
    gt = tiny_federated_gt()
    path = _write(tmp_path, gt)
    prefix = str(tmp_path / 'out' / 'lvis')
    m = LVISMetric(ann_file=path, protocol=['standard', 'fixed'],
                   outfile_prefix=prefix)
    assert m.files_written == {}
    m.process({}, _samples(tiny_federated_predictions(), gt))
    m.evaluate(3)
    assert m.files_written == {
        'bbox': prefix + '.bbox.json',
        'bbox.fixed': prefix + '.bbox.fixed.json',
        'per_class': per_class_file.path_for(prefix),
    }
    assert per_class_file.path_for(prefix) == prefix + '.per_class.json'
    assert all(osp.isfile(p) for p in m.files_written.values())
    assert m.ground_truth.source == path


def test_one_label_range_check_names_range_and_label():
    """Predictions at collection and at evaluation, and ground truth from
    the samples, go through one check: it names the range, the offending
    labels and the first one's image."""
    check_label_range(np.array([0, 4]), 5, 3, 'prediction', 'x')  # valid
    with pytest.raises(ValueError, match=(
            r'^prediction labels \[-1, 5\] of image 8 \(the first of '
            r'several\) are outside '
            r'the 5 classes of the file a.json: labels must lie in \[0, 5\)\. '
            r'Fix it\.$')):
        check_label_range(np.array([1, 5, -1, 5]), 5, [7, 8, 9, 9],
                          'prediction', 'the file a.json', 'Fix it.')
    m = LVISMetric(category_stats={'num_images': 10, 'categories': [
        dict(id=1, name='a', frequency='r', image_count=1,
             instance_count=1)]})
    s = _samples([_pred(7, [[1, 1, 5, 5, .5, 0]])],
                 {'images': [dict(id=7, height=100, width=100)]})
    s[0]['instances'] = [dict(bbox=[1, 1, 5, 5], bbox_label=0),
                         dict(bbox=[1, 1, 5, 5], bbox_label=2)]
    m.process({}, s)
    with pytest.raises(ValueError, match=(
            r'^ground-truth labels \[2\] of image 7 are outside '
            r'the 1 classes of the category statistics .*: labels must lie '
            r'in \[0, 1\)\.$')):
        m.evaluate(1)


def test_unknown_image_and_bad_arguments(tmp_path):
    gt = tiny_federated_gt()
    path = _write(tmp_path, gt)
    m = LVISMetric(ann_file=path)
    m.dataset_meta = dict(classes=['a', 'b', 'c'])
    m.process({}, _samples(tiny_federated_predictions()[1:2], gt))
    with pytest.raises(ValueError, match='3 classes.*5 categories'):
        m.evaluate(1)
    m = LVISMetric(ann_file=path)
    # refused as it arrives, not after the whole test set
    with pytest.raises(ValueError, match='image id 99, which is not in'):
        m.process({}, _samples([_pred(99, [[1, 1, 5, 5, .5, 0]])],
                               {'images': [dict(id=99, height=9, width=9)]}))
    with pytest.raises(ValueError, match='backend'):
        LVISMetric(ann_file=path, backend='coco')
    with pytest.raises(KeyError, match='proposal'):
        LVISMetric(ann_file=path, metric='proposal')
    with pytest.raises(ValueError, match='outfile_prefix'):
        LVISMetric(ann_file=path, format_only=True)
    with pytest.raises(KeyError, match='masks'):
        LVISMetric(ann_file=path, metric='segm').process(
            {}, _samples(tiny_federated_predictions()[:1], gt))


def test_format_only_and_results_file_loads_in_lvis(tmp_path):
    gt = tiny_federated_gt()
    path = _write(tmp_path, gt)
    prefix = str(tmp_path / 'sub' / 'res')
    m = LVISMetric(ann_file=path, format_only=True, outfile_prefix=prefix)
    for s in _samples(tiny_federated_predictions(), gt):
        m.process({}, [s])
    assert m.evaluate(4) == {}
    patch_lvis_numpy()
    from lvis import LVIS, LVISResults
    res = LVISResults(LVIS(path), prefix + '.bbox.json')
    assert len(res.anns) == 5 + 1 + 300 + 3
    assert not osp.exists(prefix + '.per_class.json')


def test_images_without_annotations_and_gt_from_samples(tmp_path):
    """Ground truth built from data samples (no ann_file) equals the same
    ground truth read from a file; images without instances are kept."""
    gt = make_lvis_gt(12, 'lvis_v1', num_classes=30, seed=8,
                      empty_image_prob=0.3)
    for im in gt['images']:  # data samples carry no federated fields
        im['neg_category_ids'] = []
        im['not_exhaustive_category_ids'] = []
    preds = make_predictions(gt, 30, seed=9)
    by_img = {}
    for a in gt['annotations']:
        by_img.setdefault(a['image_id'], []).append(a)
    n_empty = sum(im['id'] not in by_img for im in gt['images'])
    assert n_empty > 0
    samples = _samples(preds, gt)
    for s in samples:
        s['instances'] = [
            dict(
                bbox=[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                     a['bbox'][1] + a['bbox'][3]],
                bbox_label=sorted(c['id'] for c in gt['categories']).index(
                    a['category_id']),
                ignore_flag=0) for a in by_img.get(s['img_id'], [])
        ]
    stats = dict(
        num_images=max(c['image_count'] for c in gt['categories']),
        categories=gt['categories'])
    from_samples = _run_metric(None, gt, samples, 'fast',
                               category_stats=stats)
    path = _write(tmp_path, gt)
    from_file = _run_metric(path, gt, samples, 'lvis')
    assert from_samples == from_file
    with pytest.raises(ValueError, match='category_stats'):
        _run_metric(None, gt, samples, 'fast')


def test_classwise_table(bbox_case):
    gt, preds, path = bbox_case
    res = _run_metric(path, gt, _samples(preds[:10], gt), 'fast',
                      classwise=True)
    names = _classes(gt)
    per = [res[f'lvis/bbox_{n}_precision'] for n in names]
    assert len(per) == 60
    finite = [v for v in per if not np.isnan(v)]
    assert finite and all(0 <= v <= 1 for v in finite)


# ------------------------------------------------------- multiple ranks
def test_results_from_shards_match_single_process(bbox_case):
    """What mmengine gathers from several ranks (their ``results`` lists,
    concatenated) gives the single-process metrics, and entries pickle."""
    import pickle
    gt, preds, path = bbox_case
    samples = _samples(preds, gt)
    single = _run_metric(path, gt, samples, 'fast')
    shards = []
    for r in range(3):
        m = LVISMetric(ann_file=path)
        m.process({}, samples[r::3])
        shards.append(m.results)
    gathered = pickle.loads(pickle.dumps([e for s in shards for e in s]))
    m = LVISMetric(ann_file=path)
    out = {f'lvis/{k}': v for k, v in m.compute_metrics(gathered).items()}
    assert out == single


@pytest.mark.parametrize('backend', ['fast', 'lvis'])
def test_only_unevaluated_detections(tmp_path, backend):
    """Detections that LVIS drops (category neither annotated nor negative
    in their image) leave every category with ground truth at AP 0."""
    gt = tiny_federated_gt()
    path = _write(tmp_path, gt)
    preds = [_pred(1, [[10, 10, 20, 20, .9, 1]]),  # b: not pos/neg in img 1
             _pred(3, [[20, 20, 50, 50, .9, 3]])]  # d: not pos/neg in img 3
    res = _run_metric(path, gt, _samples(preds, gt), backend)
    assert res == {f'lvis/bbox_{k}': (-1.0 if k == 'APl' else 0.0)
                   for k in AP_ITEMS}


def test_frequency_from_image_count_or_stats(tmp_path):
    """Categories without 'frequency' get LVIS's rule on their image_count;
    with neither, category_stats supplies it, else a clear error."""
    gt = tiny_federated_gt()
    ref = _run_metric(_write(tmp_path, gt, 'a.json'), gt,
                      _samples(tiny_federated_predictions(), gt), 'fast')
    for c in gt['categories']:  # counts give the same groups (3/40/500...)
        del c['frequency']
    res = _run_metric(_write(tmp_path, gt, 'b.json'), gt,
                      _samples(tiny_federated_predictions(), gt), 'fast')
    assert res == ref
    for c in gt['categories']:
        del c['image_count']
    path = _write(tmp_path, gt, 'c.json')
    with pytest.raises(ValueError, match="no 'frequency'.*category_stats"):
        LVISMetric(ann_file=path)
    stats = tiny_federated_gt()
    stats['num_images'] = 500
    del stats['images'], stats['annotations']
    res = _run_metric(path, gt, _samples(tiny_federated_predictions(), gt),
                      'lvis', category_stats=stats)
    assert res == ref
