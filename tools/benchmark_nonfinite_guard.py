"""Time the non-finite guard's cost per training step, side by side.

For each config, on the model it builds (random initial weights):

* ``full step``: one whole training step (data preprocessing, forward,
  losses, backward, SGD step) on ``demo_mm_inputs`` images, without the
  guard, with ``NonFiniteGuardHook(policy='stop')`` and with
  ``policy='skip'`` (which also copies every buffer before the forward);
* ``optimizer step``: only the part the guard adds to, the SGD step on
  fixed random gradients of every parameter, without and with the guard (its
  loss-component check, the gradients' largest magnitude, the decision).

* ``checkpoint``: the crash-safe checkpoint hook's scan of the weights,
  buffers and optimizer state before a save, next to serializing the same
  checkpoint to memory (``torch.save``, what every save costs anyway).

Contenders run round-robin (so load changes hit all alike); medians in
milliseconds, and the ratio to the step without the guard. Without a
process group the guard's all_reduce is skipped; with one it adds one
one-element all_reduce per step.

Example::

    python tools/benchmark_nonfinite_guard.py \\
        configs/demo/mask_rcnn_r18_light_synthetic.py \\
        configs/seesaw/seesaw_mask_rcnn_r50_fpn_ms_rfs_2x_lvis.py
"""
import argparse
import io
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch
from mmdet.registry import MODELS
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.logging import MessageHub, MMLogger
from mmengine.optim import OptimWrapper

from mmlongtail.apis import build_runner_config
from mmlongtail.engine import NonFiniteGuardHook
from mmlongtail.engine.nonfinite import any_nonfinite, state_tensors


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--image-size', type=int, default=128)
    parser.add_argument('--full-step', nargs='*', default=None,
                        help='configs to time whole steps for (default: '
                        'the first one; the optimizer step is timed for '
                        'all)')
    parser.add_argument('--device', default='cpu')
    return parser.parse_args()


class _Runner:
    """What the guard reads from mmengine's Runner."""

    def __init__(self, model: torch.nn.Module, wrapper: OptimWrapper):
        self.model = model
        self.optim_wrapper = wrapper
        self.message_hub = MessageHub.get_instance('benchmark_guard')
        self.logger = MMLogger.get_instance('benchmark_guard',
                                            log_level='WARNING')
        self.iter = self.epoch = 0


def _median_ms(steps: Dict[str, Callable[[], None]], iters: int,
               warmup: int, device: torch.device) -> Dict[str, float]:
    samples: Dict[str, List[float]] = {name: [] for name in steps}
    for i in range(warmup + iters):
        for name, step in steps.items():
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            if i >= warmup:
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def _guarded(runner: _Runner, policy: Optional[str],
             body: Callable[[], Optional[dict]]) -> Callable[[], None]:
    """``body`` as a training step under a guard of ``policy`` (None: no
    guard). The guard is installed once, as ``before_train`` does; outside
    its own steps its hooks return at once."""
    if policy is None:
        return lambda: body() and None
    guard = NonFiniteGuardHook(policy=policy)
    guard.before_train(runner)

    def step() -> None:
        guard.before_train_iter(runner, 0)
        outputs = body()
        guard.after_train_iter(runner, 0, outputs=outputs)

    return step


def bench(config: str, full: bool, args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    cfg = build_runner_config(config, work_dir='/tmp/unused')
    model = MODELS.build(cfg.model).to(device).train()
    wrapper = OptimWrapper(
        torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9))
    runner = _Runner(model, wrapper)
    params = [p for p in model.parameters() if p.requires_grad]
    numel = sum(p.numel() for p in params)
    buffers = sum(b.numel() for b in model.buffers())
    print(f'\n{config}: {numel / 1e6:.1f} M trained parameters, '
          f'{buffers / 1e3:.1f} k buffer values, {device}')

    grads = [torch.randn_like(p) for p in params]

    def optimizer_step() -> None:
        for p, g in zip(params, grads):  # train_step's zero_grad drops them
            p.grad = g
        wrapper.step()

    rows = {}
    if full:
        num_classes = cfg.model.roi_head.bbox_head.num_classes
        data = demo_mm_inputs(
            batch_size=2, image_shapes=(3, args.image_size, args.image_size),
            num_items=[4, 4], num_classes=num_classes, with_mask=True)

        def train_step() -> dict:
            return model.train_step(data, wrapper)

        rows['full step'] = {
            name: _guarded(runner, policy, train_step)
            for name, policy in (('no guard', None), ('stop', 'stop'),
                                 ('skip', 'skip'))
        }
    rows['optimizer step'] = {
        name: _guarded(runner, policy, optimizer_step)
        for name, policy in (('no guard', None), ('stop', 'stop'),
                             ('skip', 'skip'))
    }
    def checkpoint() -> dict:
        return dict(state_dict=model.state_dict(),
                    optimizer=wrapper.state_dict())

    rows['checkpoint'] = {
        'torch.save': lambda: torch.save(checkpoint(), io.BytesIO()),
        'scan': lambda: bool(any_nonfinite(
            t for _, t in state_tensors(checkpoint()))),
    }
    for what, steps in rows.items():
        ms = _median_ms(steps, args.iters, args.warmup, device)
        base = next(iter(ms.values()))
        cells = '  '.join(f'{name} {value:8.2f} ms ({value / base:.3f}x)'
                          for name, value in ms.items())
        print(f'  {what:15s} {cells}')


def main() -> None:
    args = parse_args()
    register_all_modules()
    full = set(args.configs[:1] if args.full_step is None else
               args.full_step)
    for config in args.configs:
        bench(config, config in full, args)


if __name__ == '__main__':
    main()
