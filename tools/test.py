"""Evaluate a checkpoint.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options ...]

Multi-GPU: tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS.

Predictions are saved as they come, every ``--predictions-chunk`` images per
process, to ``{work_dir}/predictions/{checkpoint name}`` (or
``--predictions-dir``). A killed test keeps them: running the same command
again predicts only the images left, then evaluates all of them.
``tools/evaluate_predictions.py`` evaluates a folder later, under every
protocol, without the model. See mmlongtail/evaluation/streamed_test.py.
"""
import argparse
import os

from mmengine.config import DictAction
from mmengine.runner import Runner

from mmlongtail.apis import close_distributed, init_cpu_distributed
from mmlongtail.apis.runner_setup import build_test_config
from mmlongtail.evaluation.streamed_test import (DEFAULT_CHUNK_IMAGES,
                                                 default_folder,
                                                 prepare_prediction_folder,
                                                 setup_streamed_test,
                                                 why_not_streamed)


def parse_args():
    p = argparse.ArgumentParser(description='Evaluate a detector')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--work-dir', help='where logs and results go')
    p.add_argument(
        '--predictions-dir',
        help='where predictions are saved (default: '
        'WORK_DIR/predictions/<checkpoint name>)')
    p.add_argument(
        '--predictions-chunk', type=int, default=DEFAULT_CHUNK_IMAGES,
        help='images per saved chunk and process: at most this many are '
        'predicted again after a kill')
    p.add_argument(
        '--fresh-predictions', action='store_true',
        help='delete the predictions already in the folder (of another '
        'checkpoint, config or dataset) and predict everything')
    p.add_argument(
        '--no-save-predictions', action='store_true',
        help='keep predictions in memory only (no resume after a kill)')
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
    stream = not args.no_save_predictions
    if stream and why_not_streamed(cfg) is not None:
        print(f'predictions are not saved: {why_not_streamed(cfg)}')
        stream = False
    if stream:
        setup_streamed_test(
            cfg, args.predictions_dir
            or default_folder(cfg.work_dir, args.checkpoint),
            args.predictions_chunk)
    init_cpu_distributed(cfg)  # no-op with CUDA or without a launcher
    runner = Runner.from_cfg(cfg)
    if stream:
        prepare_prediction_folder(runner, cfg, args.checkpoint,
                                  fresh=args.fresh_predictions)
    runner.test()
    close_distributed()  # no-op without a process group


if __name__ == '__main__':
    main()
