"""The metric's bad inputs: a seeded fuzz over valid predictions of the hand
LVIS case (``tiny_federated``), one corruption per case.

Each corruption must raise ``ValueError`` naming the image and what was
found, as the prediction arrives (before any evaluation); each valid edge
(a zero-width box, a score above 1, an image without detections, nothing
changed) must be evaluated with its detections exactly as given. The test
counts the outcomes and prints them; it fails on any other exception type,
any corruption that passes, and any accepted input the metric changed.
"""
import json
from collections import Counter

import numpy as np
import pytest
import torch

from tiny_federated import tiny_federated_gt, tiny_federated_predictions

import mmlongtail  # noqa: F401  (registers)
from mmlongtail.evaluation import LVISMetric
from mmlongtail.evaluation.lvis_metric import check_predictions

SEED = 28
CASES = 120
NUM_CLASSES = 5

#: corruption -> what the error must say ({img} is the image id)
CORRUPTIONS = {
    'nan_score': 'prediction scores of image {img} are not finite',
    'inf_score': 'prediction scores of image {img} are not finite',
    'nan_mask_score': 'prediction mask scores of image {img} are not finite',
    'nan_box': 'prediction box coordinates of image {img} are not finite',
    'inf_box': 'prediction box coordinates of image {img} are not finite',
    'negative_width': 'boxes of image {img} have a negative width or height',
    'negative_height': 'boxes of image {img} have a negative width or height',
    'label_too_high': 'of image {img} are outside the 5 classes',
    'label_negative': 'of image {img} are outside the 5 classes',
    'fewer_scores': 'predictions of image {img}: ',
    'duplicate_image': 'image id {img} are given a second time',
    'unknown_image': 'image id {img}, which is not in the ground truth',
}
VALID_EDGES = ('none', 'zero_width', 'score_above_one', 'no_detections')


def _sample(p, with_masks):
    inst = dict(bboxes=torch.from_numpy(p['bboxes'].copy()),
                scores=torch.from_numpy(p['scores'].copy()),
                labels=torch.from_numpy(p['labels'].copy()))
    if with_masks:
        boxes = np.nan_to_num(p['bboxes'], posinf=100, neginf=0)
        masks = np.zeros((len(boxes), 100, 100), bool)
        for k, (x1, y1, x2, y2) in enumerate(
                np.round(boxes.clip(0, 100)).astype(int)):
            masks[k, y1:y2, x1:x2] = True
        inst['masks'] = torch.from_numpy(masks)
        inst['mask_scores'] = torch.from_numpy(
            p.get('mask_scores', p['scores']).copy())
    return dict(img_id=p['img_id'], ori_shape=(100, 100),
                pred_instances=inst)


def _corrupt(kind, preds, rng):
    """Apply ``kind`` to a copy of ``preds``; return them and the image."""
    preds = [{k: (v.copy() if hasattr(v, 'copy') else v)
              for k, v in p.items()} for p in preds]
    nonempty = [i for i, p in enumerate(preds) if len(p['scores'])]
    i = int(rng.choice(nonempty))
    p = preds[i]
    j = int(rng.integers(len(p['scores'])))
    if kind in ('nan_score', 'nan_mask_score'):
        p['scores' if kind == 'nan_score' else 'mask_scores'] = \
            p['scores'].copy()
        p['scores' if kind == 'nan_score' else 'mask_scores'][j] = np.nan
    elif kind == 'inf_score':
        p['scores'][j] = rng.choice([np.inf, -np.inf])
    elif kind in ('nan_box', 'inf_box'):
        p['bboxes'][j, rng.integers(4)] = np.nan if kind == 'nan_box' \
            else rng.choice([np.inf, -np.inf])
    elif kind in ('negative_width', 'negative_height', 'zero_width'):
        a = 0 if kind != 'negative_height' else 1
        lo = p['bboxes'][j, a]
        p['bboxes'][j, a + 2] = lo if kind == 'zero_width' else \
            lo - rng.uniform(0.5, 5)
    elif kind == 'label_too_high':
        p['labels'][j] = NUM_CLASSES + rng.integers(0, 3)
    elif kind == 'label_negative':
        p['labels'][j] = -1 - rng.integers(0, 3)
    elif kind == 'fewer_scores':
        p['scores'] = p['scores'][:-1]
    elif kind == 'duplicate_image':
        preds.insert(int(rng.integers(i + 1, len(preds) + 1)),
                     dict(p, bboxes=p['bboxes'].copy()))
    elif kind == 'unknown_image':
        p['img_id'] = int(rng.integers(5, 10 ** 6))
    elif kind == 'score_above_one':
        p['scores'][j] = 1.0 + rng.uniform(0, 5)
    elif kind == 'no_detections':
        for k in ('bboxes', 'scores', 'labels'):
            p[k] = p[k][:0]
    return preds, p['img_id']


