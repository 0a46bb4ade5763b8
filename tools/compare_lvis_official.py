"""Compare LVISMetric's fixed / pooled / boundary AP with the official code.

The official implementations are not on PyPI (``pip install lvis`` is
lvis-api 0.5.3, the master branch, without them). Get them with git:

* AP^fixed and boundary AP: lvis-api's ``lvis_challenge_2021`` branch::

      git clone -b lvis_challenge_2021 https://github.com/lvis-dataset/lvis-api

* AP^pool: large-vocab-devil's ``LVISPooledEval`` (runs on lvis-api 0.5.3,
  which mmlongtail installs)::

      git clone https://github.com/achalddave/large-vocab-devil

The script generates LVIS-format ground truth and predictions
(:mod:`mmlongtail_bench.synthetic`), evaluates them with ``LVISMetric``
(both backends) and, in subprocesses with the given checkout first on the
path, with the official code on the same detections:

* fixed: the full detection list goes to the challenge branch's
  ``LVISResults(gt, dets, max_dets_per_cat=k, max_dets_per_im=-1)`` (so its
  per-category cut is checked too) and ``LVISEval`` with
  ``params.max_dets = -1``;
* boundary: the same, with ``LVISEval(..., mode='challenge2021')`` (needs
  ``--k 10000``, the challenge's value);
* pooled: the per-category top-k list goes to ``LVISPooledEval`` with
  ``params.max_dets = -1``, area 'all' and pools all/r/c/f, as
  large-vocab-devil's ``scripts/evaluate_ap_pooled.py`` runs it.

It prints each number side by side and the largest difference.

Usage::

    python tools/compare_lvis_official.py --challenge-repo lvis-api \\
        --devil-repo large-vocab-devil [--images 120] [--k 200] [--segm]
"""
import argparse
import json
import os.path as osp
import subprocess
import sys
import tempfile
from collections import defaultdict

import numpy as np
import torch

from mmlongtail.evaluation import LVISMetric
from mmlongtail.evaluation.per_class_file import load as load_per_class
from mmlongtail.evaluation.lvis_eval_output import AP_KEYS as AP_ITEMS
from mmlongtail.evaluation.lvis_metric import protocol_item
from mmlongtail_bench.synthetic import make_lvis_gt, make_predictions

# Run in a subprocess with the official checkout first on sys.path. NumPy 2
# removed np.float, which lvis-api 0.5.3 and large-vocab-devil still use; the
# alias is restored in that subprocess only.
_OFFICIAL = r'''
import json, sys
import numpy as np
np.float = float
kind, repo, gt_path, res_path, k, iou, out = sys.argv[1:8]
sys.path.insert(0, repo)
k = int(k)
from lvis import LVIS, LVISResults
with open(res_path) as f:
    dets = json.load(f)
gt = LVIS(gt_path)
if kind == 'fixed':
    from lvis import LVISEval
    res = LVISResults(gt, dets, max_dets_per_cat=k, max_dets_per_im=-1)
    if iou == 'boundary':
        ev = LVISEval(gt, res, 'segm', mode='challenge2021')
    else:
        ev = LVISEval(gt, res, iou)
        ev.params.max_dets = -1
    ev.run()
    r = {key: float(v) for key, v in ev.get_results().items()}
else:
    from lvdevil.eval_wrapper import LVISPooledEval
    res = LVISResults(gt, dets, max_dets=-1)
    ev = LVISPooledEval(gt, res, iou_type=iou, pools=['all', 'r', 'c', 'f'])
    ev.params.max_dets = -1
    ev.params.area_rng = ev.params.area_rng[:1]
    ev.params.area_rng_lbl = ev.params.area_rng_lbl[:1]
    ev.run()
    r = {key: float(v) for key, v in ev.results.items()}
with open(out, 'w') as f:
    json.dump(r, f)
'''


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--challenge-repo', required=True,
                   help="a checkout of lvis-api's lvis_challenge_2021 branch")
    p.add_argument('--devil-repo', required=True,
                   help='a checkout of achalddave/large-vocab-devil')
    p.add_argument('--images', type=int, default=120)
    p.add_argument('--classes', type=int, default=90)
    p.add_argument('--dets', type=int, default=150,
                   help='mean detections per image (no per-image cap)')
    p.add_argument('--k', type=int, default=200,
                   help='max_dets_per_cat (10000 for --segm: the challenge '
                   "mode's value)")
    p.add_argument('--segm', action='store_true',
                   help='masks: segm fixed/pooled and boundary fixed')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args()


def per_category_topk(dets: list, k: int) -> list:
    """The ``k`` best detections of each category (stable by score, i.e.
    ties in list order), as large-vocab-devil's scripts cut them."""
    by_cat = defaultdict(list)
    for d in dets:
        by_cat[d['category_id']].append(d)
    out = []
    for anns in by_cat.values():
        out.extend(sorted(anns, key=lambda d: -d['score'])[:k])
    return out


