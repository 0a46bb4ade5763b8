"""Benchmark loading an LVIS v1 train-size annotation file: mmlongtail's
``LVISV1Dataset`` against mmdet's, side by side, each in a fresh process.

The file is generated once and cached (``--data-dir``): LVIS v1 train's
per-category image and instance counts (the packaged statistics), 100,170
images and 1,270,141 annotations with 12-point polygons at ``--scale 1``
(:mod:`mmlongtail_bench.synthetic.lvis_train_like`). Each side then runs in
its own process (one after the other), as the LVIS configs build the
training set (``filter_cfg=dict(filter_empty_gt=True, min_size=32)``, no
pipeline, so no pixels are read), and reports:

* load time (building the dataset; wall and CPU time of the process) and
  peak RSS of the process (and the RSS after imports, before the load);
* the RepeatFactorSampler's and ClassAwareSampler's construction time on
  the loaded dataset (``mmlongtail.RepeatFactorSampler``,
  ``mmlongtail.ClassAwareSampler``);
* after one pass of a DataLoader with ``--workers`` workers over every
  item: the workers' memory from ``/proc/<pid>/smaps_rollup``, summed over
  workers: RSS, PSS (shared pages split among the processes sharing them)
  and USS (private pages: what each worker really added).

Then it prints mmlongtail / mmdet ratios (goal: load time and peak RSS at
most 0.6).

Usage::

    nice python tools/benchmark_dataset_load.py [--scale 1] [--workers 8]
        [--data-dir data/benchmark_dataset_load]
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

from mmlongtail_bench.memory import proc_status

SIDES = ('mmdet', 'mmlongtail')
GOAL = 0.6


def _smaps(pid) -> dict:
    """RSS, PSS and USS (private clean + dirty) of a process, in MiB."""
    out = {}
    with open(f'/proc/{pid}/smaps_rollup') as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                out[parts[0].rstrip(':')] = int(parts[1])
    return dict(rss=out.get('Rss', 0) / 1024, pss=out.get('Pss', 0) / 1024,
                uss=(out.get('Private_Clean', 0) +
                     out.get('Private_Dirty', 0)) / 1024)


def _children() -> list:
    pids = []
    for tid in os.listdir('/proc/self/task'):
        with open(f'/proc/self/task/{tid}/children') as f:
            pids += [int(p) for p in f.read().split()]
    return pids


def _count(batch) -> int:
    return len(batch)


def child(side: str, ann_file: str, workers: int) -> dict:
    """Load the file with one side's dataset and measure (in this process).
    """
    import mmlongtail  # noqa: F401  (registers mmlongtail's components)
    from mmdet.datasets import LVISV1Dataset as MMDetLVISV1Dataset
    from torch.utils.data import DataLoader

    from mmlongtail.datasets import (ClassAwareSampler, LVISV1Dataset,
                                     RepeatFactorSampler)
    cls = MMDetLVISV1Dataset if side == 'mmdet' else LVISV1Dataset
    rss_before = proc_status('VmRSS') / 2**20
    t0, c0 = time.perf_counter(), time.process_time()
    ds = cls(ann_file=ann_file, data_prefix=dict(img=''), pipeline=[],
             filter_cfg=dict(filter_empty_gt=True, min_size=32))
    load_s = time.perf_counter() - t0
    load_cpu_s = time.process_time() - c0
    peak = proc_status('VmHWM') / 2**20
    res = dict(side=side, images=len(ds), load_s=load_s,
               load_cpu_s=load_cpu_s, peak_mib=peak,
               rss_before_mib=rss_before,
               rss_after_load_mib=proc_status('VmRSS') / 2**20)
    t0 = time.perf_counter()
    RepeatFactorSampler(ds, repeat_thr=1e-3, seed=0)
    res['rfs_s'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ClassAwareSampler(ds, seed=0)
    res['class_aware_s'] = time.perf_counter() - t0
    if workers:
        loader = DataLoader(ds, batch_size=32, num_workers=workers,
                            collate_fn=_count, persistent_workers=True)
        t0 = time.perf_counter()
        it = iter(loader)
        seen = sum(it)
        res['pass_s'] = time.perf_counter() - t0
        assert seen == len(ds), (seen, len(ds))
        mems = [_smaps(p) for p in _children()]
        res['workers'] = len(mems)
        for k in ('rss', 'pss', 'uss'):
            res[f'workers_{k}_mib'] = sum(m[k] for m in mems)
        res['parent_after_pass'] = _smaps('self')
        del it, loader
    return res


def _fmt_row(name: str, a, b, unit: str, ratio: bool = True) -> str:
    r = f'{b / a:6.2f}x' if ratio and a else '      '
    return f'{name:<34}{a:>12.1f}{b:>12.1f} {unit:<4}{r}'


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--scale', type=float, default=1.0,
                   help='fraction of LVIS v1 train (1: 100,170 images)')
    p.add_argument('--points', type=int, default=12,
                   help='polygon vertices per annotation')
    p.add_argument('--workers', type=int, default=8)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--data-dir', default='data/benchmark_dataset_load',
                   help='where the generated file is cached')
    p.add_argument('--child', choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument('--ann-file', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.ann_file, args.workers)))
        return

    from mmlongtail_bench.synthetic.lvis_train_like import \
        write_lvis_train_like
    path = osp.join(
        args.data_dir, f'lvis_v1_train_like_scale{args.scale:g}_'
        f'{args.points}pt_seed{args.seed}.json')
    t0 = time.perf_counter()
    info = write_lvis_train_like(path, args.scale, args.points, args.seed)
    print(f'annotation file: {path}: {info["images"]} images, '
          f'{info["annotations"]} annotations, '
          f'{info["bytes"] / 2**20:.0f} MiB '
          f'(ready in {time.perf_counter() - t0:.0f} s)')
    results = {}
    for side in SIDES:
        cmd = [sys.executable, __file__, '--child', side, '--ann-file', path,
               '--workers', str(args.workers)]
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE,
                             text=True).stdout
        results[side] = json.loads(out.strip().splitlines()[-1])
        print(f'{side}: {json.dumps(results[side])}', flush=True)
    a, b = results['mmdet'], results['mmlongtail']
    assert a['images'] == b['images'], (a['images'], b['images'])
    print(f'\n{"":<34}{"mmdet":>12}{"mmlongtail":>12}      ratio')
    print(_fmt_row('load time', a['load_s'], b['load_s'], 's'))
    print(_fmt_row('load CPU time (process)', a['load_cpu_s'],
                   b['load_cpu_s'], 's'))
    print(_fmt_row('peak RSS', a['peak_mib'], b['peak_mib'], 'MiB'))
    print(_fmt_row('peak RSS - RSS before load',
                   a['peak_mib'] - a['rss_before_mib'],
                   b['peak_mib'] - b['rss_before_mib'], 'MiB'))
    print(_fmt_row('RSS after load', a['rss_after_load_mib'],
                   b['rss_after_load_mib'], 'MiB'))
    print(_fmt_row('RepeatFactorSampler construction', a['rfs_s'],
                   b['rfs_s'], 's'))
    print(_fmt_row('ClassAwareSampler construction', a['class_aware_s'],
                   b['class_aware_s'], 's'))
    if args.workers:
        print(_fmt_row(f'one pass, {args.workers} workers', a['pass_s'],
                       b['pass_s'], 's'))
        for k in ('rss', 'pss', 'uss'):
            print(_fmt_row(f'workers\' {k.upper()}, summed',
                           a[f'workers_{k}_mib'], b[f'workers_{k}_mib'],
                           'MiB'))
    for name, key in (('load time', 'load_s'), ('peak RSS', 'peak_mib')):
        ratio = b[key] / a[key]
        print(f'goal: {name} <= {GOAL}x mmdet: {ratio:.2f}x, '
              f'{"met" if ratio <= GOAL else "NOT met"}')


if __name__ == '__main__':
    main()
