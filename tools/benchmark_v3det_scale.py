"""V3Det scale (13,204 classes): mmlongtail's R-CNN path beside mmdet's stock
path, in one run.

Three parts (``--parts``), each side by side on the same inputs:

* ``losses``: every classification loss registered in mmlongtail
  (``mmlongtail_bench.v3det.rcnn_loss_configs``) against mmdet's
  ``CrossEntropyLoss`` (sigmoid on ``(N, C)``, softmax on ``(N, C + 1)``),
  forward + backward at ``--rois`` RoIs (25% foreground, labels drawn by
  training image count), with ``label_weights`` and ``avg_factor`` as
  ``BBoxHead`` passes them. Median time over ``--iters`` calls (all losses
  in turn, so machine load falls on all alike) and the peak memory one call
  adds (CPU: increase of the peak RSS of a forked child that made the call;
  CUDA: ``max_memory_allocated``).
* ``nms``: the box head of ``configs/v3det/faster_rcnn_r50_fpn_normed_
  sigmoid_ms_rfs_2x_v3det.py`` (class-agnostic boxes, sigmoid scores) on
  ``--proposals`` proposals: mmdet's ``BBoxHead._predict_by_feat_single``
  (decode, ``multiclass_nms``) against mmlongtail's ``lazy_decode_and_nms``
  (exact early-stopping NMS), at three candidate counts: ``score_thr`` set
  to the 10k-th and 100k-th best score, and the recipe's 1e-4 (random
  logits around -7: most of ``proposals x C`` pass). Outputs checked equal;
  peak memory of each path as above. mmdet's path runs only up to
  ``--stock-max-candidates``: above mmcv's ``split_thr`` its ``batched_nms``
  loops over the classes, each pass scanning every candidate.
* ``metric``: ``mmlongtail.LVISMetric`` on a V3Det-size synthetic val
  (``--images``, default 29,821, categories drawn by the synthetic training
  counts of ``mmlongtail_bench.v3det.v3det_like_stats``, no
  ``neg_category_ids``, as a V3Det file) with ``--dets`` detections per
  image, through ``tools/benchmark_lvis_eval.py``'s forked runner: the fast
  backend at full size, and both the fast backend and the stock path
  (lvis-api 0.5.3, which mmdet's ``LVISMetric`` runs) on the first
  ``--stock-images`` images. lvis-api visits every (category, area range,
  image) triple in Python: 13,204 x 4 x 29,821 = 1.6G calls at full size,
  which is why it runs on a subset.

Usage::

    python tools/benchmark_v3det_scale.py                  # full size
    python tools/benchmark_v3det_scale.py --images 3000 --stock-images 1000
    python tools/benchmark_v3det_scale.py --parts losses --device cuda
"""
import argparse
import multiprocessing as mp
import os
import os.path as osp
import runpy
import statistics
import tempfile
import time
from typing import Callable, Dict, List

import torch

from mmlongtail_bench.memory import (proc_status, reset_peak_rss,
                                     trim_heap)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'v3det',
                  'faster_rcnn_r50_fpn_normed_sigmoid_ms_rfs_2x_v3det.py')
PARTS = ('losses', 'nms', 'metric')