def official(kind: str, repo: str, gt_path: str, dets: list, k: int,
             iou: str, tmp: str) -> dict:
    res_path = osp.join(tmp, f'{kind}_{iou}_dets.json')
    out = osp.join(tmp, f'{kind}_{iou}_out.json')
    with open(res_path, 'w') as f:
        json.dump(dets, f)
    subprocess.run([
        sys.executable, '-c', _OFFICIAL, kind, repo, gt_path, res_path,
        str(k), iou, out
    ], check=True)
    with open(out) as f:
        return json.load(f)


def main() -> None:
    args = parse_args()
    if args.segm and args.k != 10000:
        print("--segm compares boundary AP in the challenge mode, whose "
              'per-category cap is 10000: using --k 10000')
        args.k = 10000
    gt = make_lvis_gt(args.images, 'lvis_v1', num_classes=args.classes,
                      seed=args.seed, with_masks=args.segm,
                      image_size=(120, 160) if args.segm else (480, 640),
                      mean_categories=5, category_power=0.2)
    preds = make_predictions(gt, args.dets, seed=args.seed + 1,
                             with_masks=args.segm)
    metrics = ['bbox'] + (['segm', 'boundary'] if args.segm else [])
    classes = [c['name'] for c in sorted(gt['categories'],
                                         key=lambda c: c['id'])]
    sizes = {im['id']: (im['height'], im['width']) for im in gt['images']}
    with tempfile.TemporaryDirectory() as tmp:
        gt_path = osp.join(tmp, 'gt.json')
        with open(gt_path, 'w') as f:
            json.dump(gt, f)
        ours = {}
        for backend in ('fast', 'lvis'):
            m = LVISMetric(ann_file=gt_path, metric=metrics,
                           protocol=['fixed', 'pooled'], backend=backend,
                           max_dets_per_cat=args.k,
                           outfile_prefix=osp.join(tmp, backend))
            m.dataset_meta = dict(classes=classes)
            for p in preds:
                inst = {k: torch.from_numpy(v) for k, v in p.items()
                        if k != 'img_id'}
                m.process({}, [dict(img_id=p['img_id'],
                                    ori_shape=sizes[p['img_id']],
                                    pred_instances=inst)])
            m.evaluate(len(preds))
            # the unrounded summaries, from the per-class file
            res = load_per_class(m.files_written['per_class'])
            ours[backend] = {}
            for iou in metrics:
                s = res.protocols['fixed'][iou]['summary']
                for item in AP_ITEMS:
                    ours[backend][f'{iou}_{protocol_item(item, "fixed")}'] = \
                        s[item]
                for pool, v in res.protocols['pooled'][iou]['summary'].items():
                    item = 'AP' if pool == 'all' else f'AP{pool}'
                    ours[backend][f'{iou}_{protocol_item(item, "pooled")}'] = v
        # every detection, image by image, in the LVIS results format
        cat_ids = np.array(sorted(c['id'] for c in gt['categories']))
        for iou in metrics:
            dets = []
            for p in preds:
                for j in range(len(p['scores'])):
                    x1, y1, x2, y2 = p['bboxes'][j].tolist()
                    d = dict(image_id=p['img_id'],
                             category_id=int(cat_ids[p['labels'][j]]),
                             bbox=[x1, y1, x2 - x1, y2 - y1],
                             score=float(p['scores'][j]))
                    if iou != 'bbox':
                        import pycocotools.mask as mask_util
                        rle = mask_util.encode(np.asfortranarray(
                            p['masks'][j][:, :, None].astype(np.uint8)))[0]
                        d['segmentation'] = dict(
                            size=rle['size'], counts=rle['counts'].decode())
                    dets.append(d)
            rows = []
            fixed = official('fixed', args.challenge_repo, gt_path, dets,
                             args.k, iou, tmp)
            for item in AP_ITEMS:
                rows.append((f'{iou}_{protocol_item(item, "fixed")}',
                             fixed[item]))
            if iou != 'boundary':
                pooled = official('pooled', args.devil_repo, gt_path,
                                  per_category_topk(dets, args.k), args.k,
                                  iou, tmp)
                for pool in ('all', 'r', 'c', 'f'):
                    item = 'AP' if pool == 'all' else f'AP{pool}'
                    rows.append((f'{iou}_{protocol_item(item, "pooled")}',
                                 pooled[f'AP-pooled-{pool}']))
            print(f'\n{iou}: {len(dets)} detections, top {args.k} per '
                  f'category')
            print(f'{"":<22}{"official":>12}{"fast":>12}{"lvis":>12}')
            worst = 0.0
            for key, ref in rows:
                vals = [ours[b][key] for b in ('fast', 'lvis')]
                worst = max([worst] + [abs(v - ref) for v in vals])
                print(f'{key:<22}{ref:>12.6f}' +
                      ''.join(f'{v:>12.6f}' for v in vals))
            print(f'largest |ours - official|: {worst:.2e}')


if __name__ == '__main__':
    main()
