"""Train a detector from a config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
                                 [--cfg-options k=v ...]

Multi-GPU / multi-node: tools/dist_train.sh CONFIG NUM_PROCS.

Under torchrun with restarts (MAX_RESTARTS=N tools/dist_train.sh ...), a
restarted worker group resumes from the newest intact checkpoint in the
work dir by itself (mmlongtail.apis.runner_setup.resume_rule).
"""
import argparse
import os

from mmengine.config import DictAction
from mmengine.runner import Runner

from mmlongtail.apis import (build_runner_config, close_distributed,
                             init_cpu_distributed)
from mmlongtail.apis.runner_setup import elastic_restarts


def parse_args():
    p = argparse.ArgumentParser(description='Train a detector')
    p.add_argument('config', help='config file')
    p.add_argument('--work-dir', help='where logs and checkpoints go')
    p.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from CKPT, or from the latest checkpoint in work-dir '
        'when no path is given')
    p.add_argument('--amp', action='store_true', help='mixed precision')
    p.add_argument(
        '--auto-scale-lr', action='store_true', help='scale LR by batch')
    p.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config keys, e.g. train_cfg.max_epochs=2')
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
    restart, max_restarts = elastic_restarts()
    cfg = build_runner_config(
        args.config,
        work_dir=args.work_dir,
        cfg_options=args.cfg_options,
        resume=args.resume,
        amp=args.amp,
        launcher=args.launcher,
        auto_scale_lr=args.auto_scale_lr,
        restart=restart,
        max_restarts=max_restarts)
    init_cpu_distributed(cfg)  # no-op with CUDA or without a launcher
    runner = Runner.from_cfg(cfg)
    runner.train()
    close_distributed()  # no-op without a process group


if __name__ == '__main__':
    main()
