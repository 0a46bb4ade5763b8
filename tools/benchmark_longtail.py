"""The long-tail benchmark: every method on the synthetic dataset.

    python tools/benchmark_longtail.py [--out-dir work_dirs/benchmark_longtail]
        [--data-root data/synthetic_lvis_bench] [--seeds 0 1]
        [--methods baseline_ce rfs ...] [--best-by segm_APr] [--workers N]
        [--epochs E] [--no-reuse] [--no-pretrain] [--pretrain-dir DIR]
    python tools/benchmark_longtail.py --pretrain-only [--out-dir DIR]
    python tools/benchmark_longtail.py --measure-cost [--out-dir DIR]
    python tools/benchmark_longtail.py --estimate [--seeds 0 1]
    python tools/benchmark_longtail.py --make-data-only

Runs every method of mmlongtail_bench.benchmark.default_methods (two-stage:
trained, stage 2 on the baseline, post-hoc on the baseline with the
parameter chosen on the held-out split; one-stage RetinaNet; query-based
small DINO) with every seed, evaluates them on the balanced val split and
writes results.md, results.json, ap_vs_frequency.png and
rare_vs_frequent.png under --out-dir,
reusing finished runs whose recorded identity (hashes of the settings,
resolved config, dataset files, start checkpoint and pretrained backbone)
is unchanged; the log says why a run runs. Makes the dataset (and its
held-out split) first if missing, then the pretrained start (the backbone
pretrained on balanced crops of the same synthetic world, cached by
content under --pretrain-dir; --pretrain-only stops there, --no-pretrain
trains every run from scratch). --measure-cost runs one epoch of each
kind of run and prints the whole benchmark's expected time; --estimate
prints it from the recorded figures. `make bench` runs the default.
"""
import argparse
import json
import os
import os.path as osp
import time

from mmengine.config import Config
from mmengine.logging import MMLogger

from mmlongtail.datasets import split_info
from mmlongtail_bench.benchmark import (DATA_ROOT_VAR, TABLE_KEYS,
                                        dataset_files, default_methods,
                                        format_duration, heldout_file,
                                        measured_rates, plan_seconds,
                                        run_benchmark)
from mmlongtail_bench.benchmark.pretrain import (PRETRAIN_SECONDS,
                                                 PretrainSettings,
                                                 pretrain_backbone)
from mmlongtail_bench.benchmark.runner import (measure_cost, parallelism,
                                               pretrain_source)
from mmlongtail_bench.synthetic import (SyntheticLVISConfig,
                                        generate_synthetic_lvis,
                                        write_heldout_split)


def make_data(config: str, logger, complete: bool = True) -> None:
    """The benchmark dataset and its held-out split where ``config`` (the
    baseline's) says they are, made if missing.

    A held-out file made before it carried the library's
    ``info.heldout_split`` record is made again when ``complete`` (same
    images; the training file is rewritten as the split's remaining part:
    same images, annotations and categories, so every run's dataset hash
    changes; do not do it under a benchmark running on the same data).
    """
    cfg = Config.fromfile(config)
    train_ann, val_ann = dataset_files(cfg)
    root = osp.dirname(osp.dirname(train_ann))
    if not (osp.isfile(train_ann) and osp.isfile(val_ann)):
        logger.info(f'making the benchmark dataset in {root}')
        generate_synthetic_lvis(root,
                                SyntheticLVISConfig(val_images_per_class=20))
    heldout = heldout_file(cfg)  # the config says where
    if osp.isfile(heldout) and split_info(heldout) is None:
        if not complete:
            logger.warning(
                f'{heldout} lacks the info.heldout_split record; the next '
                'benchmark call (or --make-data-only) writes it and '
                'rewrites the training file as the remaining part')
            return
        logger.info(f'{heldout} lacks the info.heldout_split record: '
                    'writing the split again (same images)')
    elif osp.isfile(heldout):
        return
    logger.info(f'making the held-out split {heldout}')
    write_heldout_split(root, ann_file=heldout)