def parse_args(argv=None) -> argparse.Namespace:
    from mmlongtail_bench.v3det import V3DET_NUM_CLASSES, V3DET_VAL_IMAGES
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--parts', nargs='+', default=list(PARTS), choices=PARTS)
    p.add_argument('--num-classes', type=int, default=V3DET_NUM_CLASSES)
    p.add_argument('--rois', type=int, default=512)
    p.add_argument('--iters', type=int, default=5)
    p.add_argument('--proposals', type=int, default=1000)
    p.add_argument('--nms-repeats', type=int, default=3)
    p.add_argument(
        '--stock-max-candidates', type=int, default=2000000,
        help="run mmdet's NMS only up to this many candidates: above "
        "mmcv's split_thr (10,000) its batched_nms loops over the classes, "
        'each pass scanning every candidate (13,204 x ~11M at score_thr '
        '1e-4), which did not finish in 4 min')
    p.add_argument('--images', type=int, default=V3DET_VAL_IMAGES)
    p.add_argument('--stock-images', type=int, default=1000,
                   help='images of the side-by-side run with lvis-api')
    p.add_argument('--dets', type=int, default=300,
                   help='mean detections per image (300 kept per image)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


# ---------------------------------------------------------------- memory --
def _peak_here(fn: Callable[[], object], device: str) -> int:
    """Bytes of peak memory one call of ``fn`` adds in this process."""
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    trim_heap()  # else the call reuses pages the parent freed: reads low
    reset_peak_rss()
    before = proc_status('VmRSS')
    start_peak = proc_status('VmHWM')
    fn()
    return max(proc_status('VmHWM') - max(before, start_peak), 0)


def _child(conn, fn: Callable[[], object], device: str) -> None:
    # a forked child cannot use the OpenMP threads of its parent (libgomp
    # waits for them forever): one thread, so torch runs no parallel region
    torch.set_num_threads(1)
    conn.send(_peak_here(fn, device))
    conn.close()


def peak_added(fn: Callable[[], object], device: str) -> int:
    """Bytes of peak memory that one call of ``fn`` adds: on CPU in a
    forked child (every contender starts from the same state), on CUDA
    (which does not survive a fork) here."""
    if device.startswith('cuda'):
        return _peak_here(fn, device)
    ctx = mp.get_context('fork')
    rd, wr = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(wr, fn, device))
    proc.start()
    value = rd.recv()
    proc.join()
    return value


def alternating(fns: Dict[str, Callable[[], object]], iters: int,
                device: str) -> Dict[str, float]:
    """Median seconds of each of ``fns``, run in turn ``iters`` times after
    one warm-up round."""
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for it in range(iters + 1):
        for name, fn in fns.items():
            if device.startswith('cuda'):
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device.startswith('cuda'):
                torch.cuda.synchronize()
            if it:
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


# ---------------------------------------------------------------- losses --
def loss_steps(args, stats: dict) -> Dict[str, Callable[[], object]]:
    """One forward + backward of each loss, on shared inputs."""
    from mmdet.models.losses import CrossEntropyLoss

    from mmlongtail.models.losses.protocol import loss_layout
    from mmlongtail.registry import MODELS
    from mmlongtail_bench.v3det import rcnn_loss_configs
    C, n, dev = args.num_classes, args.rois, args.device
    g = torch.Generator().manual_seed(args.seed)
    counts = torch.tensor([c['image_count'] for c in stats['categories']],
                          dtype=torch.float64)
    num_fg = n // 4
    labels = torch.full((n, ), C, dtype=torch.long)
    labels[:num_fg] = torch.multinomial(counts, num_fg, True, generator=g)
    labels = labels.to(dev)
    weights = torch.ones(n, device=dev)
    logits = {}

    def x_of(width: int) -> torch.Tensor:
        if width not in logits:
            logits[width] = (torch.randn(n, width, generator=g) * 2).to(dev)
        return logits[width]

    def step(loss, width):
        x0 = x_of(width)

        def run():
            x = x0.detach().requires_grad_()
            out = loss(x, labels, weights, avg_factor=float(n))
            if isinstance(out, dict):
                out = sum(out.values())
            out.backward()
        return run

    steps = {
        'mmdet CrossEntropyLoss (sigmoid, C)':
        step(CrossEntropyLoss(use_sigmoid=True), C),
        'mmdet CrossEntropyLoss (softmax, C + 1)':
        step(CrossEntropyLoss(), C + 1),
    }
    for name, cfg in rcnn_loss_configs(C, stats).items():
        loss = MODELS.build(cfg).to(dev)
        steps[name] = step(loss, loss_layout(loss, C).num_outputs)
    return steps


