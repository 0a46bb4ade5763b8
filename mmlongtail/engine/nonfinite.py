"""Finding non-finite values (NaN, +-inf) in losses, gradients and states.

One owner for the question "is anything here non-finite, and where", asked
by :class:`~mmlongtail.engine.NonFiniteGuardHook` at every training step
and by :class:`~mmlongtail.engine.CrashSafeCheckpointHook` before it writes
a checkpoint; and for the answer every rank agrees on
(:func:`agree_across_ranks`).
"""
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from mmengine.dist import all_gather_object, all_reduce, get_rank
from torch import Tensor
from torch.nn.utils import get_total_norm


class NonFiniteError(FloatingPointError):
    """A loss component, gradient, weight or statistic is NaN or infinite.

    Attributes:
        findings (list[str]): What was found where, one entry per rank that
            found something (``'rank 1: loss_cls = nan'``).
    """

    def __init__(self, message: str, findings: List[str]) -> None:
        self.findings = findings
        super().__init__(message)

    def __reduce__(self):
        # rebuilt from its own arguments where it crosses processes
        return type(self), (self.args[0], self.findings)


def describe(name: str, value: Tensor) -> Optional[str]:
    """``'name = nan'`` (or how many of its values are non-finite) when
    ``value`` holds a NaN or an infinity, else None. Syncs with the device:
    for the fault path and for checkpoints, not for every step."""
    if not value.is_floating_point() and not value.is_complex():
        return None
    bad = ~torch.isfinite(value.detach())
    count = int(bad.sum())
    if count == 0:
        return None
    kinds = []
    flat = value.detach()[bad]
    if torch.isnan(flat).any():
        kinds.append('nan')
    if torch.isposinf(flat).any():
        kinds.append('inf')
    if torch.isneginf(flat).any():
        kinds.append('-inf')
    if value.numel() == 1:
        return f'{name} = {"/".join(kinds)}'
    return (f'{name} holds {count} non-finite values ({"/".join(kinds)}) '
            f'of {value.numel()}, shape {tuple(value.shape)}')


def first_nonfinite(named: Iterable[Tuple[str, Tensor]],
                    limit: int = 3) -> List[str]:
    """Describe the first ``limit`` non-finite tensors of ``named``."""
    found = []
    for name, value in named:
        text = describe(name, value)
        if text is not None:
            found.append(text)
            if len(found) == limit:
                break
    return found


def state_tensors(state: Dict, prefix: str = '') -> Iterable[Tuple[str,
                                                                   Tensor]]:
    """Every tensor in a nested dict / list (a state dict, an optimizer's
    ``state_dict()``), with a dotted name."""
    if torch.is_tensor(state):
        yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from state_tensors(value, f'{prefix}.{key}' if prefix
                                     else str(key))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from state_tensors(value, f'{prefix}.{i}' if prefix
                                     else str(i))


def any_nonfinite(tensors: Iterable[Tensor]) -> Tensor:
    """Whether any floating value of ``tensors`` may be NaN or infinite: a
    ``()`` bool tensor on the first tensor's device, without a sync.

    One fused L2 norm over all of them (``torch.nn.utils.get_total_norm``;
    ``isfinite`` on every value, or their largest magnitude, cost 10-15x as
    much on CPU). A NaN or an infinity always makes it True; finite values
    whose norm overflows can too, so a True is confirmed by the exact
    :func:`first_nonfinite` before anyone is told (as
    :func:`agree_across_ranks` does).
    """
    floats = [t.detach() for t in tensors if t.is_floating_point()]
    if not floats:
        return torch.zeros((), dtype=torch.bool)
    norm = get_total_norm(floats, norm_type=2.0)
    return ~torch.isfinite(norm).reshape(())


def agree_across_ranks(local_bad: Tensor,
                       findings: Callable[[], List[str]]) -> List[str]:
    """Whether any rank found something non-finite, decided alike on every
    rank (collective: every rank must call it, once per decision).

    One ``all_reduce`` of a one-element flag; only when it is set, the
    findings of every rank are gathered (a second collective that all ranks
    then make too).

    Args:
        local_bad (Tensor): ``()`` or ``(1,)``, non-zero when this rank found
            something (may stay on the device until here).
        findings (callable): Gives this rank's findings (``list[str]``);
            called only when some rank found something.

    Returns:
        list[str]: ``'rank r: finding'`` for every finding of every rank;
        empty when no rank raised its flag, or when ``findings`` gave
        nothing on every rank (a flag from a cheap test, such as an
        overflowing norm, that the exact scan does not confirm).
    """
    flag = local_bad.detach().reshape(1).to(torch.float32)
    all_reduce(flag, op='sum')
    if float(flag) == 0:
        return []
    rank = get_rank()
    gathered = all_gather_object(
        [f'rank {rank}: {f}' for f in findings()])
    return [f for per_rank in gathered for f in per_rank]
