"""Time forward + backward of ROG's GAP ranking loss, vectorized vs loops.

Compares, in one run and on the same inputs:

* ``loop``: the official algorithm's loop form (a Python loop over the
  classes present and over each class's positives;
  ``mmlongtail_bench/gap_loop.py``, which computes the value and the
  gradient in one pass, as the official ``autograd.Function`` does in its
  forward);
* ``ours``: :func:`mmlongtail.models.losses.gap_loss.gap_loss`, forward and
  ``backward()``;
* ``GAPLoss``: the whole ``mmlongtail.GAPLoss`` (cross-entropy + GAP, with
  its count update) on ``(N, C + 1)`` logits, and ``CE``: mmdet's plain
  ``CrossEntropyLoss`` on the same logits, the floor of a softmax
  classifier.

Before timing it checks that ``ours`` and ``loop`` agree on these inputs
(value and gradient) and prints the largest difference. Labels: a fraction
``--pos-fraction`` of the RoIs (0.25, the R-CNN sampler's) are foreground,
drawn long-tailed (class ``k`` with probability ~ ``1 / (k + 1)``); logits
are ``2 * randn``. Timings are medians over ``--iters`` calls after
``--warmup``, run round-robin so that load changes hit every contender
alike; on CUDA each timed call is synchronized.

Example::

    python tools/benchmark_gap_loss.py --num-rois 512 --num-classes 1203
"""
import argparse
import os
import platform
from typing import List, Optional

import torch
from mmdet.models.losses import CrossEntropyLoss

from mmlongtail.models.losses import GAPLoss
from mmlongtail.models.losses.gap_loss import gap_class_weights, gap_loss
from mmlongtail_bench.gap_loop import gap_loop
from mmlongtail_bench.timing import time_interleaved

LAM, DELTA, GAMMA = 0.1, 0.5, 1.0


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-rois', type=int, default=512)
    parser.add_argument('--num-classes', type=int, default=1203)
    parser.add_argument('--pos-fraction', type=float, default=0.25)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument(
        '--devices',
        nargs='+',
        default=None,
        help='default: cpu, and cuda when available')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def cpu_model() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_inputs(num_rois: int, num_classes: int, pos_fraction: float,
                seed: int, device: torch.device):
    gen = torch.Generator().manual_seed(seed)
    c = num_classes
    logits = torch.randn(num_rois, c + 1, generator=gen) * 2
    num_pos = int(round(num_rois * pos_fraction))
    probs = 1.0 / torch.arange(1, c + 1, dtype=torch.float)
    labels = torch.full((num_rois, ), c, dtype=torch.long)
    labels[:num_pos] = torch.multinomial(
        probs, num_pos, replacement=True, generator=gen)
    labels = labels[torch.randperm(num_rois, generator=gen)]
    counts = torch.multinomial(
        probs, 100000, replacement=True, generator=gen).bincount(
            minlength=c + 1)
    return logits.to(device), labels.to(device), counts.to(device)



def bench(device: torch.device, args: argparse.Namespace):
    c = args.num_classes
    logits, labels, counts = make_inputs(args.num_rois, c, args.pos_fraction,
                                         args.seed, device)
    fg_logits = logits[:, :c].contiguous()
    weights = gap_class_weights(counts[:c].clamp(min=1), GAMMA)

    def ours():
        x = fg_logits.detach().requires_grad_()
        out = gap_loss(x, labels, weights, LAM, DELTA).sum()
        out.backward()
        return out.detach(), x.grad

    def loop():
        return gap_loop(fg_logits, labels, weights, LAM, DELTA)

    # the two compute the same thing on these inputs
    (v_ours, g_ours), (v_loop, g_loop) = ours(), loop()
    diff = max(float((v_ours - v_loop).abs()),
               float((g_ours - g_loop).abs().max()))

    module = GAPLoss(num_classes=c, gamma=GAMMA, lam=LAM,
                     delta=DELTA).to(device)
    module.num_samples.copy_(counts)
    ce = CrossEntropyLoss(use_sigmoid=False).to(device)
    label_weights = torch.ones(len(labels), device=device)

    def full(loss):
        def step():
            x = logits.detach().requires_grad_()
            out = loss(x, labels, label_weights,
                       avg_factor=float(len(labels)))
            if isinstance(out, dict):
                out = sum(out.values())
            out.backward()
        return step

    steps = dict(loop=loop, ours=ours, gaploss=full(module), ce=full(ce))
    return time_interleaved(steps, device, args.iters, args.warmup), diff


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = args.devices or (['cpu', 'cuda']
                               if torch.cuda.is_available() else ['cpu'])
    print(f'torch {torch.__version__}, python {platform.python_version()}, '
          f'CPU {cpu_model()} (os.cpu_count()={os.cpu_count()}, torch '
          f'threads {torch.get_num_threads()})')
    if torch.cuda.is_available() and any(
            d.startswith('cuda') for d in devices):
        print(f'CUDA device: {torch.cuda.get_device_name()}')
    print(f'N={args.num_rois} RoIs, C={args.num_classes}, '
          f'{args.pos_fraction:.0%} positives, median of {args.iters} '
          f'fwd+bwd after {args.warmup} warm-up (ms)')
    header = (f'{"device":<8}{"loop":>11}{"ours":>9}{"loop/ours":>11}'
              f'{"GAPLoss":>9}{"CE":>8}{"GAPLoss/CE":>12}{"max|diff|":>11}')
    print(header)
    print('-' * len(header))
    for name in devices:
        t, diff = bench(torch.device(name), args)
        print(f'{name:<8}{t["loop"]:>11.1f}{t["ours"]:>9.2f}'
              f'{t["loop"] / t["ours"]:>10.1f}x{t["gaploss"]:>9.2f}'
              f'{t["ce"]:>8.2f}{t["gaploss"] / t["ce"]:>11.1f}x'
              f'{diff:>11.1e}')
    print('loop: the official algorithm in loop form (value and gradient); '
          'ours: gap_loss forward + backward; GAPLoss: CE + GAP with its '
          'count update; CE: mmdet CrossEntropyLoss on (N, C + 1); '
          'max|diff|: ours vs loop, value and gradient.')


if __name__ == '__main__':
    main()
