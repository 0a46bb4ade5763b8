"""Write the synthetic long-tailed dataset in LVIS v1 format.

    python tools/make_synthetic_lvis.py data/synthetic_lvis [--seed 0] ...

See mmlongtail_bench/synthetic/rendered_dataset.py for the design.
"""
import argparse
from dataclasses import fields

from mmlongtail_bench.synthetic import (SyntheticLVISConfig,
                                        generate_synthetic_lvis)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('out_dir', help='e.g. data/synthetic_lvis')
    defaults = SyntheticLVISConfig()
    for f in fields(SyntheticLVISConfig):
        default = getattr(defaults, f.name)
        p.add_argument(
            '--' + f.name.replace('_', '-'),
            type=float if isinstance(default, float) else int,
            default=default,
            help=f'default: {default}')
    args = vars(p.parse_args())
    out_dir = args.pop('out_dir')
    cfg = SyntheticLVISConfig(**args)
    paths = generate_synthetic_lvis(out_dir, cfg)
    print(f'\nwrote {paths["train"]} and {paths["val"]} '
          f'({cfg.num_classes} classes: {cfg.num_rare} rare, '
          f'{cfg.num_common} common, {cfg.num_frequent} frequent)')


if __name__ == '__main__':
    main()
