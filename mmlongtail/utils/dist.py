"""Distributed helpers that are harmless without a process group."""
import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """Whether a process group with more than one rank is initialized."""
    return (dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


@torch.no_grad()
def all_reduce_sum_(tensor: torch.Tensor,
                    enabled: bool = True) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place, and return it.

    Does nothing when ``enabled`` is False or when no multi-rank process group
    is initialized, so callers need no guard of their own.

    Args:
        tensor (Tensor): Any shape; on a device the backend supports.
        enabled (bool): Turn the reduction off. Defaults to True.

    Returns:
        Tensor: ``tensor`` itself, now holding the global sum.
    """
    if enabled and is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
