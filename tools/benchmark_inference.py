"""Per-image test time after the backbone, stock mmdet path vs mmlongtail's,
stage by stage, for the full LVIS Mask R-CNN config (random weights).

Stages, measured side by side in one run on the same inputs (median of
``--repeats``, stock and ours alternating):

* ``scores + decode + NMS``: stock = mmdet's ``BBoxHead._predict_by_feat_single``
  (decode all 1000 x 1203 boxes, ``multiclass_nms``); ours =
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
* one training iteration's mask-head time (forward + loss + backward).

Outputs are checked equal (NMS: boxes, scores, labels; masks: RLE bytes;
mask logits and gradients: allclose). Machine load changes absolute times;
the ratios are measured side by side.

Example::

    python tools/benchmark_inference.py --repeats 3 --threads 1
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'seesaw_mask_rcnn_lvis.py')


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
    """Median seconds of both, alternating; the last outputs."""
    ts, to = [], []
    out_s = out_o = None
    for _ in range(repeats):
        t, out_s = _time(stock, device)
        ts.append(t)
        t, out_o = _time(ours, device)
        to.append(t)
    return statistics.median(ts), statistics.median(to), out_s, out_o


def build(config: str, device: str, heads_only: bool = False):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope

    from mmlongtail.apis import build_runner_config
    register_all_modules(init_default_scope=False)
    cfg = build_runner_config(config, work_dir='/tmp/benchmark_inference')
    cfg.model.backbone.init_cfg = None
    stock_mask = dict(cfg.model.roi_head.mask_head)
    stock_mask['type'] = 'FCNMaskHead'
    ours_mask = dict(stock_mask, type='mmlongtail.LabelGatheredFCNMaskHead')
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = None if heads_only else MODELS.build(cfg.model)
        stock_head = MODELS.build(stock_mask)
        ours_head = MODELS.build(ours_mask)
    stock_head.init_weights()
    ours_head.load_state_dict(stock_head.state_dict())
    for m in (stock_head, ours_head):
        m.to(device).eval()
    if model is not None:
        model.init_weights()
        model.roi_head.mask_head = stock_head
        model.to(device).eval()
    return cfg, model, stock_head, ours_head


def _meta(h: int, w: int) -> dict:
    return dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
                pad_shape=(h, w), batch_input_shape=(h, w))


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

    def status(key: str) -> int:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f'no {key} in /proc/self/status')

    # VmHWM is this process's peak RSS (ru_maxrss would carry the parent's
    # peak over exec); reset it where the kernel allows (clear_refs 5)
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        pass
    before = status('VmRSS')
    peak_before = status('VmHWM')
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
    peak = status('VmHWM')
    print(json.dumps(dict(variant=variant, predictor_bytes=out_bytes,
                          peak_increase=max(peak - max(before, peak_before),
                                            0))))


def run_child(variant: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, '--child', variant, '--config',
           args.config]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get(
        'PYTHONPATH', ''))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child_memory(args.child, args)
        return
    from mmengine.config import ConfigDict
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import bbox2roi

    import mmlongtail  # noqa: F401
    from mmlongtail.evaluation.lvis_metric import _compact_rles
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
            return _compact_rles(out.masks)

        def paste_ours():
            res = dets.clone()
            out = ours_head.predict_by_feat((po, ), [res], [meta], rle_cfg,
                                            rescale=True)[0]
            return _compact_rles(out.masks)

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

    print(f'\n| stage | stock mmdet | mmlongtail | stock / ours | output |')
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


if __name__ == '__main__':
    main()
