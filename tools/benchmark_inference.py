"""Per-image test time after the backbone, stock mmdet path vs mmlongtail's,
stage by stage, for the full LVIS Mask R-CNN config (random weights).

Stages, measured side by side in one run on the same inputs (median of
``--repeats``, stock and ours alternating):

* ``scores + decode + NMS``: stock = mmdet's
  ``BBoxHead._predict_by_feat_single`` (decode all 1000 x 1203 boxes,
  ``multiclass_nms``); ours =
  ``lazy_decode_and_nms`` (exact early-stopping NMS, lazy decode). Three
  candidate densities: ``score_thr`` is set to the 10k-th / 100k-th best
  score, and 1e-4 (LVIS's; with random weights every class of every proposal
  passes it, the worst case, 1.2M);
* ``mask head``: stock = ``FCNMaskHead`` (all 1203 channels); ours =
  ``LabelGatheredFCNMaskHead`` with the same weights (the predicted label's
  channel), on the 300 detections' RoI features;
* ``paste + encode``: stock = ``FCNMaskHead.predict_by_feat`` (full-image
  bitmaps) + the metric's RLE encoding; ours = box-local paste + RLE;
* peak memory of the mask head (test: 300 RoIs; train: 256 positives, one
  forward + backward), as the peak-RSS increase of a fresh child process per
  variant;
* one training iteration's mask-head time (forward + loss + backward);
* ``mask heads``: the test-time mask head (300 RoIs) of each of
  ``--mask-configs``, built as those configs build it (by default the plain
  ``Conv`` predictor of ``mask_rcnn_r50_fpn_ms_1x_lvis.py`` and the Norm Mask
  predictor of ``seesaw_mask_rcnn_lvis.py``), against ``FCNMaskHead`` with
  the same arguments and weights;
* ``paste many``: the Fixed-AP case, ``--paste-dets`` detections on one
  ``--paste-height`` x ``--paste-width`` image: stock = ``FCNMaskHead``'s
  full-image bitmaps + the metric's RLE encoding, ours = box-local paste +
  RLE, each in a fresh child process (time, and peak RSS increase over the
  inputs, per detection).

Outputs are checked equal (NMS: boxes, scores, labels; masks: RLE bytes;
mask logits and gradients: allclose). Machine load changes absolute times;
the ratios are measured side by side.

Example::

    python tools/benchmark_inference.py --repeats 3 --threads 1
    python tools/benchmark_inference.py --stages mask-heads paste-many

Only public names of mmlongtail are used.
"""
import argparse
import glob
import hashlib
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch

from mmlongtail_bench.memory import proc_status

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'seesaw_mask_rcnn_lvis.py')
#: The configs whose mask heads are compared by default, by file name (the
#: method configs live in folders under configs/): a plain ``Conv``
#: predictor and a Norm Mask one.
MASK_CONFIG_NAMES = ('mask_rcnn_r50_fpn_ms_1x_lvis.py',
                     'seesaw_mask_rcnn_lvis.py')
STAGES = ('pipeline', 'mask-heads', 'paste-many', 'memory')


def find_config(name: str) -> str:
    """The one config under configs/ (any folder, not _base_) named
    ``name``; a path that exists is returned as is."""
    if osp.exists(name):
        return name
    found = [
        p for p in glob.glob(osp.join(ROOT, 'configs', '**', name),
                             recursive=True)
        if '_base_' not in p and 'benchmark' not in p
    ]
    if len(found) != 1:
        raise FileNotFoundError(
            f'{len(found)} configs named {name!r} under '
            f'{osp.join(ROOT, "configs")} ({found}); pass a path')
    return found[0]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--height', type=int, default=800)
    parser.add_argument('--width', type=int, default=1088)
    parser.add_argument('--densities', type=int, nargs='+',
                        default=[10_000, 100_000, -1],
                        help='candidates above the threshold; -1: '
                        'score_thr 1e-4 (all, with random weights)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--stages', nargs='+', choices=STAGES,
                        default=list(STAGES))
    parser.add_argument('--mask-configs', nargs='+',
                        default=list(MASK_CONFIG_NAMES),
                        help='configs (paths or file names under configs/) '
                        'whose mask heads are timed')
    parser.add_argument('--mask-rois', type=int, default=300)
    parser.add_argument('--paste-dets', type=int, default=2000)
    parser.add_argument('--paste-height', type=int, default=800)
    parser.add_argument('--paste-width', type=int, default=1333)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _time(fn: Callable, device: str) -> Tuple[float, object]:
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def side_by_side(stock: Callable, ours: Callable, repeats: int,
                 device: str) -> Tuple[float, float, object, object]:
    """Median seconds of both, alternating; the last outputs
    (:func:`alternating` of the two)."""
    (ts, to), (out_s, out_o) = alternating([stock, ours], repeats, device)
    return ts, to, out_s, out_o


