"""LVISMetric's large-vocabulary protocols: fixed AP, pooled AP, boundary
IoU. Hand-derived cases, the installed lvis-api where the protocols
coincide, the two backends against each other, several ranks."""
import json
import os
import os.path as osp

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from dist_utils import spawn_gloo
from tiny_federated import pred_rows as _pred
from tiny_federated import tiny_federated_gt, tiny_federated_predictions

import mmlongtail  # noqa: F401  (registers)
from mmlongtail.compat import patch_lvis_numpy
from mmlongtail.evaluation import LVISMetric
from mmlongtail.evaluation.lvis_api_eval import mask_boundary
from mmlongtail.evaluation.lvis_metric import protocol_item
from mmlongtail.evaluation.per_class_file import load as load_per_class
from mmlongtail_bench.synthetic import make_lvis_gt, make_predictions

BACKENDS = ['fast', 'lvis']


def _samples(preds, gt, with_masks=False):
    sizes = {im['id']: (im['height'], im['width']) for im in gt['images']}
    out = []
    for p in preds:
        inst = {k: torch.from_numpy(v) for k, v in p.items()
                if k in ('bboxes', 'scores', 'labels')
                or (with_masks and k == 'masks')}
        out.append(dict(img_id=p['img_id'], ori_shape=sizes[p['img_id']],
                        pred_instances=inst))
    return out


def _run(path, gt, samples, **kw):
    m = LVISMetric(ann_file=path, **kw)
    m.dataset_meta = dict(
        classes=[c['name'] for c in sorted(gt['categories'],
                                           key=lambda c: c['id'])])
    for i in range(0, len(samples), 3):
        m.process({}, samples[i:i + 3])
    return m.evaluate(len(samples))


def _write(tmp_path, gt, name='gt.json'):
    path = str(tmp_path / name)
    with open(path, 'w') as f:
        json.dump(gt, f)
    return path


def _two_class_gt():
    """Two 100x100 images; a (rare) annotated in image 1 and verified absent
    in image 2, b (frequent) the other way round; c (common) nowhere."""
    cats = [dict(id=1, name='a', frequency='r'),
            dict(id=2, name='b', frequency='f'),
            dict(id=3, name='c', frequency='c')]
    images = [dict(id=1, height=100, width=100, neg_category_ids=[2],
                   not_exhaustive_category_ids=[]),
              dict(id=2, height=100, width=100, neg_category_ids=[1],
                   not_exhaustive_category_ids=[])]
    anns = [dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 30, 30],
                 area=900),
            dict(id=2, image_id=2, category_id=2, bbox=[50, 50, 40, 40],
                 area=1600)]
    return dict(images=images, annotations=anns, categories=cats)


def test_protocol_item_names():
    assert [protocol_item(k, 'fixed') for k in
            ('AP', 'AP50', 'APs', 'APr', 'AR@300', 'ARl@300')] == [
                'APfixed', 'APfixed50', 'APfixed_s', 'APfixed_r', 'ARfixed',
                'ARfixed_l']
    assert protocol_item('APc', 'pooled') == 'APpool_c'
    assert protocol_item('APc', 'standard') == 'APc'


# ------------------------------------------------------------ fixed AP
@pytest.mark.parametrize('backend', BACKENDS)
def test_fixed_cuts_a_class_with_more_than_k(tmp_path, backend):
    """Class a has three detections: FP .9 (image 1, far from the GT), FP .8
    (image 2, where a is verified absent), TP .5 (image 1).

    * standard (300 per image) and fixed with k >= 3 keep all three: the TP
      comes third, precision 1/3 at recall 1 at every IoU threshold:
      AP_a = 1/3;
    * fixed with k = 2 keeps the .9 and .8 false positives only: AP_a = 0.
    b: one TP .7, AP_b = 1 throughout. c has no ground truth: excluded.
    """
    gt = _two_class_gt()
    path = _write(tmp_path, gt)
    preds = [_pred(1, [[60, 60, 20, 20, .9, 0], [10, 10, 30, 30, .5, 0]]),
             _pred(2, [[60, 60, 20, 20, .8, 0], [50, 50, 40, 40, .7, 1]])]
    s = _samples(preds, gt)
    std = _run(path, gt, s, backend=backend, metric_items=['AP', 'APr'])
    assert std == {'lvis/bbox_AP': round((1 / 3 + 1) / 2, 3),
                   'lvis/bbox_APr': round(1 / 3, 3)}
    items = ['AP', 'APr', 'APc', 'APf']
    big = _run(path, gt, s, backend=backend, protocol='fixed',
               max_dets_per_cat=3, metric_items=items)
    assert big == {'lvis/bbox_APfixed': round((1 / 3 + 1) / 2, 3),
                   'lvis/bbox_APfixed_r': round(1 / 3, 3),
                   'lvis/bbox_APfixed_c': -1.0,
                   'lvis/bbox_APfixed_f': 1.0}
    cut = _run(path, gt, s, backend=backend, protocol='fixed',
               max_dets_per_cat=2, metric_items=items)
    assert cut == {'lvis/bbox_APfixed': 0.5, 'lvis/bbox_APfixed_r': 0.0,
                   'lvis/bbox_APfixed_c': -1.0, 'lvis/bbox_APfixed_f': 1.0}