def losses_part(args, stats: dict) -> None:
    steps = loss_steps(args, stats)
    times = alternating(steps, args.iters, args.device)
    peaks = {k: peak_added(fn, args.device) for k, fn in steps.items()}
    floor = peak_added(lambda: None, args.device)
    ref = times['mmdet CrossEntropyLoss (softmax, C + 1)']
    print(f'\nLosses, forward + backward, {args.rois} RoIs x '
          f'{args.num_classes} classes ({args.device}; median of '
          f'{args.iters}):')
    print(f'{"loss":<42}{"ms":>10}{"x softmax CE":>14}{"peak MiB":>10}')
    print(f'{"(a call that does nothing)":<42}{"":>10}{"":>14}'
          f'{floor / 2**20:>10.1f}')
    for k in steps:
        print(f'{k:<42}{times[k] * 1e3:>10.1f}{times[k] / ref:>14.2f}'
              f'{peaks[k] / 2**20:>10.1f}')


# ------------------------------------------------------------------- NMS --
def nms_part(args) -> None:
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict
    from mmengine.registry import DefaultScope

    from mmlongtail.apis import build_runner_config
    from mmlongtail.models.utils import lazy_decode_and_nms
    register_all_modules(init_default_scope=False)
    cfg = build_runner_config(CONFIG, work_dir=tempfile.gettempdir())
    head_cfg = cfg.model.roi_head.bbox_head
    head_cfg.num_classes = args.num_classes
    head_cfg.loss_cls.num_classes = args.num_classes
    with DefaultScope.overwrite_default_scope('mmdet'):
        head = MMDET_MODELS.build(head_cfg).to(args.device).eval()
    n, C, dev = args.proposals, args.num_classes, args.device
    g = torch.Generator().manual_seed(args.seed + 1)
    h, w = 800, 1333
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3]) + 8
    rois = torch.cat([torch.zeros(n, 1), xy, xy + wh], 1).to(dev)
    bbox_pred = (torch.randn(n, 4, generator=g) * 0.1).to(dev)
    cls_score = (torch.randn(n, C, generator=g) * 2 - 7).to(dev)
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.))
    rcnn = ConfigDict(cfg.model.test_cfg.rcnn)
    with torch.no_grad():
        scores = head.loss_cls.get_activation(cls_score)
    flat = scores[:, :-1].reshape(-1)
    print(f'\nNMS, {n} proposals x {C} classes, class-agnostic boxes '
          f'({dev}; median of {args.nms_repeats}):')
    print(f'{"candidates":<14}{"stock s":>10}{"ours s":>10}{"stock/ours":>12}'
          f'{"stock MiB":>11}{"ours MiB":>10}  outputs')
    for density in (10000, 100000, 0):
        if 0 < density < flat.numel():
            thr = float(flat.topk(density).values[-1])
            thr = float(torch.nextafter(torch.tensor(thr), torch.tensor(0.)))
        else:
            thr = float(rcnn.score_thr)
        test_cfg = ConfigDict(dict(rcnn, score_thr=thr))
        n_cand = int((flat > thr).sum())

        def stock(test_cfg=test_cfg):
            with torch.no_grad():
                return head._predict_by_feat_single(
                    rois[:, :], cls_score, bbox_pred, meta, rescale=False,
                    rcnn_test_cfg=test_cfg)

        def ours(test_cfg=test_cfg):
            with torch.no_grad():
                s = head.loss_cls.get_activation(cls_score)
                return lazy_decode_and_nms(head, rois, bbox_pred, s, meta,
                                           False, test_cfg)

        if n_cand > args.stock_max_candidates:
            t = alternating(dict(ours=ours), args.nms_repeats, dev)
            ro = ours()
            mo = peak_added(ours, dev)
            print(f'{n_cand:<14,}{"not run":>10}{t["ours"]:>10.3f}{"":>12}'
                  f'{"":>11}{mo / 2**20:>10.1f}  ({len(ro)} kept; stock '
                  'over --stock-max-candidates)')
            continue
        t = alternating(dict(stock=stock, ours=ours), args.nms_repeats, dev)
        rs, ro = stock(), ours()
        same = (torch.equal(rs.bboxes, ro.bboxes)
                and torch.equal(rs.scores, ro.scores)
                and torch.equal(rs.labels, ro.labels))
        ms, mo = peak_added(stock, dev), peak_added(ours, dev)
        print(f'{n_cand:<14,}{t["stock"]:>10.3f}{t["ours"]:>10.3f}'
              f'{t["stock"] / t["ours"]:>12.1f}{ms / 2**20:>11.1f}'
              f'{mo / 2**20:>10.1f}  '
              f'{"identical" if same else "DIFFERENT"} ({len(ro)} kept)')