def mask_heads(cfg, device: str):
    """``FCNMaskHead`` (stock) and the config's own mask head (ours, a
    ``LabelGatheredFCNMaskHead``) with the same arguments and weights."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    from mmlongtail.models.mask_heads import LabelGatheredFCNMaskHead
    ours_cfg = cfg.model.roi_head.mask_head
    if isinstance(ours_cfg, (list, tuple)):
        ours_cfg = ours_cfg[0]
    ours_cfg = dict(ours_cfg)
    stock_cfg = dict(ours_cfg, type='FCNMaskHead')
    stock_cfg.pop('inference_chunk_size', None)
    with DefaultScope.overwrite_default_scope('mmdet'):
        stock_head = MODELS.build(stock_cfg)
        ours_head = MODELS.build(ours_cfg)
    if not isinstance(ours_head, LabelGatheredFCNMaskHead):
        raise TypeError(f'the config builds a {type(ours_head).__name__} '
                        'mask head, not mmlongtail.LabelGatheredFCNMaskHead')
    stock_head.init_weights()
    ours_head.load_state_dict(stock_head.state_dict())
    for m in (stock_head, ours_head):
        m.to(device).eval()
    return stock_head, ours_head


def load_config(config: str):
    from mmdet.utils import register_all_modules

    from mmlongtail.apis import build_runner_config
    register_all_modules(init_default_scope=False)
    cfg = build_runner_config(config, work_dir='/tmp/benchmark_inference')
    cfg.model.backbone.init_cfg = None
    return cfg


def alternating(fns: List[Callable], repeats: int,
                device: str) -> Tuple[List[float], List[object]]:
    """Median seconds of each of ``fns``, run in turn ``repeats`` times (so
    machine load falls on all alike); the last outputs."""
    times: List[List[float]] = [[] for _ in fns]
    outs: List[object] = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t, outs[i] = _time(fn, device)
            times[i].append(t)
    return [statistics.median(t) for t in times], outs


def build(config: str, device: str, heads_only: bool = False):
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    cfg = load_config(config)
    stock_head, ours_head = mask_heads(cfg, device)
    model = None
    if not heads_only:
        with DefaultScope.overwrite_default_scope('mmdet'):
            model = MODELS.build(cfg.model)
        model.init_weights()
        model.roi_head.mask_head = stock_head
        model.to(device).eval()
    return cfg, model, stock_head, ours_head


def _meta(h: int, w: int) -> dict:
    return dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
                pad_shape=(h, w), batch_input_shape=(h, w))


def reset_peak() -> None:
    """Reset VmHWM, this process's peak RSS (ru_maxrss would carry the
    parent's peak over exec), where the kernel allows (clear_refs 5)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass


