"""Dense-head classification losses at LVIS scale: fwd+bwd time and peak
memory, side by side in one run.

Cases, each built from the loss config of the configs users run
(``model.bbox_head.loss_cls`` of ``--focal-config`` and ``--efl-config``):

* ``mmdet_focal``: mmdet 3.3's ``FocalLoss`` with the focal config's
  ``gamma`` / ``alpha`` / ``loss_weight`` (its python path on CPU, mmcv's
  fused op on CUDA);
* ``focal``, ``focal_old``: ``mmlongtail.FocalLoss`` as configured (lean)
  and with ``lean=False`` (the autograd formula it used before);
* ``efl``, ``efl_old``: ``mmlongtail.EqualizedFocalLoss`` likewise.

One step is what a RetinaNet head does: one loss call per FPN level on that
level's ``(H * W * 9, C)`` logits, with ``(N,)`` labels (mostly background,
a few ignored anchors of weight 0) and ``avg_factor`` = the number of
positives; the level losses are summed and backpropagated into the logits.
Level sizes are those of an ``--height`` x ``--width`` input (800 x 1333)
at strides 8..128 (``--levels`` finest levels, sides times ``--scale``).

Memory: on CPU the peak resident set size during the first step minus the
resident size before it (``VmHWM`` reset through ``/proc/self/clear_refs``;
the inputs and the logits' gradient buffers count for every case alike);
on CUDA ``torch.cuda.max_memory_allocated`` above the allocation before it.
Each case runs in a fresh subprocess (``--isolate process``, the default)
so that no case inherits another's allocator state. Time: median of
``--repeats`` further steps (the first step's time when 0).

Example (full size, about 20 minutes and 8 GB on 2 CPU cores)::

    nice python tools/benchmark_dense_losses.py --repeats 1

    python tools/benchmark_dense_losses.py --levels 2 --scale 0.25
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from mmlongtail_bench.memory import proc_status, reset_peak_rss

CASES = ('mmdet_focal', 'focal_old', 'focal', 'efl_old', 'efl')
STRIDES = (8, 16, 32, 64, 128)
ANCHORS_PER_POSITION = 9
#: Fractions of the anchors that are positive / ignored (weight 0).
POSITIVE_FRACTION = 0.002
IGNORED_FRACTION = 0.01


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--focal-config',
                        default='configs/focal/'
                        'focal_retinanet_r50_fpn_ms_rfs_2x_lvis.py')
    parser.add_argument('--efl-config',
                        default='configs/efl/'
                        'efl_retinanet_r50_fpn_ms_rfs_2x_lvis.py')
    parser.add_argument('--cases', nargs='+', default=list(CASES),
                        choices=CASES)
    parser.add_argument('--levels', type=int, default=len(STRIDES),
                        help='the finest N FPN levels (default: all 5)')
    parser.add_argument('--scale', type=float, default=1.0,
                        help='multiplies the input height and width')
    parser.add_argument('--height', type=int, default=800)
    parser.add_argument('--width', type=int, default=1333)
    parser.add_argument('--repeats', type=int, default=2,
                        help='timed steps after the measured first one')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1)')
    parser.add_argument('--isolate', choices=('process', 'none'),
                        default='process',
                        help="'none' runs every case in this process "
                        '(faster; memory figures then less clean)')
    parser.add_argument('--json', default=None,
                        help='also write the results to this file')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.levels <= len(STRIDES):
        parser.error(f'--levels must be in [1, {len(STRIDES)}], got '
                     f'{args.levels}')
    if args.scale <= 0:
        parser.error(f'--scale must be > 0, got {args.scale}')
    return args


def level_sizes(args: argparse.Namespace) -> List[int]:
    """Anchors of each level: ceil(side * scale / stride) per side."""
    h, w = args.height * args.scale, args.width * args.scale
    return [
        math.ceil(h / s) * math.ceil(w / s) * ANCHORS_PER_POSITION
        for s in STRIDES[:args.levels]
    ]


# ----------------------------------------------------------------------------
# one case (in the child process)
def build_case(case: str, args: argparse.Namespace):
    """``(loss module, num_classes)`` from the configs' loss_cls."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import mmlongtail  # noqa: F401  (registers mmlongtail.*)
    config = args.efl_config if case.startswith('efl') else \
        args.focal_config
    cfg = Config.fromfile(config)
    loss_cfg = cfg.model.bbox_head.loss_cls.to_dict()
    num_classes = int(cfg.model.bbox_head.num_classes)
    if case == 'mmdet_focal':
        loss_cfg = dict(type='FocalLoss', use_sigmoid=True,
                        gamma=loss_cfg['gamma'], alpha=loss_cfg['alpha'],
                        loss_weight=loss_cfg.get('loss_weight', 1.0))
    elif case.endswith('_old'):
        loss_cfg['lean'] = False
    with DefaultScope.overwrite_default_scope('mmdet'):
        loss = MODELS.build(loss_cfg)
    return loss, num_classes


