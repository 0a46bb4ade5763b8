"""Measure how long a surviving rank takes to exit when its peer is
SIGKILLed mid-epoch (gloo, CPU). Not a test: run it by hand.

    OMP_NUM_THREADS=1 .venv/bin/python tests/measure_dead_rank.py [--runs 3]

Two processes train the tiny demo recipe of ``tests/test_dist_restart.py``;
rank 1 kills itself before iteration 3 (``tests/rank_faults.py``), then
the script polls (every 5 ms) until rank 0's process is gone. Two setups:

* ``torchrun``: ``tools/dist_train.sh`` without restarts; torchrun's agent
  sees the dead worker and stops the other one (what a single node does).
* ``no agent``: both ``tools/train.py`` processes started by hand with
  torchrun's environment variables, so nothing but the process group tells
  rank 0 (what a rank on another node sees while its own agent is healthy
  and the failed node's agent has not restarted anything).

Prints, per run: seconds from the kill to rank 0's exit, to the first
error line in the log (rank 0's under ``no agent``, any under torchrun),
and the last error line.
"""
import argparse
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from dist_utils import free_port  # noqa: E402
from longtail_probe import tiny_config  # noqa: E402
from rank_faults import KILL_RANK_ENV  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _dataset(tmp):
    from mmlongtail_bench.synthetic import (SyntheticLVISConfig,
                                            generate_synthetic_lvis)
    cfg = SyntheticLVISConfig(
        num_rare=4, num_common=4, num_frequent=4, num_train_images=48,
        val_images_per_class=2, image_size=64, min_size=10, max_size=24,
        rare_max=3, common_max=8, frequent_max_fraction=0.5, seed=3)
    generate_synthetic_lvis(tmp, cfg, show_progress=False)
    return cfg.num_classes


def _children(pid):
    with open(f'/proc/{pid}/task/{pid}/children') as f:
        return [int(p) for p in f.read().split()]


def _worker(pid, rank):
    """The descendant of ``pid`` running tools/train.py as ``rank``."""
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            todo.extend(_children(p))
            with open(f'/proc/{p}/cmdline', 'rb') as f:
                args = f.read().split(b'\0')
            is_worker = any(a.endswith(b'train.py') for a in args[1:3])
            if is_worker and _rank_of(p) == rank:  # (python [-u] train.py)
                return p
        except (OSError, KeyError):
            continue
    return None


def _rank_of(pid):
    with open(f'/proc/{pid}/environ', 'rb') as f:
        env = dict(kv.split(b'=', 1) for kv in f.read().split(b'\0') if kv)
    return int(env[b'RANK'])


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def _env(extra):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHON=sys.executable,
               PYTHONPATH=f'{ROOT}:{osp.join(ROOT, "tests")}')
    env[KILL_RANK_ENV] = '1:3'
    env.update(extra)
    return env


def _start(setup, cfg_file, work, log):
    port = str(free_port())
    if setup == 'torchrun':
        proc = subprocess.Popen(
            ['bash', osp.join(ROOT, 'tools/dist_train.sh'), cfg_file, '2',
             '--work-dir', work], env=_env(dict(PORT=port)), stdout=log,
            stderr=subprocess.STDOUT)
        return [proc], None
    procs = []
    for rank in range(2):
        env = _env(dict(RANK=str(rank), LOCAL_RANK=str(rank),
                        WORLD_SIZE='2', LOCAL_WORLD_SIZE='2',
                        MASTER_ADDR='127.0.0.1', MASTER_PORT=port))
        procs.append(subprocess.Popen(
            [sys.executable, osp.join(ROOT, 'tools/train.py'), cfg_file,
             '--launcher', 'pytorch', '--work-dir', work], env=env,
            stdout=log if rank == 0 else subprocess.DEVNULL,
            stderr=subprocess.STDOUT))
    return procs, procs[0].pid


def _measure(setup, cfg_file, tmp, run):
    work = osp.join(tmp, f'{setup.replace(" ", "_")}{run}')
    log_path = work + '.log'
    with open(log_path, 'w') as log:
        procs, rank0 = _start(setup, cfg_file, work, log)
        killed = osp.join(work, 'killed_rank1.txt')
        while not osp.isfile(killed):
            if rank0 is None:  # find torchrun's rank-0 worker
                rank0 = _worker(procs[0].pid, 0)
            if all(p.poll() is not None for p in procs):
                raise RuntimeError(f'ended before the kill; see {log_path}')
            time.sleep(0.005)
        if rank0 is None:
            raise RuntimeError(f'rank 0 not found; see {log_path}')
        error = None
        while _alive(rank0):
            if error is None and _has_error(log_path):
                error = time.time()
            time.sleep(0.005)
        gone = time.time()
        for p in procs:
            p.wait()
    with open(killed) as f:
        t_kill = float(f.read())
    with open(log_path) as f:
        errors = [ln.strip() for ln in f if 'Error' in ln]
    first = '(none)' if error is None else f'{error - t_kill:.2f} s'
    return (gone - t_kill, first,
            errors[-1][:160] if errors else '(no error line)')


def _has_error(log_path):
    with open(log_path) as f:
        return 'Error' in f.read()


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--runs', type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        n = _dataset(osp.join(tmp, 'data'))
        cfg = tiny_config(osp.join(tmp, 'data'), n, osp.join(tmp, 'unused'),
                          num_images=8, batch_size=2, max_epochs=3)
        cfg.custom_hooks = [dict(type='rank_faults.KillRankHook')]
        cfg_file = osp.join(tmp, 'tiny.py')
        cfg.dump(cfg_file)
        for setup in ('torchrun', 'no agent'):
            for run in range(args.runs):
                seconds, first, line = _measure(setup, cfg_file, tmp, run)
                print(f'{setup:9s} run {run}: rank 0 exited {seconds:.2f} s '
                      f'after rank 1 was killed (first error line in the '
                      f'log after {first}); {line}', flush=True)


if __name__ == '__main__':
    main()
