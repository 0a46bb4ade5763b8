"""Time forward + backward of Seesaw Loss implementations side by side.

Compares, in one run and on the same inputs:

* ``mmlongtail.SeesawLoss`` (ours),
* ``mmdet.models.losses.SeesawLoss`` (mmdet 3.3.0),
* ours with ``select_positives=False`` (the host-sync-free path that runs
  by default on accelerators),
* mmdet's plain ``CrossEntropyLoss`` on ``(N, C + 1)`` logits (the cost of
  an ordinary softmax classifier, the floor to compare against).

Each loss runs with the ``label_weights`` and ``avg_factor`` that mmdet's
``BBoxHead`` passes. Two label mixes are timed: a realistic one (25%
positives, the R-CNN sampler's ``pos_fraction``) and the worst case (every
RoI positive). Timings are medians over ``--iters`` calls after warm-up; on
CUDA each timed call is synchronised.

Example::

    python tools/benchmark_seesaw.py --num-rois 1024 --num-classes 1203
"""
import argparse
from typing import Callable, Dict

import torch
from mmdet.models.losses import CrossEntropyLoss
from mmdet.models.losses import SeesawLoss as MMDetSeesawLoss

from mmlongtail.models.losses import SeesawLoss
from mmlongtail_bench.timing import time_interleaved


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--num-rois', type=int, default=1024)
    parser.add_argument('--num-classes', type=int, default=1203)
    parser.add_argument('--iters', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument(
        '--devices',
        nargs='+',
        default=None,
        help='default: cpu, and cuda when available')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch default)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def make_step(loss_fn: Callable, logits: torch.Tensor, labels: torch.Tensor,
              weights: torch.Tensor) -> Callable[[], None]:
    """One forward + backward with mmdet BBoxHead's arguments."""
    avg_factor = float(labels.numel())

    def step() -> None:
        x = logits.detach().requires_grad_()
        out = loss_fn(x, labels, weights, avg_factor=avg_factor)
        if isinstance(out, dict):
            out = sum(out.values())
        out.backward()

    return step



def bench(device: torch.device, num_rois: int, num_classes: int,
          pos_fraction: float, iters: int, warmup: int,
          seed: int) -> Dict[str, float]:
    gen = torch.Generator().manual_seed(seed)
    c = num_classes
    logits = (torch.randn(num_rois, c + 2, generator=gen) * 2).to(device)
    num_pos = int(round(num_rois * pos_fraction))
    # Long-tailed positives: class k drawn with probability ~ 1 / (k + 1).
    probs = 1.0 / torch.arange(1, c + 1, dtype=torch.float)
    pos_labels = torch.multinomial(
        probs, num_pos, replacement=True, generator=gen)
    labels = torch.full((num_rois, ), c, dtype=torch.long)
    labels[:num_pos] = pos_labels
    labels = labels[torch.randperm(num_rois, generator=gen)].to(device)
    weights = torch.ones(num_rois, device=device)

    losses = {
        # select_positives=None: row selection on CPU, masking elsewhere.
        'ours': SeesawLoss(num_classes=c),
        # the sync-free (masked) path, whatever the device
        'ours_mask': SeesawLoss(num_classes=c, select_positives=False),
        'mmdet': MMDetSeesawLoss(num_classes=c),
    }
    # Start from the same, non-trivial counts.
    counts = torch.multinomial(
        probs, 100000, replacement=True, generator=gen).bincount(
            minlength=c + 1).float()
    steps = {}
    for name, loss in losses.items():
        loss.cum_samples.copy_(counts)
        steps[name] = make_step(loss.to(device), logits, labels, weights)
    ce = CrossEntropyLoss(use_sigmoid=False).to(device)
    steps['ce'] = make_step(ce, logits[:, :c + 1].contiguous(), labels,
                            weights)
    return time_interleaved(steps, device, iters, warmup)


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = args.devices or (['cpu', 'cuda']
                               if torch.cuda.is_available() else ['cpu'])
    print(f'torch {torch.__version__}, CPU threads {torch.get_num_threads()}'
          f', N={args.num_rois} RoIs, C={args.num_classes}, median of '
          f'{args.iters} fwd+bwd (ms)')
    header = (f'{"device":<8}{"positives":>10}{"ours":>9}{"ours_mask":>10}'
              f'{"mmdet":>9}{"CE":>9}{"mmdet/ours":>11}{"ours/CE":>9}'
              f'{"mmdet/ours_mask":>16}{"ours_mask/CE":>13}')
    print(header)
    print('-' * len(header))
    for name in devices:
        device = torch.device(name)
        for frac in (0.25, 1.0):
            t = bench(device, args.num_rois, args.num_classes, frac,
                      args.iters, args.warmup, args.seed)
            print(f'{name:<8}{frac:>10.0%}{t["ours"]:>9.2f}'
                  f'{t["ours_mask"]:>10.2f}{t["mmdet"]:>9.2f}{t["ce"]:>9.2f}'
                  f'{t["mmdet"] / t["ours"]:>10.2f}x'
                  f'{t["ours"] / t["ce"]:>8.2f}x'
                  f'{t["mmdet"] / t["ours_mask"]:>15.2f}x'
                  f'{t["ours_mask"] / t["ce"]:>12.2f}x')
    print('ours: default path (rows of positives gathered on CPU, masked '
          'elsewhere); ours_mask: sync-free masked path; CE: mmdet '
          'CrossEntropyLoss on (N, C + 1).')
    if torch.cuda.is_available() and any(
            d.startswith('cuda') for d in devices):
        print(f'CUDA device: {torch.cuda.get_device_name()}')


if __name__ == '__main__':
    main()
