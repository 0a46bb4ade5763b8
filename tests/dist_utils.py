"""Two-rank gloo runs for tests: a free local port, and ``spawn_gloo`` which
starts the process group around a worker and tears it down afterwards."""
import socket
from typing import Any, Callable

import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn: Callable, args: tuple):
    import torch.distributed as dist
    dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn_gloo(fn: Callable, *args: Any, world: int = 2) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` processes joined by a gloo
    process group. ``fn`` must be a module-level function (it is pickled)."""
    mp.spawn(
        _entry, args=(world, free_port(), fn, args), nprocs=world, join=True)