# ---------------------------------------------------------------- metric --
def _subset(gt: dict, num_images: int) -> dict:
    images = gt['images'][:num_images]
    keep = {im['id'] for im in images}
    return dict(gt, images=images,
                annotations=[a for a in gt['annotations']
                             if a['image_id'] in keep])


def metric_part(args, stats: dict) -> None:
    import json

    from mmengine.logging import MMLogger

    from mmlongtail_bench.synthetic import make_lvis_gt, make_predictions
    evalbench = runpy.run_path(
        osp.join(ROOT, 'tools', 'benchmark_lvis_eval.py'))
    MMLogger.get_instance('benchmark_v3det_scale', log_level='WARNING')
    t = time.perf_counter()
    gt = make_lvis_gt(args.images, stats, num_neg=0, not_exhaustive_prob=0.0,
                      seed=args.seed)
    preds = make_predictions(gt, args.dets, seed=args.seed + 1)
    classes = [c['name'] for c in sorted(gt['categories'],
                                         key=lambda c: c['id'])]
    n_det = sum(len(p['scores']) for p in preds)
    print(f'\nLVIS metric (bbox, standard protocol): generated '
          f'{len(gt["images"])} images, {len(gt["annotations"])} boxes of '
          f'{len({a["category_id"] for a in gt["annotations"]})} of '
          f'{len(classes)} classes, {n_det} detections in '
          f'{time.perf_counter() - t:.0f} s; no neg_category_ids (a V3Det '
          'file)')
    small = min(args.stock_images, args.images)
    runs = {}
    # the runner forks: its children must not enter the OpenMP parallel
    # regions whose threads only this process has (libgomp would hang)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        sets = [(args.images, 'fast')] if small < args.images else []
        sets += [(small, 'fast'), (small, 'lvis')]
        for num, backend in sets:
            sub = _subset(gt, num)
            ann_file = osp.join(tmp, f'val_{num}.json')
            if not osp.exists(ann_file):
                with open(ann_file, 'w') as f:
                    json.dump(sub, f)
            samples = evalbench['to_samples'](preds[:num],
                                              dict(images=sub['images']))
            runs[num, backend] = evalbench['run_forked'](
                backend, 'standard', 10000, ann_file, classes, samples)
    torch.set_num_threads(threads)
    print(f'{"images / backend":<26}{"process s":>11}{"evaluate s":>12}'
          f'{"total s":>10}{"CPU s":>9}{"peak GiB":>10}{"added GiB":>11}'
          f'{"bbox_AP":>9}')
    for (num, backend), r in runs.items():
        name = f'{num} / {backend}' + (' (lvis-api)'
                                       if backend == 'lvis' else '')
        print(f'{name:<26}{r["process"]:>11.2f}{r["evaluate"]:>12.2f}'
              f'{r["total"]:>10.2f}{r["cpu"]:>9.2f}{r["peak_gb"]:>10.2f}'
              f'{r["peak_gb"] - r["start_gb"]:>11.2f}'
              f'{r["metrics"].get("lvis/bbox_AP", float("nan")):>9.3f}')
    fast, stock = runs[small, 'fast'], runs[small, 'lvis']
    ratio = stock['total'] / max(fast['total'], 1e-9)
    print(f'{small} images: lvis-api / fast time {ratio:.1f}x; metrics '
          f'identical: {fast["metrics"] == stock["metrics"]}')


def main(argv=None) -> None:
    args = parse_args(argv)
    from mmlongtail_bench.v3det import v3det_like_stats
    stats = v3det_like_stats(args.num_classes, seed=args.seed)
    print(f'V3Det scale: {args.num_classes} classes; torch '
          f'{torch.__version__}, {torch.get_num_threads()} threads, '
          f'os.cpu_count()={os.cpu_count()}, device {args.device}')
    if 'losses' in args.parts:
        losses_part(args, stats)
    if 'nms' in args.parts:
        nms_part(args)
    if 'metric' in args.parts:
        metric_part(args, stats)


if __name__ == '__main__':
    main()
