"""The long-tail benchmark: every method on the synthetic dataset.

    python tools/benchmark_longtail.py [--out-dir work_dirs/benchmark_longtail]
        [--data-root data/synthetic_lvis_bench] [--seeds 0 1]
        [--methods baseline_ce rfs ...] [--best-by segm_APr] [--workers N]
        [--epochs E] [--no-reuse]

Trains the CE baseline, RFS, Seesaw + Norm Mask, EQL, EQLv2, focal and BAGS
(decoupled from the baseline) with the same schedule and seeds, evaluates
them on the balanced val split, runs a second seed of the baseline and of the
best method, and writes results.md, results.json and ap_vs_frequency.png
under --out-dir. Makes the dataset first if it is missing. `make bench` runs
it with the defaults (43 min on 2 CPU cores, measured).
"""
import argparse
import os
import os.path as osp
import time

from mmengine.config import Config
from mmengine.logging import MMLogger

from mmlongtail_bench.benchmark import (DATA_ROOT_VAR, TABLE_KEYS,
                                        dataset_files, default_methods,
                                        run_benchmark)
from mmlongtail_bench.synthetic import (SyntheticLVISConfig,
                                        generate_synthetic_lvis)


def main():
    methods = default_methods()
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out-dir', default='work_dirs/benchmark_longtail')
    p.add_argument(
        '--data-root',
        help=f'the dataset (sets ${DATA_ROOT_VAR}, which the configs read); '
        "default: the configs' data/synthetic_lvis_bench/")
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    p.add_argument('--methods', nargs='+', choices=[m.key for m in methods],
                   help='a subset (the first is the baseline); default: all')
    p.add_argument('--best-by', default='segm_APr', choices=TABLE_KEYS)
    p.add_argument('--workers', type=int, help='runs at a time')
    p.add_argument('--epochs', type=int, help="override the configs' 5")
    p.add_argument('--no-reuse', action='store_true',
                   help='retrain runs that already finished')
    args = p.parse_args()
    if args.data_root:
        # read by configs/benchmark/* here and in every run's process
        os.environ[DATA_ROOT_VAR] = args.data_root.rstrip('/') + '/'
    os.makedirs(args.out_dir, exist_ok=True)
    logger = MMLogger.get_instance(
        f'benchmark_longtail_{time.strftime("%Y%m%d_%H%M%S")}',
        log_file=osp.join(args.out_dir, 'benchmark.log'))
    if args.methods:
        keep = set(args.methods)
        methods = [m for m in methods if m.key in keep]
    # the dataset where the baseline's config says it is
    train_ann, val_ann = dataset_files(Config.fromfile(methods[0].config))
    if not (osp.isfile(train_ann) and osp.isfile(val_ann)):
        root = osp.dirname(osp.dirname(train_ann))
        logger.info(f'making the benchmark dataset in {root}')
        generate_synthetic_lvis(root,
                                SyntheticLVISConfig(val_images_per_class=20))
    out = run_benchmark(
        out_dir=args.out_dir, methods=methods, seeds=args.seeds,
        best_by=args.best_by, workers=args.workers, epochs=args.epochs,
        reuse=not args.no_reuse)
    logger.info('wrote ' + ', '.join(out['files'].values()))


if __name__ == '__main__':
    main()