@pytest.mark.parametrize('backend', BACKENDS)
def test_fixed_has_no_per_image_cap(tmp_path, backend):
    """The hand-derived federated case of test_lvis_metric: class e's exact
    box is the 301st of its image, cut by the standard protocol (AP_e = 0)
    but kept by the fixed one: precision 1/301 at recall 1, AP_e = 1/301."""
    gt = tiny_federated_gt()
    path = _write(tmp_path, gt)
    s = _samples(tiny_federated_predictions(), gt)
    res = _run(path, gt, s, backend=backend, protocol=['standard', 'fixed'],
               metric_items=['APf'])
    assert res['lvis/bbox_APf'] == pytest.approx(0.5)  # (1 + 0) / 2
    assert res['lvis/bbox_APfixed_f'] == pytest.approx(
        round((1 + 1 / 301) / 2, 3))


@pytest.fixture(scope='module')
def bbox_case(tmp_path_factory):
    gt = make_lvis_gt(30, 'lvis_v1', num_classes=50, seed=13,
                      empty_image_prob=0.1, mean_categories=4,
                      category_power=0.2)
    preds = make_predictions(gt, dets_per_image=320, seed=14)
    assert any(len(p['scores']) > 300 for p in preds)
    path = _write(tmp_path_factory.mktemp('protocols'), gt)
    return gt, preds, path


def _lvis_api_no_cap(path, gt, preds):
    """lvis-api 0.5.3 run directly without a per-image cap
    (``LVISResults(max_dets=-1)``, ``params.max_dets = -1``): the fixed
    protocol when no category has more than k detections."""
    patch_lvis_numpy()
    from lvis import LVIS, LVISEval, LVISResults
    cat_ids = sorted(c['id'] for c in gt['categories'])
    anns = []
    for p in preds:
        for k in range(len(p['scores'])):
            x1, y1, x2, y2 = (float(v) for v in p['bboxes'][k])
            anns.append(dict(image_id=p['img_id'],
                             category_id=cat_ids[int(p['labels'][k])],
                             bbox=[x1, y1, x2 - x1, y2 - y1],
                             score=float(p['scores'][k])))
    lvis_gt = LVIS(path)
    ev = LVISEval(lvis_gt, LVISResults(lvis_gt, anns, max_dets=-1), 'bbox')
    ev.params.max_dets = -1
    ev.run()
    return ev.get_results()


@pytest.mark.parametrize('backend', BACKENDS)
def test_fixed_with_large_k_equals_lvis_api_without_cap(bbox_case, backend,
                                                        tmp_path):
    gt, preds, path = bbox_case
    ref = _lvis_api_no_cap(path, gt, preds)
    prefix = str(tmp_path / 'r')
    res = _run(path, gt, _samples(preds, gt), backend=backend,
               protocol='fixed', max_dets_per_cat=10**6,
               outfile_prefix=prefix)
    summary = load_per_class(prefix + '.per_class.json').protocols[
        'fixed']['bbox']['summary']
    for k in ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APr', 'APc',
              'APf'):
        assert summary[k] == pytest.approx(ref[k], abs=1e-12), k
        assert res[f'lvis/bbox_{protocol_item(k, "fixed")}'] == round(
            ref[k], 3)
    assert 0.05 < ref['AP'] < 0.95
    # the selection file lists every detection, image by image
    with open(prefix + '.bbox.fixed.json') as f:
        dets = json.load(f)
    assert len(dets) == sum(len(p['scores']) for p in preds)


