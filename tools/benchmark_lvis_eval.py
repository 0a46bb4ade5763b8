"""End-to-end LVIS bbox evaluation: time and peak memory per protocol and
backend.

Generates LVIS-format ground truth with the 1203 LVIS v1 categories (sampled
in proportion to their training image counts, with ``neg_category_ids`` and
``not_exhaustive_category_ids``) and detector-like predictions
(:mod:`mmlongtail_bench.synthetic`), then times, for each protocol and
backend, predictions -> metrics dict: ``LVISMetric.process`` over every image
(tensor -> compact arrays; top-300 per image for ``standard``, the streaming
per-category top-k for ``fixed`` / ``pooled``) plus ``LVISMetric.evaluate``.
Loading the annotation file happens in the metric's constructor and is
reported apart.

The standard protocol gets ``--dets`` detections per image (mean; 300 kept
per image); fixed and pooled get ``--fixed-dets`` per image, no per-image
cap, of which each category keeps its best ``--k`` (10,000) over the set.
Each (protocol, backend) runs in a forked child on the same inputs; its wall
and CPU time (the machine may be shared), its peak resident memory
(``VmHWM``) and what the run added to the memory the child started with (the
generated inputs) are reported.

``--challenge-repo`` (a checkout of lvis-api's ``lvis_challenge_2021``
branch, see ``tools/compare_lvis_official.py``) also times the official
fixed-AP evaluation on the same detections (``LVISResults(...,
max_dets_per_cat=k, max_dets_per_im=-1)`` + ``LVISEval``), in a subprocess.

Usage::

    python tools/benchmark_lvis_eval.py [--images 1500] [--dets 260] \
        [--protocols standard fixed pooled] [--backends fast lvis]
    # full LVIS v1 val scale (19,809 images; 5.9M standard, ~13M fixed
    # detections before the per-category cut):
    python tools/benchmark_lvis_eval.py --full
"""
import argparse
import json
import multiprocessing as mp
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from mmengine.logging import MMLogger

from mmlongtail.evaluation import LVISMetric
from mmlongtail.evaluation.faster_coco import faster_lvis_eval_class, silent
from mmlongtail.evaluation.faster_eval import faster_results
from mmlongtail_bench.memory import proc_status
from mmlongtail_bench.synthetic import make_lvis_gt, make_predictions

_CHALLENGE = r'''
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from lvis import LVIS, LVISEval, LVISResults
c0 = time.process_time()
t0 = time.perf_counter()
gt = LVIS(sys.argv[2])
with open(sys.argv[3]) as f:
    dets = json.load(f)
t1 = time.perf_counter()
res = LVISResults(gt, dets, max_dets_per_cat=int(sys.argv[4]),
                  max_dets_per_im=-1)
ev = LVISEval(gt, res, 'bbox')
ev.params.max_dets = -1
ev.run()
t2 = time.perf_counter()
print(json.dumps(dict(load=t1 - t0, evaluate=t2 - t1,
                      cpu=time.process_time() - c0,
                      peak_gb=resource.getrusage(
                          resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      AP=ev.get_results()['AP'])))
'''


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=1500)
    p.add_argument('--dets', type=int, default=260,
                   help='mean detections per image (standard protocol)')
    p.add_argument('--fixed-dets', type=int, default=670,
                   help='mean detections per image for fixed/pooled (no '
                   'per-image cap; 670 x 19,809 images is ~13M, ~11k per '
                   'category)')
    p.add_argument('--k', type=int, default=10000,
                   help='max_dets_per_cat (fixed/pooled)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument(
        '--category-power', type=float, default=0.5,
        help='categories drawn with probability ~ image_count**power '
        '(1: LVIS train distribution; 0.5 spreads 1500 images over more '
        'categories, closer to how many LVIS val covers)')
    p.add_argument('--protocols', nargs='+', default=['standard'],
                   choices=['standard', 'fixed', 'pooled'])
    p.add_argument('--backends', nargs='+', default=['fast', 'lvis'])
    p.add_argument('--challenge-repo',
                   help="lvis-api lvis_challenge_2021 checkout: also time "
                   'its fixed-AP evaluation')
    p.add_argument('--breakdown', action='store_true',
                   help="where the fast backend's standard evaluate() time "
                   'goes')
    p.add_argument('--full', action='store_true',
                   help='19,809 images, 300 dets/image standard, 670 '
                   'fixed, protocols standard fixed pooled, fast backend')
    args = p.parse_args()
    if args.full:
        args.images, args.dets, args.fixed_dets = 19809, 300, 670
        args.protocols = ['standard', 'fixed', 'pooled']
        args.backends = ['fast']
    return args


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


