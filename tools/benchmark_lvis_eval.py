"""End-to-end LVIS bbox evaluation time: ``backend='fast'`` vs ``'lvis'``.

Generates LVIS-format ground truth with the 1203 LVIS v1 categories (sampled
in proportion to their training image counts, with ``neg_category_ids`` and
``not_exhaustive_category_ids``) and ~260 detector-like predictions per image,
then times, for each backend, predictions -> metrics dict:
``LVISMetric.process`` over every image (tensor -> compact arrays, top-300
per image) plus ``LVISMetric.evaluate``. Loading the annotation file happens
in the metric's constructor for both and is reported apart. Both backends run
in the same process on the same inputs, and the script prints their metrics
side by side with the time ratio.

Usage::

    python tools/benchmark_lvis_eval.py [--images 1500] [--dets 260]
"""
import argparse
import json
import os.path as osp
import tempfile
import time

import numpy as np
import torch
from mmengine.logging import MMLogger

from mmlongtail.evaluation import LVISMetric
from mmlongtail.evaluation.faster_coco import faster_lvis_eval_class
from mmlongtail.evaluation.lvis_backends import _faster_dt, _silent
from mmlongtail_bench.synthetic import make_lvis_gt, make_predictions


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=1500)
    p.add_argument('--dets', type=int, default=260,
                   help='mean detections per image')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument(
        '--category-power', type=float, default=0.5,
        help='categories drawn with probability ~ image_count**power '
        '(1: LVIS train distribution; 0.5 spreads 1500 images over more '
        'categories, closer to how many LVIS val covers)')
    p.add_argument('--backends', nargs='+', default=['fast', 'lvis'])
    return p.parse_args()


def to_samples(preds: list, gt: dict) -> list:
    sizes = {im['id']: (im['height'], im['width']) for im in gt['images']}
    return [
        dict(
            img_id=p['img_id'],
            ori_shape=sizes[p['img_id']],
            pred_instances=dict(
                bboxes=torch.from_numpy(p['bboxes']),
                scores=torch.from_numpy(p['scores']),
                labels=torch.from_numpy(p['labels']))) for p in preds
    ]


def run_backend(backend: str, ann_file: str, classes: list,
                samples: list) -> dict:
    logger = MMLogger.get_current_instance()
    t0 = time.perf_counter()
    metric = LVISMetric(ann_file=ann_file, metric='bbox', backend=backend)
    metric.dataset_meta = dict(classes=classes)
    t1 = time.perf_counter()
    for i in range(0, len(samples), 8):
        metric.process({}, samples[i:i + 8])
        if (i + 8) % 504 == 0 or i + 8 >= len(samples):
            logger.info(f'[{backend}] process(): '
                        f'{min(i + 8, len(samples))}/{len(samples)} images')
    t2 = time.perf_counter()
    logger.info(f'[{backend}] evaluate()')
    res = metric.evaluate(len(samples))
    t3 = time.perf_counter()
    return dict(
        metrics=res, setup=t1 - t0, process=t2 - t1, evaluate=t3 - t2,
        total=t3 - t1, metric=metric)


