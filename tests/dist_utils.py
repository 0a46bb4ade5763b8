"""Two-rank gloo runs for tests: a free local port and the environment of a
``tools/dist_train.sh`` launch, and ``spawn_gloo`` which starts the process
group around a worker and tears it down afterwards."""
import os
import os.path as osp
import socket
import sys
import tempfile
from typing import Any, Callable

import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launcher_env(*drop: str) -> dict:
    """The environment for a ``tools/dist_train.sh`` launch in a test: a
    free port, this interpreter, one thread per process and ``tests/`` on
    ``PYTHONPATH`` (where the test configs' hooks live), without the
    variables named in ``drop`` (fault switches a test sets for one run)."""
    env = dict(os.environ)
    env.update(
        PORT=str(free_port()),
        PYTHON=sys.executable,
        OMP_NUM_THREADS='1',
        PYTHONPATH=osp.dirname(osp.abspath(__file__)))
    for name in drop:
        env.pop(name, None)
    return env


def _entry(rank: int, world: int, store_file: str, fn: Callable,
           args: tuple):
    import torch.distributed as dist
    dist.init_process_group(
        'gloo',
        init_method=f'file://{store_file}',
        rank=rank,
        world_size=world)
    try:
        fn(rank, world, *args)
        # no rank tears its gloo pairs down while another still reads
        # them; only after success (a rank that raised may have left a
        # peer inside a collective, which a barrier would pair wrongly)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn_gloo(fn: Callable, *args: Any, world: int = 2) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` processes joined by a gloo
    process group. ``fn`` must be a module-level function (it is pickled).

    The ranks meet through a file store in a fresh temporary folder, not a
    TCP port: no race for a free port, and no rank hosts a store server
    that the others depend on while they tear down."""
    with tempfile.TemporaryDirectory(prefix='gloo_store_') as folder:
        mp.spawn(
            _entry,
            args=(world, osp.join(folder, 'store'), fn, args),
            nprocs=world,
            join=True)