def paste_inputs(n: int, h: int, w: int, seed: int = 0):
    """``n`` detections of one ``h`` x ``w`` image, as a weakly trained model
    gives them in a Fixed-AP pass: boxes with log-uniform sides in [16 px,
    min(h, w) / 2], centred anywhere (clipped to the image), and smooth mask
    logits (7 x 7 noise upsampled to 28 x 28).

    Returns:
        tuple[Tensor, Tensor]: ``(n, 4)`` boxes, ``(n, 1, 28, 28)`` logits.
    """
    import math

    import torch.nn.functional as F
    g = torch.Generator().manual_seed(seed)
    lo, hi = math.log(16), math.log(min(h, w) / 2)
    wh = torch.exp(lo + torch.rand(n, 2, generator=g) * (hi - lo))
    centre = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    boxes = torch.cat([centre - wh / 2, centre + wh / 2], 1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    logits = F.interpolate(
        torch.randn(n, 1, 7, 7, generator=g) * 4, size=(28, 28),
        mode='bilinear', align_corners=False)
    return boxes, logits


def child_paste(variant: str, args: argparse.Namespace) -> None:
    """Time and peak RSS increase of one paste + encode path on the
    ``paste_inputs`` case (run in a fresh process)."""
    from mmengine.config import ConfigDict
    from mmengine.structures import InstanceData

    import mmlongtail  # noqa: F401
    from mmlongtail.evaluation.lvis_detections import compact_rles
    cfg = load_config(args.config)
    stock_head, ours_head = mask_heads(cfg, 'cpu')
    n, h, w = args.paste_dets, args.paste_height, args.paste_width
    boxes, logits = paste_inputs(n, h, w, args.seed)
    stock = variant == 'paste-stock'
    head = stock_head if stock else ours_head
    test_cfg = ConfigDict(dict(cfg.model.test_cfg.rcnn,
                               mask_format='bitmap' if stock else 'rle'))
    res = InstanceData(bboxes=boxes.clone(),
                       labels=torch.zeros(n, dtype=torch.long),
                       scores=torch.ones(n))
    reset_peak()
    before = max(proc_status('VmRSS'), proc_status('VmHWM'))
    t = time.perf_counter()
    with torch.no_grad():
        out = head.predict_by_feat((logits, ), [res], [_meta(h, w)],
                                   test_cfg, rescale=True)[0]
        rles = compact_rles(out.masks)
    seconds = time.perf_counter() - t
    peak = proc_status('VmHWM')
    digest = hashlib.sha1()
    for r in rles:
        digest.update(repr(r['size']).encode() + r['counts'].encode())
    print(json.dumps(dict(variant=variant, seconds=seconds, n=len(rles),
                          peak_increase=max(peak - before, 0),
                          sha1=digest.hexdigest())))


def child_memory(variant: str, args: argparse.Namespace) -> None:
    """Peak RSS increase of one mask-head variant (run in a fresh process)."""
    import mmlongtail  # noqa: F401
    _, _, stock_head, ours_head = build(args.config, 'cpu', heads_only=True)
    head = stock_head if variant.endswith('stock') else ours_head
    c = head.num_classes
    n = 300 if variant.startswith('test') else 256
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(n, 256, 14, 14, generator=g)
    labels = torch.randint(0, c, (n, ), generator=g)
    targets = (torch.rand(n, 28, 28, generator=g) > 0.5).float()

    reset_peak()
    before = proc_status('VmRSS')
    peak_before = proc_status('VmHWM')
    if variant.startswith('test'):
        with torch.no_grad():
            preds = head(feats) if head is stock_head else head(
                feats, labels)
            # as FCNMaskHead._predict_by_feat_single: sigmoid, then the label
            probs = preds.sigmoid()
            if head is stock_head:
                probs = probs[torch.arange(n), labels]
        out_bytes = preds.nbytes * 2  # logits + probabilities
    else:
        head.train()
        preds = head(feats) if head is stock_head else head(feats, labels)
        lab = labels if head is stock_head else torch.zeros_like(labels)
        head.loss_mask(preds, targets, lab).backward()
        out_bytes = preds.nbytes * 2  # logits + their gradient
    peak = proc_status('VmHWM')
    print(json.dumps(dict(variant=variant, predictor_bytes=out_bytes,
                          peak_increase=max(peak - max(before, peak_before),
                                            0))))


def run_child(variant: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, '--child', variant, '--config',
           args.config, '--seed', str(args.seed), '--paste-dets',
           str(args.paste_dets), '--paste-height', str(args.paste_height),
           '--paste-width', str(args.paste_width)]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get(
        'PYTHONPATH', ''))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def pipeline(args: argparse.Namespace) -> None:
    """The whole per-image path after the backbone, stage by stage."""
    from mmengine.config import ConfigDict
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import bbox2roi

    from mmlongtail.evaluation.lvis_detections import compact_rles
    from mmlongtail.models.utils import lazy_decode_and_nms
    dev = args.device
    torch.manual_seed(args.seed)
    cfg, model, stock_head, ours_head = build(args.config, dev)
    h, w = args.height, args.width
    meta = _meta(h, w)
    img = torch.randn(1, 3, h, w, device=dev)
    sample = DetDataSample(metainfo=meta)
    rows: List[Tuple[str, float, float, str]] = []
    totals: Dict[str, Dict[str, float]] = {}

    with torch.no_grad():
        t_backbone, x = _time(lambda: model.extract_feat(img), dev)
        t_rpn, proposals = _time(
            lambda: model.rpn_head.predict(x, [sample], rescale=False), dev)
        rois = bbox2roi([p.bboxes for p in proposals])
        roi_head = model.roi_head
        bbox_head = roi_head.bbox_head
        t_box, bbox_res = _time(lambda: roi_head._bbox_forward(x, rois), dev)
        cls_score, bbox_pred = bbox_res['cls_score'], bbox_res['bbox_pred']
        scores = bbox_head.loss_cls.get_activation(cls_score) \
            if bbox_head.custom_cls_channels else cls_score.softmax(-1)
        flat = scores[:, :-1].reshape(-1)
        rcnn = ConfigDict(cfg.model.test_cfg.rcnn)
        print(f'{rois.size(0)} proposals x {bbox_head.num_classes} classes; '
              f'backbone + neck {t_backbone:.2f} s, RPN {t_rpn:.2f} s, '
              f'box head forward {t_box:.2f} s (shared by both paths)')

        dets_at_worst = None
        for density in args.densities:
            if density > 0:
                thr = float(flat.topk(density).values[-1])
                thr = float(torch.nextafter(torch.tensor(thr),
                                            torch.tensor(0.)))
            else:
                thr = float(rcnn.score_thr)
            n_cand = int((flat > thr).sum())
            test_cfg = ConfigDict(dict(rcnn, score_thr=thr))

            def stock():
                return bbox_head._predict_by_feat_single(
                    rois, cls_score, bbox_pred, meta, rescale=False,
                    rcnn_test_cfg=test_cfg)

            def ours():
                s = bbox_head.loss_cls.get_activation(cls_score) \
                    if bbox_head.custom_cls_channels else \
                    cls_score.softmax(-1)
                return lazy_decode_and_nms(bbox_head, rois, bbox_pred, s,
                                           meta, False, test_cfg)

            ts, to, rs, ro = side_by_side(stock, ours, args.repeats, dev)
            same = (torch.equal(rs.bboxes, ro.bboxes)
                    and torch.equal(rs.scores, ro.scores)
                    and torch.equal(rs.labels, ro.labels))
            rows.append((f'scores + decode + NMS, {n_cand:,} candidates',
                         ts, to, 'identical' if same else 'DIFFERENT'))
            totals[f'{n_cand:,}'] = dict(stock=ts, ours=to)
            dets_at_worst = rs

        dets = dets_at_worst
        n = len(dets)
        mask_rois = bbox2roi([dets.bboxes])
        t_mroi, mask_feats = _time(
            lambda: roi_head.mask_roi_extractor(
                x[:roi_head.mask_roi_extractor.num_inputs], mask_rois), dev)
        labels = dets.labels
        ts, to, ps, po = side_by_side(lambda: stock_head(mask_feats),
                                      lambda: ours_head(mask_feats, labels),
                                      args.repeats, dev)
        close = torch.allclose(ps[torch.arange(n), labels], po[:, 0],
                               rtol=1e-4, atol=1e-4)
        rows.append((f'mask head ({n} RoIs)', ts, to,
                     'allclose' if close else 'DIFFERENT'))
        mask_t = (ts, to)

        bitmap_cfg = ConfigDict(dict(rcnn, mask_format='bitmap'))
        rle_cfg = ConfigDict(dict(rcnn, mask_format='rle'))

        def paste_stock():
            res = dets.clone()
            out = stock_head.predict_by_feat((ps, ), [res], [meta],
                                             bitmap_cfg, rescale=True)[0]
            return compact_rles(out.masks)

        def paste_ours():
            res = dets.clone()
            out = ours_head.predict_by_feat((po, ), [res], [meta], rle_cfg,
                                            rescale=True)[0]
            return compact_rles(out.masks)

        ts, to, rs, ro = side_by_side(paste_stock, paste_ours, args.repeats,
                                      dev)
        rows.append((f'paste + RLE encode ({n} masks)', ts, to,
                     'identical' if rs == ro else 'DIFFERENT'))
        paste_t = (ts, to)

    # one training iteration of the mask head (forward + loss + backward)
    n_pos = 256
    g = torch.Generator(device=dev).manual_seed(1)
    feats = torch.randn(n_pos, 256, 14, 14, device=dev, generator=g)
    tlabels = torch.randint(0, stock_head.num_classes, (n_pos, ),
                            device=dev, generator=g)
    targets = (torch.rand(n_pos, 28, 28, device=dev, generator=g) >
               0.5).float()
    grads = {}

    def train_step(head, gathered):
        head.train()
        head.zero_grad()
        preds = head(feats, tlabels) if gathered else head(feats)
        lab = torch.zeros_like(tlabels) if gathered else tlabels
        head.loss_mask(preds, targets, lab).backward()
        grads[gathered] = head.conv_logits.weight.grad.clone()

    ts, to, _, _ = side_by_side(lambda: train_step(stock_head, False),
                                lambda: train_step(ours_head, True),
                                args.repeats, dev)
    close = torch.allclose(grads[False], grads[True], rtol=1e-4, atol=1e-6)
    rows.append((f'train: mask head fwd + loss + bwd ({n_pos} positives)',
                 ts, to, 'same grads' if close else 'DIFFERENT GRADS'))

    print('\n| stage | stock mmdet | mmlongtail | stock / ours | output |')
    print('|---|---|---|---|---|')
    for name, a, b, note in rows:
        print(f'| {name} | {a:.3f} s | {b:.3f} s | {a / b:.1f}x | {note} |')
    print('\nwhole per-image time after the backbone (box head forward + '
          'scores/decode/NMS + mask RoI features + mask head + paste + '
          'encode):')
    print('| candidates | stock mmdet | mmlongtail | stock / ours |')
    print('|---|---|---|---|')
    for k, v in totals.items():
        a = t_box + v['stock'] + t_mroi + mask_t[0] + paste_t[0]
        b = t_box + v['ours'] + t_mroi + mask_t[1] + paste_t[1]
        print(f'| {k} | {a:.2f} s | {b:.2f} s | {a / b:.1f}x |')