def load_note() -> str:
    """The machine's load average, which inflates wall times."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return 'load average unknown'
    return (f'load average {one:.1f} / {five:.1f} (1 / 5 min) on '
            f'{os.cpu_count()} cores')


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
                   help='a subset (the first of each track is its '
                   'baseline); default: all')
    p.add_argument('--best-by', default='segm_APr', choices=TABLE_KEYS)
    p.add_argument('--workers', type=int, help='runs at a time')
    p.add_argument('--epochs', type=int, help="override the configs' 5")
    p.add_argument('--no-reuse', action='store_true',
                   help='rerun runs that already finished')
    p.add_argument('--no-pretrain', action='store_true',
                   help='no pretrained start: every run from scratch')
    p.add_argument('--pretrain-dir',
                   help='the pretraining cache (default: OUT_DIR/pretrain)')
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--measure-cost', action='store_true',
                      help='time one epoch of each kind of run (in '
                      '--out-dir, default work_dirs/benchmark_cost) and '
                      'print the expected time of the whole benchmark')
    mode.add_argument('--estimate', action='store_true',
                      help='print the expected time of the benchmark from '
                      'the recorded per-run figures and exit')
    mode.add_argument('--make-data-only', action='store_true',
                      help='make the dataset and its held-out split, exit')
    mode.add_argument('--pretrain-only', action='store_true',
                      help='make (or find) the pretrained start, exit')
    args = p.parse_args()
    if args.data_root:
        # read by configs/benchmark/* here and in every run's process
        os.environ[DATA_ROOT_VAR] = args.data_root.rstrip('/') + '/'
    if args.measure_cost and args.out_dir == p.get_default('out_dir'):
        args.out_dir = 'work_dirs/benchmark_cost'
    os.makedirs(args.out_dir, exist_ok=True)
    logger = MMLogger.get_instance(
        f'benchmark_longtail_{time.strftime("%Y%m%d_%H%M%S")}',
        log_file=osp.join(args.out_dir, 'benchmark.log'))
    if args.methods:
        keep = set(args.methods)
        methods = [m for m in methods if m.key in keep]
    # the dataset first: an RFS epoch's length, which the estimate scales,
    # is the sampler's on it
    make_data(methods[0].config, logger, complete=not args.estimate)
    if args.estimate:
        workers, _ = parallelism(args.workers)
        rates, source = measured_rates([])
        total = plan_seconds(methods, args.seeds, workers, rates,
                             args.epochs)
        first = '' if args.no_pretrain else (
            ', plus the pretrained start once (about '
            f'{format_duration(PRETRAIN_SECONDS)}, then cached)')
        logger.info(f'{len(methods) * len(args.seeds)} runs, {workers} at a '
                    f'time: about {format_duration(total)} ({source})'
                    f'{first}')
        return
    if args.make_data_only:
        return
    pretrain = None if args.no_pretrain else PretrainSettings()
    pretrain_dir = args.pretrain_dir or osp.join(args.out_dir, 'pretrain')
    if args.pretrain_only:
        if pretrain is None:
            p.error('--pretrain-only and --no-pretrain exclude each other')
        rec = pretrain_backbone(pretrain, pretrain_source(methods),
                                dataset_files(Config.fromfile(
                                    methods[0].config))[0], pretrain_dir,
                                logger)
        logger.info(f'pretrained start: {rec["checkpoint"]} (SHA-256 '
                    f'{rec["sha256"]}), {load_note()}')
        return
    if args.measure_cost:
        out = measure_cost(args.out_dir, seeds=args.seeds,
                           workers=args.workers)
        path = osp.join(args.out_dir, 'cost.json')
        with open(path, 'w') as f:
            json.dump(out, f, indent=1)
        msg = [f'one epoch (or evaluation) per kind of run, {load_note()}']
        for clock in ('wall', 'cpu'):
            msg.append(f'{clock} time (seconds):')
            msg += [f'  {k}: ' + ', '.join(f'{n} {v:.0f}'
                                           for n, v in r.items())
                    for k, r in out[f'rates_{clock}'].items()]
            msg.append(f'  the benchmark ({out["plan_runs"]} runs, '
                       f'{out["workers"]} at a time): about '
                       f'{format_duration(out[f"plan_seconds_{clock}"])}')
        logger.info('\n'.join(msg) + f'\nwrote {path}')
        return
    out = run_benchmark(
        out_dir=args.out_dir, methods=methods, seeds=args.seeds,
        best_by=args.best_by, workers=args.workers, epochs=args.epochs,
        reuse=not args.no_reuse, pretrain=pretrain,
        pretrain_dir=pretrain_dir)
    logger.info('wrote ' + ', '.join(out['files'].values()))


if __name__ == '__main__':
    main()
