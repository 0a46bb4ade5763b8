"""Long-tail report of an LVIS evaluation run.

Reads the per-class file that ``mmlongtail.LVISMetric`` writes when given
``outfile_prefix`` (``{outfile_prefix}.per_class.json``) and writes PNGs and a
markdown summary::

    python tools/analyze_longtail.py work_dirs/x/lvis.per_class.json \
        --out-dir work_dirs/x/longtail [--stats lvis_v1] \
        [--checkpoint work_dirs/x/epoch_12.pth] [--config CONFIG]

(a) per-class AP vs training image count, (b) r/c/f AP/AR table,
(c) box-classifier weight norms vs training instance count (with
``--checkpoint``; which classifier row is which class comes from the losses
of the run's config, stored in the checkpoint, or ``--config`` for a
checkpoint without one). See ``mmlongtail.analysis`` for the logic.
"""
import argparse

from mmengine.logging import MMLogger

from mmlongtail.analysis import analyze_longtail


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Long-tail report of an LVIS evaluation')
    p.add_argument('per_class_file',
                   help='{outfile_prefix}.per_class.json from LVISMetric')
    p.add_argument('--out-dir', required=True)
    p.add_argument(
        '--stats', default=None,
        help="training statistics: 'lvis_v1', a stats JSON or the train "
        'annotation file (default: counts in the evaluated categories)')
    p.add_argument('--checkpoint', default=None,
                   help='checkpoint for the classifier weight-norm plot')
    p.add_argument(
        '--config', default=None,
        help="the run's config (default: the one stored in the checkpoint)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    logger = MMLogger.get_instance('analyze_longtail')
    outputs = analyze_longtail(
        args.per_class_file, args.out_dir, stats=args.stats,
        checkpoint=args.checkpoint, config=args.config)
    for name, path in outputs.items():
        logger.info(f'{name}: {path}')


if __name__ == '__main__':
    main()