def mask_head_stage(args: argparse.Namespace) -> None:
    """Test-time mask head of each ``--mask-configs`` config, as built from
    it, against ``FCNMaskHead`` with the same arguments and weights."""
    dev = args.device
    rows = []
    for name in args.mask_configs:
        path = find_config(name)
        cfg = load_config(path)
        stock_head, ours_head = mask_heads(cfg, dev)
        mode = ours_head.gather_mode()
        conv = ours_head.conv_logits
        n = args.mask_rois
        g = torch.Generator(device=dev).manual_seed(args.seed)
        feats = torch.randn(n, ours_head.in_channels, 14, 14, device=dev,
                            generator=g)
        labels = torch.randint(0, ours_head.num_classes, (n, ), device=dev,
                               generator=g)

        def ours_nchw():
            # the gather alone: the same head with NCHW convolutions
            ours_head.inference_channels_last = False
            try:
                return ours_head(feats, labels)[:, 0]
            finally:
                ours_head.inference_channels_last = True

        with torch.no_grad():
            (ts, to, tn), (ps, po, pn) = alternating(
                [lambda: stock_head(feats)[torch.arange(n), labels],
                 lambda: ours_head(feats, labels)[:, 0], ours_nchw],
                args.repeats, dev)
        close = torch.allclose(ps, po, rtol=1e-4, atol=1e-4) and \
            torch.allclose(ps, pn, rtol=1e-4, atol=1e-4)
        rows.append((f'{osp.relpath(path, ROOT)}: {type(conv).__module__}.'
                     f'{type(conv).__name__} predictor, gathered as '
                     f'{mode!r}, {n} RoIs x {ours_head.num_classes} classes',
                     ts, to, tn, 'allclose' if close else 'DIFFERENT'))
        del ps, po, pn
    print('\ntest-time mask head (forward and the label channel), each '
          'config\'s own head (as configured: label channel only, channels-'
          'last convolutions) vs FCNMaskHead with its arguments and weights; '
          'last columns: the gather alone (the same head, NCHW):')
    print('| config: predictor | FCNMaskHead | config\'s head | stock / '
          'ours | output | ours, NCHW | stock / ours NCHW |')
    print('|---|---|---|---|---|---|---|')
    for name, a, b, c, note in rows:
        print(f'| {name} | {a:.3f} s | {b:.3f} s | {a / b:.2f}x | {note} | '
              f'{c:.3f} s | {a / c:.2f}x |')


