"""The CPU demo: train a long-tail Mask R-CNN on the synthetic dataset, then
print LVIS AP / AP_r / AP_c / AP_f / AP^fixed and write the long-tail report.

    python tools/demo.py [--config CONFIG] [--work-dir DIR] [--data-root DIR]

`make demo` runs it after making the dataset.
"""
import argparse
import os
import time

from mmlongtail_bench.demo import (DATA_ROOT_VAR, DEMO_KEYS, format_metrics,
                                   run_demo)


def main():
    p = argparse.ArgumentParser(description='mmlongtail CPU demo')
    p.add_argument(
        '--config',
        default='configs/demo/seesaw_mask_rcnn_r18_light_rfs_synthetic.py')
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument(
        '--data-root',
        help=f'the dataset (sets ${DATA_ROOT_VAR}, which the demo configs '
        "read); default: the configs' data/synthetic_lvis/")
    args = p.parse_args()
    if args.data_root:
        os.environ[DATA_ROOT_VAR] = args.data_root.rstrip('/') + '/'
    start = time.time()
    metrics, report = run_demo(args.config, args.work_dir)
    minutes = (time.time() - start) / 60
    print(f'\nmmlongtail demo: {args.config}')
    print(f'trained and evaluated in {minutes:.1f} min\n')
    for task in ('bbox', 'segm'):
        for k in DEMO_KEYS:
            key = f'lvis/{task}_{k}'
            if key in metrics:
                print(f'{key:18s} {metrics[key]:.3f}')
    print('\n' + format_metrics(metrics) + '\n')
    print('long-tail report:')
    for name, path in sorted(report.items()):
        print(f'  {name:24s} {path}')


if __name__ == '__main__':
    main()