def make_inputs(sizes: List[int], num_classes: int, device: str, seed: int):
    """Per level: logits near the focal prior (p = 0.01), labels, weights,
    avg_factor (the level's positives)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    levels = []
    for n in sizes:
        x = torch.randn(n, num_classes, generator=g).mul_(1.5).sub_(4.6)
        labels = torch.full((n, ), num_classes, dtype=torch.long)
        u = torch.rand(n, generator=g)
        pos = u < POSITIVE_FRACTION
        labels[pos] = torch.randint(0, num_classes, (int(pos.sum()), ),
                                    generator=g)
        weights = (u >= 1 - IGNORED_FRACTION).logical_not().float()
        avg = max(float(pos.sum()), 1.0)
        levels.append((x.to(device), labels.to(device),
                       weights.to(device), avg))
    return levels


class Memory:
    """Peak memory above the level at :meth:`start` (bytes)."""

    def __init__(self, device: str) -> None:
        import torch
        self.cuda = device.startswith('cuda')
        self.torch = torch

    def start(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.base = self.torch.cuda.memory_allocated()
            return
        reset_peak_rss()
        self.base = proc_status('VmRSS')

    def peak(self) -> int:
        if self.cuda:
            self.torch.cuda.synchronize()
            return self.torch.cuda.max_memory_allocated() - self.base
        return proc_status('VmHWM') - self.base


def run_case(case: str, args: argparse.Namespace) -> Dict:
    """Build the case's loss, then one measured and ``repeats`` timed
    steps."""
    import torch
    torch.set_num_threads(args.threads)
    loss, num_classes = build_case(case, args)
    loss = loss.to(args.device)
    sizes = level_sizes(args)
    # warm up on a small input (lazy imports, kernels)
    warm = make_inputs([64], num_classes, args.device, args.seed + 1)
    step(loss, warm, args.device)
    levels = make_inputs(sizes, num_classes, args.device, args.seed)
    memory = Memory(args.device)
    memory.start()
    first, value = step(loss, levels, args.device)
    peak = memory.peak()
    times = [step(loss, levels, args.device)[0] for _ in range(args.repeats)]
    return dict(case=case, loss=type(loss).__name__, peak_bytes=peak,
                time_s=statistics.median(times) if times else first,
                first_step_s=first, value=value, anchors=sum(sizes),
                num_classes=num_classes)


def step(loss, levels, device: str) -> Tuple[float, float]:
    """One fwd+bwd over the levels: ``(seconds, loss value)``."""
    import torch
    xs = [x.requires_grad_(True) for x, _, _, _ in levels]
    for x in xs:
        x.grad = None
    sync = torch.cuda.synchronize if device.startswith('cuda') else \
        (lambda: None)
    sync()
    start = time.perf_counter()
    total = sum(
        loss(x, labels, weights, avg_factor=avg)
        for x, (_, labels, weights, avg) in zip(xs, levels))
    total.backward()
    sync()
    seconds = time.perf_counter() - start
    for x in xs:
        x.grad = None
    return seconds, float(total.detach())


# ----------------------------------------------------------------------------
# the side-by-side table (parent)
def run_all(args: argparse.Namespace, argv: List[str]) -> List[Dict]:
    results = []
    for case in args.cases:
        if args.isolate == 'none':
            results.append(run_case(case, args))
            continue
        cmd = [sys.executable, os.path.abspath(__file__)] + argv + [
            '--child', case
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f'case {case} failed (exit {proc.returncode}):\n'
                f'{proc.stderr[-3000:]}')
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def report(results: List[Dict], args: argparse.Namespace) -> List[str]:
    by = {r['case']: r for r in results}
    lines = [
        f'{len(level_sizes(args))} levels {level_sizes(args)} anchors, '
        f'{results[0]["num_classes"]} classes, device {args.device}, '
        f'{args.threads} thread(s)',
        f'{"case":<12} {"peak MB":>9} {"time s":>8} {"loss":>10} '
        f'{"mem/old":>8} {"time/mmdet":>10}'
    ]
    for r in results:
        old = by.get(r['case'] + '_old') or by.get(r['case'])
        mem_ratio = r['peak_bytes'] / max(old['peak_bytes'], 1)
        mmdet = by.get('mmdet_focal')
        t_ratio = (f'{r["time_s"] / mmdet["time_s"]:10.2f}'
                   if mmdet else f'{"-":>10}')
        lines.append(
            f'{r["case"]:<12} {r["peak_bytes"] / 2**20:9.1f} '
            f'{r["time_s"]:8.2f} {r["value"]:10.5f} {mem_ratio:8.3f} '
            f'{t_ratio}')
    return lines


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', str(args.threads))
    if args.child:
        print(json.dumps(run_case(args.child, args)))
        return
    results = run_all(args, argv)
    for line in report(results, args):
        print(line)
    print('mem/old: peak memory over the same loss with lean=False; '
          'time/mmdet: fwd+bwd time over mmdet FocalLoss')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), results=results), f, indent=1)


if __name__ == '__main__':
    main()