def _rss_gb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process, in GiB."""
    return proc_status(field) / 2**30


def run_backend(backend: str, protocol: str, k: int, ann_file: str,
                classes: list, samples: list,
                breakdown: bool = False) -> dict:
    logger = MMLogger.get_current_instance()
    start_rss = _rss_gb('VmRSS')
    c0 = time.process_time()
    t0 = time.perf_counter()
    metric = LVISMetric(ann_file=ann_file, metric='bbox', backend=backend,
                        protocol=protocol, max_dets_per_cat=k)
    metric.dataset_meta = dict(classes=classes)
    t1 = time.perf_counter()
    for i in range(0, len(samples), 8):
        metric.process({}, samples[i:i + 8])
        if (i + 8) % 4000 == 0 or i + 8 >= len(samples):
            logger.info(f'[{protocol}/{backend}] process(): '
                        f'{min(i + 8, len(samples))}/{len(samples)} images')
    t2 = time.perf_counter()
    logger.info(f'[{protocol}/{backend}] evaluate()')
    res = metric.evaluate(len(samples))
    t3 = time.perf_counter()
    out = dict(
        metrics=res, setup=t1 - t0, process=t2 - t1, evaluate=t3 - t2,
        total=t3 - t1, cpu=time.process_time() - c0, start_gb=start_rss,
        peak_gb=_rss_gb('VmHWM'))
    if breakdown and backend == 'fast' and protocol == 'standard':
        out['breakdown'] = fast_breakdown(metric, samples)
    return out


def _child(conn, *args) -> None:
    conn.send(run_backend(*args))
    conn.close()


def run_forked(*args) -> dict:
    """:func:`run_backend` in a forked child (its own peak memory)."""
    ctx = mp.get_context('fork')
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, ) + args)
    proc.start()
    out = parent.recv()
    proc.join()
    return out


def fast_breakdown(metric: LVISMetric, samples: list) -> dict:
    """Where the fast backend's evaluate() time goes."""
    gt = metric.ground_truth
    metric.process({}, samples)  # evaluate() emptied metric.results
    results = metric.results
    t = {}
    s = time.perf_counter()
    dets = metric.detection_columns(results, gt, 'bbox')
    t['columns (vectorized)'] = time.perf_counter() - s
    s = time.perf_counter()
    keep = np.flatnonzero(gt.federated_mask(dets))
    dets = dets.subset(keep)
    t[f'federated pre-filter (keeps {len(keep)})'] = time.perf_counter() - s
    s = time.perf_counter()
    dt = faster_results(gt, dets, 'bbox')
    t['per-detection dicts + index'] = time.perf_counter() - s
    s = time.perf_counter()
    per_cat = gt.images_per_category(dets)
    t['images per category'] = time.perf_counter() - s
    ev = faster_lvis_eval_class()(
        gt.faster_coco(), dt, 'bbox', lvis_style=True,
        print_function=silent)
    ev.params.maxDets = [300]
    ev.params.imgIds = gt.img_ids.tolist()
    ev.params.catIds = gt.cat_ids_with_annotations().tolist()
    ev.images_per_category = per_cat
    s = time.perf_counter()
    ev.prepare()
    t['faster-coco-eval _prepare'] = time.perf_counter() - s
    s = time.perf_counter()
    ev.evaluate()  # includes a second _prepare
    t['evaluate: _prepare + IoUs + C++ match/accumulate'] = \
        time.perf_counter() - s
    n_pairs = sum(len(v) for v in per_cat.values())
    t[f'  ({n_pairs} (image, category) pairs visited, of '
      f'{len(gt.img_ids) * len(ev.params.catIds)})'] = 0.0
    return t


def run_challenge(repo: str, ann_file: str, preds: list, gt: dict,
                  k: int, tmp: str) -> dict:
    """The official fixed-AP evaluation on the same detections."""
    cat_ids = np.array(sorted(c['id'] for c in gt['categories']))
    dets = []
    for p in preds:
        b = p['bboxes'].astype(np.float64)
        b[:, 2:] -= b[:, :2]
        dets.extend(
            dict(image_id=p['img_id'], category_id=c, bbox=bb, score=s)
            for c, bb, s in zip(cat_ids[p['labels']].tolist(), b.tolist(),
                                p['scores'].astype(np.float64).tolist()))
    path = osp.join(tmp, 'fixed_dets.json')
    with open(path, 'w') as f:
        json.dump(dets, f)
    del dets
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, '-c', _CHALLENGE, repo, ann_file, path, str(k)],
        check=True, capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res['total'] = time.perf_counter() - t
    return res