def paste_many_stage(args: argparse.Namespace) -> None:
    """The Fixed-AP case: many detections on one image, paste + encode."""
    stock = run_child('paste-stock', args)
    ours = run_child('paste-ours', args)
    n = args.paste_dets
    same = stock['sha1'] == ours['sha1'] and stock['n'] == ours['n'] == n
    print(f'\npaste + RLE encode, {n} detections on one '
          f'{args.paste_height} x {args.paste_width} image (box sides '
          'log-uniform 16 px .. half the image; fresh process per path; '
          'peak = peak RSS increase over the inputs):')
    print('| path | time | per detection | peak memory | per detection |')
    print('|---|---|---|---|---|')
    for label, r in (('stock: FCNMaskHead full-image bitmaps + metric '
                      'encoding', stock),
                     ('mmlongtail: box-local paste + RLE', ours)):
        print(f'| {label} | {r["seconds"]:.2f} s | '
              f'{r["seconds"] / n * 1e3:.3f} ms | '
              f'{r["peak_increase"] / 2**20:.0f} MiB | '
              f'{r["peak_increase"] / n / 2**10:.1f} KiB |')
    print(f'| stock / ours | {stock["seconds"] / ours["seconds"]:.1f}x | | '
          f'{stock["peak_increase"] / max(ours["peak_increase"], 1):.1f}x | '
          f'| RLEs {"identical" if same else "DIFFERENT"} |')


