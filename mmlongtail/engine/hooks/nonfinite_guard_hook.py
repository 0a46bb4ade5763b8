"""Stop, or skip, a training step whose loss or gradient is not finite.

Nothing on mmengine's training path checks for a NaN or an infinity: one
reaches the weights and the running statistics of the losses (Seesaw's
``cum_samples``, EQLv2's and EFL's gradient sums), and the next checkpoint
saves them. mmdet's ``CheckInvalidLossHook`` looks at the total loss only,
every 50 iterations, after the step.

:class:`NonFiniteGuardHook` checks every step, between the backward pass
and the optimizer step, through two public torch hooks it installs at
``before_train``:

* a forward hook on the model keeps the loss components of the step
  (``mode='loss'``; every entry whose name holds ``loss``, as mmengine's
  ``parse_losses`` sums them);
* a step pre-hook on each optimizer (``Optimizer.register_step_pre_hook``)
  runs after the backward pass, gradient clipping and, under
  ``AmpOptimWrapper``, the GradScaler's unscaling, right before the
  parameters change. It checks the loss components and the gradients
  (their L2 norm, one fused reduction; only when it is not finite are the
  gradients scanned value by value, to name the parameter).

Which optimizer wrapper the config uses does not matter. Under
``AmpOptimWrapper`` gradient overflow is the GradScaler's business: it skips
such steps itself and never calls ``optimizer.step``, so the pre-hook never
sees them and the guard does not call them faults. The loss components are
still checked in those steps (and in gradient-accumulation steps that do
not update), at ``after_train_iter``.

All ranks decide together: one ``all_reduce`` of a one-element flag per
step (the findings of every rank are gathered only when it is set), so
they stop together, or skip the same step.

Policies:

* ``'stop'`` (default): raise :class:`~mmlongtail.engine.nonfinite.
  NonFiniteError` naming the component (or parameter), the iteration and
  the rank, before the parameters change. Checkpoints already written are
  good; resume from the last one.
* ``'skip'``: drop the step (every gradient is set to None, so the
  optimizer changes no parameter and no momentum), put back every buffer of
  the model as it was before the forward pass (the losses' accumulated
  statistics, BatchNorm's running statistics), remove the non-finite
  entries from the logged losses, count the skip (logged as
  ``nonfinite_skips``, kept in checkpoints) and warn. More than
  ``max_consecutive_skips`` skips in a row raise the error instead. With
  gradient accumulation, the gradients accumulated so far in the window of
  a skipped batch are dropped too.
"""
from typing import Any, Dict, List, Optional, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict
from torch import Tensor

from mmlongtail.engine.nonfinite import (NonFiniteError, agree_across_ranks,
                                         any_nonfinite, first_nonfinite)
from mmlongtail.registry import HOOKS
from mmlongtail.utils.model import unwrap_model

#: The message hub key (runtime info, saved in checkpoints) and the logged
#: scalar (``train/`` + it) that count skipped steps.
SKIPS_KEY = 'nonfinite_skips'


