"""Evaluate a checkpoint.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options ...]

Multi-GPU: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS.
"""
import argparse
import os

from mmengine.config import DictAction
from mmengine.runner import Runner

from mmlongtail.apis import init_cpu_distributed
from mmlongtail.apis.runner_setup import build_test_config


def parse_args():
    p = argparse.ArgumentParser(description='Evaluate a detector')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--work-dir', help='where logs and results go')
    p.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config keys')
    p.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main():
    args = parse_args()
    cfg = build_test_config(
        args.config,
        args.checkpoint,
        work_dir=args.work_dir,
        cfg_options=args.cfg_options,
        launcher=args.launcher)
    init_cpu_distributed(cfg)  # no-op with CUDA or without a launcher
    runner = Runner.from_cfg(cfg)
    runner.test()


if __name__ == '__main__':
    main()
