"""Choose NorCal's gamma, logit adjustment's tau, tau-normalization's tau or
FRACAL's fractal_l on a grid, with the LVIS metric, on a held-out part of
the training set.

    python tools/calibrate.py CONFIG CKPT --param gamma --values 0.2 0.4 0.6
        [--split heldout|val] [--heldout-fraction F | --heldout-num N |
         --heldout-ann FILE] [--seed S] [--criterion AP|APr|APc|APf]
        [--task bbox|segm] [--no-baseline] [--work-dir DIR]
        [--cfg-options k=v ...]

CONFIG must already use the component (configs/norcal/,
configs/logit_adjustment/, configs/tau_norm/, configs/fracal/); its own
value is replaced by each of --values. Writes
calibration_{param}_{split}.md / .json / .png into the work dir (default
work_dirs/calibrate/<config name>); a held-out split made here goes to
<work dir>/splits/ with its remaining part. See mmlongtail.apis.calibrate.
"""
import argparse

from mmengine.config import DictAction

from mmlongtail.apis.calibrate import sweep
from mmlongtail.apis.calibration import CRITERIA, SPLITS, TASKS


def parse_args():
    p = argparse.ArgumentParser(
        description='Sweep a post-hoc calibration parameter')
    p.add_argument('config', help='config using the calibrated component')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument(
        '--param', required=True,
        help='gamma (NorCal), beta (NorCal, class-balanced), tau '
        '(LogitAdjustment or TauNormalizationHook, whichever the config '
        'uses), fractal_l (FRACAL) or a qualified name such as '
        'TauNormalizationHook.tau or NCMClassifierHook.temperature')
    p.add_argument('--values', type=float, nargs='+', required=True,
                   help='the grid')
    p.add_argument('--split', choices=SPLITS, default='heldout',
                   help='heldout (default): a part of the training set; '
                   "val: the config's test split")
    size = p.add_mutually_exclusive_group()
    size.add_argument('--heldout-fraction', type=float,
                      help='held-out share of the training images '
                      '(default 0.1)')
    size.add_argument('--heldout-num', type=int,
                      help='held-out images (instead of a fraction)')
    size.add_argument('--heldout-ann', help='an existing held-out file')
    p.add_argument('--seed', type=int, default=0,
                   help='seed of the held-out split')
    p.add_argument('--criterion', choices=CRITERIA, default='AP',
                   help='what the best value maximizes (default AP)')
    p.add_argument('--task', choices=TASKS,
                   help='bbox or segm for the criterion (default: segm '
                   'when masks are evaluated)')
    p.add_argument('--no-baseline', action='store_true',
                   help="skip the row without the component ('none')")
    p.add_argument('--work-dir', help='where the table, plot and split go')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config keys')
    return p.parse_args()


def main():
    args = parse_args()
    result = sweep(
        args.config,
        args.checkpoint,
        args.param,
        args.values,
        split=args.split,
        work_dir=args.work_dir,
        cfg_options=args.cfg_options,
        seed=args.seed,
        heldout_fraction=args.heldout_fraction,
        heldout_num_images=args.heldout_num,
        heldout_ann_file=args.heldout_ann,
        criterion=args.criterion,
        task=args.task,
        baseline=not args.no_baseline)
    # the result on stdout, as tools/benchmark_*.py print theirs
    print(result.to_markdown())
    print('\n'.join(f'wrote {p}' for p in result.files.values()))


if __name__ == '__main__':
    main()