def memory_stage(args: argparse.Namespace) -> None:
    """Mask-head memory, stock and ours, a fresh process per variant."""
    dev = args.device
    if dev == 'cpu':
        print('\nmask-head memory: predictor activations (logits + their '
              'sigmoid / gradient) and the whole head\'s peak RSS increase '
              '(convs included; fresh process per variant):')
        print('| | stock: predictor | ours: predictor | ratio | stock: head '
              'peak | ours: head peak | ratio |')
        print('|---|---|---|---|---|---|---|')
        for phase in ('test', 'train'):
            a = run_child(f'{phase}-stock', args)
            b = run_child(f'{phase}-ours', args)
            pa, pb = a['predictor_bytes'], b['predictor_bytes']
            ra, rb = a['peak_increase'], b['peak_increase']
            print(f'| {phase} | {pa / 2**20:.0f} MiB | {pb / 2**20:.2f} MiB '
                  f'| {pa / pb:.0f}x | {ra / 2**20:.0f} MiB | '
                  f'{rb / 2**20:.0f} MiB | {ra / max(rb, 1):.1f}x |')
    elif dev.startswith('cuda'):
        stock_head, ours_head = mask_heads(load_config(args.config), dev)
        g = torch.Generator(device=dev).manual_seed(args.seed)
        mask_feats = torch.randn(args.mask_rois, ours_head.in_channels, 14,
                                 14, device=dev, generator=g)
        labels = torch.randint(0, ours_head.num_classes, (args.mask_rois, ),
                               device=dev, generator=g)
        for phase, fn in (('test', lambda h, g: h(mask_feats, labels) if g
                           else h(mask_feats)), ):
            peaks = []
            for head, gathered in ((stock_head, False), (ours_head, True)):
                head.eval()
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                with torch.no_grad():
                    out = fn(head, gathered).sigmoid()
                torch.cuda.synchronize()
                peaks.append(torch.cuda.max_memory_allocated() - base)
                del out
            print(f'CUDA mask head ({phase}) peak allocation: stock '
                  f'{peaks[0] / 2**20:.0f} MiB, ours {peaks[1] / 2**20:.1f} '
                  f'MiB, {peaks[0] / max(peaks[1], 1):.0f}x')


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        if args.child.startswith('paste'):
            child_paste(args.child, args)
        else:
            child_memory(args.child, args)
        return
    import mmlongtail  # noqa: F401
    torch.manual_seed(args.seed)
    if 'pipeline' in args.stages:
        pipeline(args)
    if 'mask-heads' in args.stages:
        mask_head_stage(args)
    if 'paste-many' in args.stages:
        paste_many_stage(args)
    if 'memory' in args.stages:
        memory_stage(args)


if __name__ == '__main__':
    main()