def fast_breakdown(metric: LVISMetric, samples: list) -> dict:
    """Where the fast backend's evaluate() time goes."""
    gt = metric._gt
    metric.process({}, samples)  # evaluate() emptied metric.results
    results = metric.results
    t = {}
    s = time.perf_counter()
    dets = metric._columns(results, gt, 'bbox')
    t['columns (vectorized)'] = time.perf_counter() - s
    s = time.perf_counter()
    keep = np.flatnonzero(gt.federated_mask(dets))
    dets = dets.subset(keep)
    t[f'federated pre-filter (keeps {len(keep)})'] = time.perf_counter() - s
    s = time.perf_counter()
    dt = _faster_dt(gt, dets, 'bbox')
    t['per-detection dicts + index'] = time.perf_counter() - s
    s = time.perf_counter()
    per_cat = gt.images_per_category(dets)
    t['images per category'] = time.perf_counter() - s
    ev = faster_lvis_eval_class()(
        gt.faster_coco(), dt, 'bbox', lvis_style=True,
        print_function=_silent)
    ev.params.maxDets = [300]
    ev.params.imgIds = gt.img_ids.tolist()
    ev.params.catIds = gt.cat_ids_with_annotations().tolist()
    ev.images_per_category = per_cat
    s = time.perf_counter()
    ev._prepare()
    t['faster-coco-eval _prepare'] = time.perf_counter() - s
    s = time.perf_counter()
    ev.evaluate()  # includes a second _prepare
    t['evaluate: _prepare + IoUs + C++ match/accumulate'] = \
        time.perf_counter() - s
    n_pairs = sum(len(v) for v in per_cat.values())
    t[f'  ({n_pairs} (image, category) pairs visited, of '
      f'{len(gt.img_ids) * len(ev.params.catIds)})'] = 0.0
    return t


def main() -> None:
    args = parse_args()
    logger = MMLogger.get_instance('benchmark_lvis_eval', log_level='INFO')
    t = time.perf_counter()
    gt = make_lvis_gt(
        args.images, 'lvis_v1', seed=args.seed,
        category_power=args.category_power)
    preds = make_predictions(gt, args.dets, seed=args.seed + 1)
    n_det = sum(len(p['scores']) for p in preds)
    logger.info(
        f'generated {len(gt["images"])} images, {len(gt["annotations"])} '
        f'GT instances, {len(gt["categories"])} categories '
        f'({len({a["category_id"] for a in gt["annotations"]})} annotated), '
        f'{n_det} '
        f'detections ({n_det / len(preds):.0f}/image) in '
        f'{time.perf_counter() - t:.1f}s')
    classes = [
        c['name'] for c in sorted(gt['categories'], key=lambda c: c['id'])
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ann_file = osp.join(tmp, 'lvis_synthetic_val.json')
        with open(ann_file, 'w') as f:
            json.dump(gt, f)
        del gt
        samples = to_samples(preds, json.load(open(ann_file)))
        runs = {}
        for b in args.backends:
            runs[b] = run_backend(b, ann_file, classes, samples)
            logger.info(f'[{b}] done in {runs[b]["total"]:.1f}s')
        breakdown = None
        if 'fast' in runs:
            breakdown = fast_breakdown(runs['fast']['metric'], samples)
    print()
    print(f'LVIS bbox evaluation, {args.images} images x ~{args.dets} '
          f'detections x 1203 classes ({n_det} detections)')
    names = list(runs)
    hdr = f'{"":<28}' + ''.join(f'{n:>12}' for n in names)
    if len(names) == 2:
        hdr += f'{names[1] + "/" + names[0]:>14}'
    print(hdr)
    for k in ('setup', 'process', 'evaluate', 'total'):
        label = {
            'setup': 'load ann_file (s)',
            'process': 'process() (s)',
            'evaluate': 'evaluate() (s)',
            'total': 'predictions->metrics (s)'
        }[k]
        row = f'{label:<28}' + ''.join(f'{runs[n][k]:>12.2f}' for n in names)
        if len(names) == 2:
            ratio = runs[names[1]][k] / max(runs[names[0]][k], 1e-9)
            row += f'{ratio:>13.1f}x'
        print(row)
    keys = list(runs[names[0]]['metrics'])
    for k in keys:
        vals = [runs[n]['metrics'][k] for n in names]
        print(f'{k:<28}' + ''.join(f'{v:>12.3f}' for v in vals))
    if len(names) == 2:
        same = all(runs[names[0]]['metrics'][k] == runs[names[1]]['metrics'][k]
                   for k in keys)
        print(f'metrics identical across backends: {same}')
    if breakdown:
        print('\nfast backend evaluate() breakdown (re-run on the same '
              'inputs):')
        for k, v in breakdown.items():
            print(f'  {k:<52}{v:>8.2f}s')


if __name__ == '__main__':
    main()
