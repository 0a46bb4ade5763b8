"""Time a DINO head's per-image prediction: mmdet's vs the Fixed-AP mode.

Builds the box head of a DINO config at LVIS size (1203 classes, the
config's 900 queries, batch 1) three times with the same weights:

* ``stock``: mmdet's ``DINOHead`` (the image's top ``max_per_img`` of
  queries x classes);
* ``ours``: ``mmlongtail.LongTailDINOHead`` with the config's test_cfg
  (the same selection; its output is checked to be identical to stock's);
* ``fixed``: ``mmlongtail.LongTailDINOHead`` in the Fixed-AP mode
  (``max_per_img=-1, topk_per_class=k``: each class's best k queries).

It runs the head's forward once on random decoder states to get the last
layer's logits and boxes, then times ``predict_by_feat`` (scores, selection,
box decoding) of each, side by side in one run (medians, round-robin, see
``mmlongtail_bench.timing.time_interleaved``) and prints the ratio
fixed / stock. The config defaults to the first ``configs/dino/*.py`` when
that folder exists, else mmdet's own
``dino-4scale_r50_8xb2-12e_coco.py`` with ``num_classes=1203``.

Example::

    python tools/benchmark_query_predict.py --topk-per-class 300
"""
import argparse
import copy
import glob
import os
import os.path as osp
import platform
from typing import List, Optional

import torch
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config

import mmlongtail  # noqa: F401  (registers the heads)
from mmlongtail_bench.timing import time_interleaved

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
NUM_CLASSES = 1203


def default_config() -> str:
    """The first config of ``configs/dino/``, else mmdet's DINO 4-scale."""
    ours = sorted(glob.glob(osp.join(ROOT, 'configs', 'dino', 'dino*.py')))
    if ours:
        return ours[0]
    import mmdet
    return osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', 'dino',
                    'dino-4scale_r50_8xb2-12e_coco.py')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=None,
                        help='a DINO config (default: see the docstring)')
    parser.add_argument('--topk-per-class', type=int, default=300)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument(
        '--devices', nargs='+', default=None,
        help='default: cpu, and cuda when available')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def head_config(path: str) -> dict:
    """The config's ``bbox_head`` as the DINO detector builds it (its
    ``train_cfg`` / ``test_cfg``, one prediction layer per decoder layer
    plus the encoder's), with ``num_classes=1203``."""
    model = Config.fromfile(path).model
    if model.type != 'DINO':
        raise ValueError(f'{path} is a {model.type} config, not DINO')
    head = copy.deepcopy(model.bbox_head.to_dict())
    head.update(num_classes=NUM_CLASSES,
                train_cfg=model.get('train_cfg'),
                test_cfg=model.get('test_cfg'),
                share_pred_layer=not model.with_box_refine,
                num_pred_layer=model.decoder.num_layers +
                int(model.as_two_stage),
                as_two_stage=model.as_two_stage)
    loss = head['loss_cls']
    if 'num_classes' in loss:
        loss['num_classes'] = NUM_CLASSES
    head['num_queries'] = model.num_queries
    head['num_decoder_layers'] = model.decoder.num_layers
    return head


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench(cfg: dict, device: torch.device, args: argparse.Namespace):
    cfg = dict(cfg)
    num_queries = cfg.pop('num_queries')
    num_layers = cfg.pop('num_decoder_layers')
    test_cfg = dict(cfg['test_cfg'] or {})
    for key in ('score_calibration', 'topk_per_class', 'score_thr'):
        test_cfg.pop(key, None)  # mmdet's head ignores them: time alike
    stock_type = 'DINOHead'
    torch.manual_seed(args.seed)
    stock = MODELS.build(dict(cfg, type=stock_type, test_cfg=test_cfg))
    stock.init_weights()
    ours = MODELS.build(dict(cfg, type='mmlongtail.LongTailDINOHead',
                             test_cfg=test_cfg))
    fixed = MODELS.build(dict(
        cfg, type='mmlongtail.LongTailDINOHead',
        test_cfg=dict(test_cfg, max_per_img=-1,
                      topk_per_class=args.topk_per_class)))
    for head in (ours, fixed):
        head.load_state_dict(stock.state_dict())
    heads = dict(stock=stock, ours=ours, fixed=fixed)
    for head in heads.values():
        head.to(device).eval()
    gen = torch.Generator().manual_seed(args.seed)
    hidden = torch.randn(num_layers, 1, num_queries, stock.embed_dims,
                         generator=gen).to(device)
    refs = [torch.rand(1, num_queries, 4, generator=gen).to(device)
            for _ in range(num_layers + 1)]
    metas = [dict(img_shape=(800, 1333), scale_factor=(1.0, 1.0))]
    with torch.no_grad():
        cls_scores, bbox_preds = stock(hidden, refs)

    def step(head):
        def run():
            with torch.no_grad():
                return head.predict_by_feat(cls_scores, bbox_preds, metas,
                                            rescale=True)[0]
        return run

    steps = {name: step(head) for name, head in heads.items()}
    a, b, f = steps['stock'](), steps['ours'](), steps['fixed']()
    same = all(torch.equal(a[k], b[k]) for k in ('bboxes', 'scores',
                                                 'labels'))
    times = time_interleaved(steps, device, args.iters, args.warmup)
    return times, same, len(a), len(f)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    register_all_modules()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path = args.config or default_config()
    cfg = head_config(path)
    devices = args.devices or (['cpu', 'cuda']
                               if torch.cuda.is_available() else ['cpu'])
    print(f'torch {torch.__version__}, python {platform.python_version()}, '
          f'CPU {cpu_model()} (os.cpu_count()={os.cpu_count()}, torch '
          f'threads {torch.get_num_threads()})')
    if torch.cuda.is_available() and any(
            d.startswith('cuda') for d in devices):
        print(f'CUDA device: {torch.cuda.get_device_name()}')
    shown = osp.relpath(path, ROOT) if path.startswith(ROOT) else path
    print(f'config {shown}: {cfg["num_queries"]} queries x {NUM_CLASSES} '
          'classes, batch 1, '
          f'loss {cfg["loss_cls"]["type"]}; median of {args.iters} calls of '
          f'predict_by_feat after {args.warmup} warm-up (ms)')
    header = (f'{"device":<8}{"stock":>9}{"ours":>9}{"fixed":>9}'
              f'{"fixed/stock":>13}{"dets stock":>12}{"dets fixed":>12}'
              f'{"ours==stock":>13}')
    print(header)
    print('-' * len(header))
    for name in devices:
        t, same, n_stock, n_fixed = bench(cfg, torch.device(name), args)
        print(f'{name:<8}{t["stock"]:>9.2f}{t["ours"]:>9.2f}'
              f'{t["fixed"]:>9.2f}{t["fixed"] / t["stock"]:>12.1f}x'
              f'{n_stock:>12}{n_fixed:>12}{str(same):>13}')
    print(f'stock: mmdet DINOHead (top max_per_img of queries x classes); '
          f'ours: mmlongtail.LongTailDINOHead, same test_cfg; fixed: '
          f'LongTailDINOHead with max_per_img=-1, topk_per_class='
          f'{args.topk_per_class} (Fixed AP).')


if __name__ == '__main__':
    main()