# ----------------------------------------------------------- pooled AP
@pytest.mark.parametrize('backend', BACKENDS)
def test_pooled_rewards_calibration_per_class_ap_does_not(tmp_path,
                                                          backend):
    """a: TP .9 (image 1) and FP .2 (image 2, a absent); b: TP s_tp (image
    2) and FP s_fp (image 1, b absent). Per class both rank their TP first,
    so AP_a = AP_b = 1 whatever b's scale.

    Calibrated (b: .8 / .1): the pool ranks TP, TP, FP, FP: AP^pool = 1.
    b scaled by 0.1 (.08 / .01): TP_a .9, FP_a .2, TP_b .08, FP_b .01;
    recall .5 at precision 1, recall 1 at precision 2/3, so the 51 recall
    thresholds 0..0.5 read 1 and the 50 above read 2/3:
    AP^pool = (51 + 50 * 2/3) / 101. Pools r (a) and f (b) alone stay 1;
    c has no ground truth: -1.
    """
    gt = _two_class_gt()
    path = _write(tmp_path, gt)
    out = {}
    for name, (tp_b, fp_b) in dict(calibrated=(.8, .1),
                                   scaled=(.08, .01)).items():
        preds = [_pred(1, [[10, 10, 30, 30, .9, 0],
                           [50, 50, 40, 40, fp_b, 1]]),
                 _pred(2, [[10, 10, 30, 30, .2, 0],
                           [50, 50, 40, 40, tp_b, 1]])]
        out[name] = _run(path, gt, _samples(preds, gt), backend=backend,
                         protocol=['fixed', 'pooled'],
                         metric_items=['AP'])
    assert out['calibrated'] == {
        'lvis/bbox_APfixed': 1.0, 'lvis/bbox_APpool': 1.0,
        'lvis/bbox_APpool_r': 1.0, 'lvis/bbox_APpool_c': -1.0,
        'lvis/bbox_APpool_f': 1.0}
    assert out['scaled'] == {
        'lvis/bbox_APfixed': 1.0,
        'lvis/bbox_APpool': round((51 + 50 * 2 / 3) / 101, 3),
        'lvis/bbox_APpool_r': 1.0, 'lvis/bbox_APpool_c': -1.0,
        'lvis/bbox_APpool_f': 1.0}


def test_pooled_backends_agree_unrounded(bbox_case, tmp_path):
    gt, preds, path = bbox_case
    got = {}
    for b in BACKENDS:
        prefix = str(tmp_path / b)
        _run(path, gt, _samples(preds, gt), backend=b,
             protocol=['fixed', 'pooled'], max_dets_per_cat=150,
             outfile_prefix=prefix)
        r = load_per_class(prefix + '.per_class.json')
        got[b] = (r.protocols['pooled']['bbox']['summary'],
                  r.protocols['fixed']['bbox']['summary'])
        assert r.protocol == 'standard' or r.protocol == 'fixed'
    for a, b in zip(got['fast'], got['lvis']):
        assert set(a) == set(b)
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-12), k
    assert 0.05 < got['fast'][0]['all'] < 0.95
    assert got['fast'][0]['all'] != got['fast'][1]['AP']


# ---------------------------------------------------------- boundary IoU
def test_mask_boundary_hand_derived():
    m = np.zeros((10, 10), np.uint8)
    m[2:8, 2:8] = 1  # 6x6 square; diagonal 14.1 -> 1 erosion step
    b = mask_boundary(m, 0.02)
    assert b.sum() == 36 - 16  # the ring of width 1
    assert b[2:8, 2:8].sum() == 20 and b[3:7, 3:7].sum() == 0
    full = np.ones((10, 10), np.uint8)  # the image border is a boundary
    assert mask_boundary(full, 0.02).sum() == 100 - 64
    # wider band: ratio .15 -> round(2.12) = 2 steps
    assert mask_boundary(m, 0.15).sum() == 36 - 4


def test_faster_coco_boundary_equals_ours():
    """faster-coco-eval's boundary bands (its C++ erosion) are the same
    pixels as :func:`mask_boundary` (the challenge's OpenCV erosion)."""
    from faster_coco_eval.core.mask import rleToBoundary
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = rng.integers(15, 120, 2)
        m = (rng.random((h, w)) < rng.uniform(.2, .9)).astype(np.uint8)
        m[rng.integers(0, h):, rng.integers(0, w):] = 1
        rle = mask_util.encode(np.asfortranarray(m[:, :, None]))[0]
        for ratio in (0.02, 0.05):
            ours = mask_boundary(m, ratio)
            theirs = mask_util.decode(rleToBoundary(rle, ratio))
            np.testing.assert_array_equal(ours, theirs)