def main() -> None:
    args = parse_args()
    logger = MMLogger.get_instance('benchmark_lvis_eval', log_level='INFO')
    t = time.perf_counter()
    gt = make_lvis_gt(
        args.images, 'lvis_v1', seed=args.seed,
        category_power=args.category_power)
    inputs = {}
    if 'standard' in args.protocols:
        inputs['standard'] = make_predictions(gt, args.dets,
                                              seed=args.seed + 1)
    if {'fixed', 'pooled'} & set(args.protocols):
        inputs['fixed'] = make_predictions(gt, args.fixed_dets,
                                           seed=args.seed + 2)
    n_det = {k: sum(len(p['scores']) for p in v) for k, v in inputs.items()}
    logger.info(
        f'generated {len(gt["images"])} images, {len(gt["annotations"])} '
        f'GT instances, {len(gt["categories"])} categories '
        f'({len({a["category_id"] for a in gt["annotations"]})} annotated), '
        f'detections {n_det} in {time.perf_counter() - t:.1f}s')
    classes = [
        c['name'] for c in sorted(gt['categories'], key=lambda c: c['id'])
    ]
    runs, challenge = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        ann_file = osp.join(tmp, 'lvis_synthetic_val.json')
        with open(ann_file, 'w') as f:
            json.dump(gt, f)
        gt_sizes = dict(images=gt['images'])
        samples = {k: to_samples(v, gt_sizes) for k, v in inputs.items()}
        for proto in args.protocols:
            src = 'standard' if proto == 'standard' else 'fixed'
            for b in args.backends:
                runs[proto, b] = run_forked(b, proto, args.k, ann_file,
                                            classes, samples[src],
                                            args.breakdown)
                logger.info(f'[{proto}/{b}] done in '
                            f'{runs[proto, b]["total"]:.1f}s')
        if args.challenge_repo and 'fixed' in inputs:
            challenge = run_challenge(args.challenge_repo, ann_file,
                                      inputs['fixed'], gt, args.k, tmp)
    print()
    print(f'LVIS bbox evaluation, {args.images} images x 1203 classes; '
          f'standard: {n_det.get("standard", 0)} detections (~{args.dets}/'
          f'image, 300 kept per image); fixed/pooled: '
          f'{n_det.get("fixed", 0)} detections (~{args.fixed_dets}/image), '
          f'top {args.k} per category; os.cpu_count()={os.cpu_count()}')
    cols = list(runs)
    print(f'{"":<26}' + ''.join(f'{p + "/" + b:>16}' for p, b in cols) +
          (f'{"challenge/fixed":>17}' if challenge else ''))
    for key, label in (('setup', 'load ann_file (s)'),
                       ('process', 'process() (s)'),
                       ('evaluate', 'evaluate() (s)'),
                       ('total', 'predictions->metrics (s)'),
                       ('cpu', '  of which CPU time (s)'),
                       ('peak_gb', 'peak memory (GiB)'),
                       ('added', 'added by the run (GiB)')):
        vals = [runs[c]['peak_gb'] - runs[c]['start_gb'] if key == 'added'
                else runs[c][key] for c in cols]
        row = f'{label:<26}' + ''.join(f'{v:>16.2f}' for v in vals)
        if challenge and key in ('evaluate', 'total', 'cpu', 'peak_gb'):
            row += f'{challenge[key]:>17.2f}'
        print(row)
    for proto in args.protocols:
        bs = [b for p, b in cols if p == proto]
        if len(bs) == 2:
            r = runs[proto, bs[1]]['total'] / max(runs[proto, bs[0]]['total'],
                                                  1e-9)
            print(f'{proto}: {bs[1]} / {bs[0]} predictions->metrics time: '
                  f'{r:.1f}x')
    keys = []
    for c in cols:
        keys += [k for k in runs[c]['metrics'] if k not in keys]
    print()
    for k in keys:
        vals = [runs[c]['metrics'].get(k) for c in cols]
        print(f'{k:<26}' + ''.join(
            f'{v:>16.3f}' if v is not None else f'{"":>16}' for v in vals) +
              (f'{challenge["AP"]:>17.3f}'
               if challenge and k == 'lvis/bbox_APfixed' else ''))
    for proto in args.protocols:
        bs = [b for p, b in cols if p == proto]
        if len(bs) == 2:
            same = runs[proto, bs[0]]['metrics'] == runs[proto,
                                                         bs[1]]['metrics']
            print(f'{proto}: metrics identical across backends: {same}')
    for c in cols:
        if 'breakdown' in runs[c]:
            print('\nfast backend evaluate() breakdown (re-run on the same '
                  'inputs):')
            for k, v in runs[c]['breakdown'].items():
                print(f'  {k:<52}{v:>8.2f}s')


if __name__ == '__main__':
    main()