def _expected_rows(preds, cat_ids, fixed=False):
    """What the metric must evaluate: under the standard protocol each
    image's best 300 (stable by score), under the fixed one (k = 10,000)
    every detection by image id; boxes as [x, y, w, h]; nothing else
    changed."""
    rows = []
    for p in sorted(preds, key=lambda p: p['img_id']) if fixed else preds:
        keep = np.arange(len(p['scores']))
        if len(keep) > 300 and not fixed:
            keep = np.argsort(-p['scores'], kind='stable')[:300]
        for k in keep.tolist():
            b = p['bboxes'][k].astype(np.float64)
            rows.append((p['img_id'], int(cat_ids[p['labels'][k]]),
                         [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         float(p['scores'][k])))
    return rows


def test_fuzz_bad_predictions(tmp_path):
    gt = tiny_federated_gt()
    ann_file = str(tmp_path / 'gt.json')
    with open(ann_file, 'w') as f:
        json.dump(gt, f)
    cat_ids = sorted(c['id'] for c in gt['categories'])
    base = tiny_federated_predictions()
    rng = np.random.default_rng(SEED)
    kinds = list(CORRUPTIONS) + list(VALID_EDGES)
    outcomes = Counter()
    problems = []
    for case in range(CASES):
        kind = kinds[case % len(kinds)] if case < len(kinds) else \
            str(rng.choice(kinds))
        protocol = [['standard'], ['fixed'], ['standard', 'fixed']][
            int(rng.integers(3))]
        with_masks = kind == 'nan_mask_score' or rng.random() < 0.25
        preds, img = _corrupt(kind, base, rng)
        prefix = str(tmp_path / f'case{case}')
        metric = LVISMetric(
            ann_file=ann_file, protocol=protocol, outfile_prefix=prefix,
            metric=['bbox', 'segm'] if with_masks else 'bbox')
        samples = [_sample(p, with_masks) for p in preds]
        batch = int(rng.integers(1, 4))
        what = f'case {case} ({kind}, image {img}, {protocol})'
        try:
            for s in range(0, len(samples), batch):
                metric.process({}, samples[s:s + batch])
            if kind in CORRUPTIONS:
                outcomes['silent'] += 1
                problems.append(f'{what}: accepted')
                continue
            metric.evaluate(len(samples))
        except ValueError as e:
            expected = CORRUPTIONS.get(kind, '<no error>').format(img=img)
            if expected in str(e):
                outcomes['raised as stated'] += 1
            else:
                outcomes['wrong message'] += 1
                problems.append(f'{what}: {e}')
            continue
        except Exception as e:  # noqa: B902  (counted: must be zero)
            outcomes['other exception'] += 1
            problems.append(f'{what}: {type(e).__name__}: {e}')
            continue
        # accepted: every detection evaluated as given
        changed = False
        for name, fixed in (('standard', False), ('fixed', True)):
            if name not in protocol:
                continue
            suffix = '.fixed' if fixed else ''
            with open(f'{prefix}.bbox{suffix}.json') as f:
                rows = [(a['image_id'], a['category_id'], a['bbox'],
                         a['score']) for a in json.load(f)]
            changed |= rows != _expected_rows(preds, cat_ids, fixed)
        if changed:
            outcomes['silent'] += 1
            problems.append(f'{what}: the evaluated detections differ')
        else:
            outcomes['accepted unchanged'] += 1
    print(f'\nmetric fuzz, {CASES} cases (seed {SEED}): ' + ', '.join(
        f'{k} {v}' for k, v in sorted(outcomes.items())))
    assert not problems, '\n'.join(problems)
    assert outcomes['raised as stated'] > 60
    assert outcomes['accepted unchanged'] > 20


def test_each_error_names_image_count_and_first_detection():
    boxes = np.array([[0, 0, 5, 5], [4, 4, 2, 9], [1, 1, 0, 3]], np.float32)
    with pytest.raises(ValueError, match=(
            r'boxes of image 42 have a negative width or height: 2 of 3 '
            r'detections, the first is detection 1 with \[x1, y1, x2, y2\] '
            r'= \[4.0, 4.0, 2.0, 9.0\]\. .*not \[x, y, w, h\]')):
        check_predictions(42, boxes, np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match=(
            r'scores of image 7 are not finite: 1 of 2 detections, the first '
            r'is detection 1 with nan')):
        check_predictions(7, boxes[:2] * 0, np.array([1, np.nan]),
                          np.zeros(2))
    with pytest.raises(ValueError, match=(
            r'predictions of image 3: 2 scores but 2 boxes, 1 labels')):
        check_predictions(3, boxes[:2] * 0, np.ones(2), np.zeros(1))
    check_predictions(3, np.zeros((0, 4)), np.zeros(0), np.zeros(0))


def test_same_image_on_two_ranks_is_refused(tmp_path):
    """After mmengine gathers the ranks' results (padding trimmed), an image
    evaluated by two ranks is an error, not a double count."""
    gt = tiny_federated_gt()
    ann_file = str(tmp_path / 'gt.json')
    with open(ann_file, 'w') as f:
        json.dump(gt, f)
    preds = tiny_federated_predictions()
    ranks = [LVISMetric(ann_file=ann_file) for _ in range(2)]
    ranks[0].process({}, [_sample(p, False) for p in preds[:3]])
    ranks[1].process({}, [_sample(p, False) for p in preds[2:]])
    with pytest.raises(ValueError, match=(
            r'image ids \[3\] are given 2 times in the gathered results')):
        ranks[0].compute_metrics(ranks[0].results + ranks[1].results)


def test_streamed_metric_checks_as_predictions_arrive(tmp_path):
    from mmlongtail.evaluation import StreamedLVISMetric
    gt = tiny_federated_gt()
    ann_file = str(tmp_path / 'gt.json')
    with open(ann_file, 'w') as f:
        json.dump(gt, f)
    p = tiny_federated_predictions()[1]
    p = dict(p, scores=np.array([np.inf], np.float32))
    m = StreamedLVISMetric(dict(type='mmlongtail.LVISMetric',
                                ann_file=ann_file), str(tmp_path / 'pred'))
    with pytest.raises(ValueError, match='scores of image 2 are not finite'):
        m.process({}, [_sample(p, False)])


def test_streamed_metric_checks_before_converting(tmp_path):
    """Transposed boxes, float labels and a mask count that differs from the
    scores are refused as given, before the conversion to the stored
    arrays (which would reshape (4, N) boxes, cut 0.7 to 0, and write a
    chunk that fails only at the final evaluation)."""
    from mmlongtail.evaluation import StreamedLVISMetric
    gt = tiny_federated_gt()
    ann_file = str(tmp_path / 'gt.json')
    with open(ann_file, 'w') as f:
        json.dump(gt, f)
    p = tiny_federated_predictions()[0]  # 2 of its detections: (4, 2) boxes
    p = dict(p, scores=p['scores'][:2], labels=p['labels'][:2],
             bboxes=p['bboxes'][:2])
    m = StreamedLVISMetric(dict(type='mmlongtail.LVISMetric',
                                ann_file=ann_file), str(tmp_path / 'pred'))
    transposed = _sample(p, False)
    transposed['pred_instances']['bboxes'] = \
        transposed['pred_instances']['bboxes'].T.contiguous()
    with pytest.raises(ValueError, match=r'\(boxes must be \(N, 4\)'):
        m.process({}, [transposed])
    floats = _sample(p, False)
    floats['pred_instances']['labels'] = torch.tensor([0.7, 1.2])
    with pytest.raises(ValueError, match='labels of image .* must be '
                       'integers'):
        m.process({}, [floats])
    masks = _sample(p, True)
    masks['pred_instances']['masks'] = masks['pred_instances']['masks'][:1]
    with pytest.raises(ValueError, match='2 scores but .*1 masks'):
        m.process({}, [masks])
    assert m._buffer == []  # nothing was kept to be written