@pytest.fixture(scope='module')
def segm_case(tmp_path_factory):
    gt = make_lvis_gt(16, 'lvis_v1', num_classes=30, seed=21,
                      with_masks=True, image_size=(96, 128),
                      category_power=0.2, mean_categories=4)
    preds = make_predictions(gt, dets_per_image=30, seed=22,
                             with_masks=True)
    # predicted masks: the ground truth's own for the first detections of
    # each image (exact boundary), box interiors for the rest
    by_img = {}
    for a in gt['annotations']:
        by_img.setdefault(a['image_id'], []).append(a)
    cat_ids = sorted(c['id'] for c in gt['categories'])
    for p in preds:
        for j, a in enumerate(by_img.get(p['img_id'], [])[:3]):
            rle = mask_util.merge(mask_util.frPyObjects(
                a['segmentation'], 96, 128))
            p['masks'][j] = mask_util.decode(rle).astype(bool)
            p['labels'][j] = cat_ids.index(a['category_id'])
    path = _write(tmp_path_factory.mktemp('segm'), gt)
    return gt, preds, path


def test_boundary_backends_agree_and_differ_from_segm(segm_case, tmp_path):
    gt, preds, path = segm_case
    summaries = {}
    for b in BACKENDS:
        prefix = str(tmp_path / b)
        _run(path, gt, _samples(preds, gt, with_masks=True), backend=b,
             metric=['segm', 'boundary'], protocol=['standard', 'fixed'],
             outfile_prefix=prefix)
        summaries[b] = load_per_class(prefix + '.per_class.json').protocols
    for proto in ('standard', 'fixed'):
        for m in ('segm', 'boundary'):
            a = summaries['fast'][proto][m]['summary']
            b = summaries['lvis'][proto][m]['summary']
            for k in a:
                assert a[k] == pytest.approx(b[k], abs=1e-12), (proto, m, k)
    s = summaries['fast']['fixed']
    assert s['boundary']['summary']['AP'] > 0.02
    assert s['boundary']['summary']['AP'] < s['segm']['summary']['AP']


# ------------------------------------------------------------- errors
def test_bad_protocol_arguments(tmp_path):
    path = _write(tmp_path, _two_class_gt())
    with pytest.raises(ValueError, match='protocol must be one or several'):
        LVISMetric(ann_file=path, protocol='challenge')
    with pytest.raises(ValueError, match='max_dets_per_cat must be >= 1'):
        LVISMetric(ann_file=path, protocol='fixed', max_dets_per_cat=0)
    m = LVISMetric(ann_file=path, protocol='fixed')
    with pytest.raises(ValueError, match=r'labels \[3\] of image 1'):
        m.process({}, _samples([_pred(1, [[1, 1, 5, 5, .5, 3]])],
                               _two_class_gt()))
    m = LVISMetric(protocol='fixed', category_stats='lvis_v1')
    with pytest.raises(ValueError, match='needs the number of classes'):
        m.process({}, [dict(img_id=1, ori_shape=(9, 9), instances=[],
                            pred_instances=dict(
                                bboxes=torch.zeros(1, 4),
                                scores=torch.ones(1),
                                labels=torch.zeros(1, dtype=torch.long)))])


# ------------------------------------------------------- several ranks
def _dist_worker(rank, world, path, samples, classes, out_dir):
    m = LVISMetric(ann_file=path, protocol=['standard', 'fixed', 'pooled'],
                   max_dets_per_cat=120)
    m.dataset_meta = dict(classes=classes)
    # gather through the test's own folder: mmengine's default is
    # ./.dist_test, which would be left in the working directory
    m.collect_dir = osp.join(out_dir, 'collect')
    # mmengine's sampler split, padded: the last rank repeats sample 0
    mine = samples[rank::world]
    if len(samples) % world and rank >= len(samples) % world:
        mine = mine + samples[:1]
    m.process({}, mine)
    res = m.evaluate(len(samples))
    with open(osp.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(res, f)


def test_three_ranks_merge_selections(bbox_case, tmp_path, monkeypatch):
    """Three gloo ranks (two merge rounds: 1 -> 0, then 2 -> 0), with a
    padded duplicate image, give the single-process numbers on every rank,
    for the standard protocol (mmengine's gather) and the fixed and pooled
    ones (pairwise merge). (This replaces test_lvis_metric's two-rank test:
    one set of spawned processes instead of two.)"""
    gt, preds, path = bbox_case
    samples = _samples(preds[:20], gt)
    single = _run(path, gt, samples,
                  protocol=['standard', 'fixed', 'pooled'],
                  max_dets_per_cat=120)
    classes = [c['name'] for c in sorted(gt['categories'],
                                         key=lambda c: c['id'])]
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the ranks start here
    spawn_gloo(_dist_worker, path, samples, classes, str(tmp_path), world=3)
    for r in range(3):
        with open(tmp_path / f'rank{r}.json') as f:
            assert json.load(f) == single
    assert os.listdir(cwd) == []  # nothing left where the ranks ran
    assert single['lvis/bbox_APpool'] != single['lvis/bbox_APfixed']