@HOOKS.register_module()
class NonFiniteGuardHook(Hook):
    """Check every training step for a non-finite loss or gradient (see the
    module doc).

    Args:
        policy (str): ``'stop'`` or ``'skip'``. Defaults to ``'stop'``.
        check_grads (bool): Check the gradients too, not only the loss
            components. Defaults to True.
        max_consecutive_skips (int): With ``'skip'``, stop after this many
            skipped steps in a row (the run has diverged). Defaults to 10.

    Example:
        >>> default_hooks = dict(nonfinite_guard=dict(
        ...     type='mmlongtail.NonFiniteGuardHook', policy='skip'))
    """
    # before RuntimeInfoHook (VERY_HIGH) logs the losses of a step and
    # before the checkpoint hook may save after it
    priority = 'HIGHEST'
    POLICIES = ('stop', 'skip')

    def __init__(self,
                 policy: str = 'stop',
                 check_grads: bool = True,
                 max_consecutive_skips: int = 10) -> None:
        if policy not in self.POLICIES:
            raise ValueError(f'NonFiniteGuardHook: policy must be one of '
                             f'{self.POLICIES}, got {policy!r}')
        if max_consecutive_skips < 1:
            raise ValueError('NonFiniteGuardHook: max_consecutive_skips must '
                             f'be at least 1, got {max_consecutive_skips}')
        self.policy = policy
        self.check_grads = check_grads
        self.max_consecutive_skips = max_consecutive_skips
        self.skips = 0
        self._consecutive = 0
        self._runner = None
        self._model: Optional[torch.nn.Module] = None
        self._optimizers: List[torch.optim.Optimizer] = []
        self._handles: List[Any] = []
        self._in_step = False
        self._losses: List[Tuple[str, Tensor]] = []
        self._snapshot: Dict[str, Tensor] = {}
        self._findings: Optional[List[str]] = None

    # ------------------------------------------------------------ set-up --
    def before_train(self, runner) -> None:
        """Install the forward hook and the optimizer step pre-hooks."""
        self._runner = runner
        self._model = unwrap_model(runner.model)
        wrapper = runner.optim_wrapper
        wrappers = list(wrapper.values()) if isinstance(
            wrapper, OptimWrapperDict) else [wrapper]
        self._optimizers = [w.optimizer for w in wrappers]
        self._handles = [
            self._model.register_forward_hook(self._after_forward,
                                              with_kwargs=True)
        ] + [o.register_step_pre_hook(self._before_step)
             for o in self._optimizers]
        # a resume continues the count its checkpoint holds; otherwise start
        # from 0 (mmengine may hand a new Runner the message hub of an
        # earlier one built in the same second, with its count)
        self.skips = int(runner.message_hub.get_info(SKIPS_KEY, 0)) \
            if getattr(runner, '_resume', False) else 0
        runner.message_hub.update_info(SKIPS_KEY, self.skips)
        self._consecutive = 0
        runner.logger.info(
            f'Non-finite guard: policy {self.policy!r}; every step checks '
            'the loss components' + (' and the gradients' if self.check_grads
                                     else '') + ' before the optimizer step.')

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # ------------------------------------------------------ every step --
    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Any = None) -> None:
        self._in_step = True
        self._losses = []
        self._findings = None
        if self.policy == 'skip':
            self._snapshot = {
                name: buf.detach().clone()
                for name, buf in self._model.named_buffers()
            }

    def _after_forward(self, module, args, kwargs, output) -> None:
        """Keep the loss components of the step (detached, on the device:
        nothing syncs here)."""
        if not self._in_step or kwargs.get('mode') != 'loss' \
                or not isinstance(output, dict):
            return
        for name, value in output.items():
            if 'loss' not in name:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            for i, item in enumerate(values):
                if torch.is_tensor(item):
                    label = name if len(values) == 1 else f'{name}[{i}]'
                    self._losses.append((label, item.detach()))

    def _before_step(self, optimizer, args, kwargs) -> None:
        """The optimizer step pre-hook: decide (once per step), then let the
        step through or drop it."""
        if not self._in_step:
            return None
        if self._findings is None:
            self._decide(with_grads=self.check_grads)
        if self._findings:  # skip: no gradient, no parameter changes
            optimizer.zero_grad(set_to_none=True)
        return None

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Optional[dict] = None) -> None:
        """Decide for a step that did not reach an optimizer step (the
        GradScaler skipped it, or it only accumulated gradients)."""
        try:
            if self._findings is None:
                self._decide(with_grads=False)
            if self._findings and isinstance(outputs, dict):
                for key in [
                        k for k, v in outputs.items() if torch.is_tensor(v)
                        and not bool(torch.isfinite(v).all())
                ]:
                    del outputs[key]  # a dropped step's NaN is not logged
            if self.policy == 'skip':
                runner.message_hub.update_scalar(f'train/{SKIPS_KEY}',
                                                 self.skips)
        finally:
            self._in_step = False

    # ------------------------------------------------------- decision --
    def _grads(self) -> List[Tensor]:
        return [p.grad for o in self._optimizers for group in o.param_groups
                for p in group['params'] if p.grad is not None]

    def _named_grads(self) -> List[Tuple[str, Tensor]]:
        names = {id(p): n for n, p in self._model.named_parameters()}
        return [(f'gradient of {names.get(id(p), "an unnamed parameter")}',
                 p.grad) for o in self._optimizers
                for group in o.param_groups for p in group['params']
                if p.grad is not None]

    def _local_flag(self, with_grads: bool) -> Tensor:
        """``()`` bool, on the device, without a sync (see
        :func:`~mmlongtail.engine.nonfinite.any_nonfinite`: a True from an
        overflowing norm of finite values finds nothing in the exact scan
        of :meth:`_decide`, which is then no fault)."""
        flags = [any_nonfinite(v for _, v in self._losses)]
        if with_grads:
            flags.append(any_nonfinite(self._grads()))
        device = flags[-1].device
        return torch.stack([f.to(device) for f in flags]).any()

    def _decide(self, with_grads: bool) -> None:
        runner = self._runner

        def local_findings() -> List[str]:
            found = first_nonfinite(self._losses)
            if with_grads and not found:
                found = first_nonfinite(self._named_grads())
            return found

        # empty when no rank's flag is up, or when the flags came only from
        # an overflowing gradient norm (no value is non-finite)
        findings = agree_across_ranks(self._local_flag(with_grads),
                                      local_findings)
        self._findings = findings
        if not findings:
            self._consecutive = 0
            return
        where = (f'iteration {runner.iter + 1} (epoch {runner.epoch + 1})')
        what = '; '.join(findings)
        if self.policy == 'stop':
            raise NonFiniteError(
                f'Non-finite guard: non-finite value at {where}, before the '
                f'optimizer step: {what}. Training stopped (policy "stop") '
                'with the parameters unchanged by this step; the '
                'checkpoints already written are good: resume from the last '
                "one, or set default_hooks.nonfinite_guard.policy='skip' to "
                'drop such steps.', findings)
        self._restore_buffers()
        for optimizer in self._optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.skips += 1
        self._consecutive += 1
        runner.message_hub.update_info(SKIPS_KEY, self.skips)
        if self._consecutive > self.max_consecutive_skips:
            raise NonFiniteError(
                f'Non-finite guard: {self._consecutive} steps in a row had '
                f'non-finite values (more than max_consecutive_skips='
                f'{self.max_consecutive_skips}), the last at {where}: '
                f'{what}. The run has diverged; resume from the last '
                'checkpoint with a lower learning rate.', findings)
        runner.logger.warning(
            f'Non-finite guard: skipped {where}: {what}. The step was '
            'dropped and the model buffers (loss statistics) restored; '
            f'{self.skips} step(s) skipped in this run so far.')

    def _restore_buffers(self) -> None:
        """Put every buffer back as :meth:`before_train_iter` saw it."""
        current = dict(self._model.named_buffers())
        for name, saved in self._snapshot.items():
            buf = current.get(name)
            if buf is not None and buf.shape == saved.shape:
                buf.copy_(saved)
            else:  # replaced by another tensor during the step
                module_name, _, leaf = name.rpartition('.')
                module = self._model.get_submodule(module_name)
                module._buffers[leaf] = saved
