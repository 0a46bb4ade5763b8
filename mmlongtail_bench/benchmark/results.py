"""The benchmark's numbers: per-method summary over seeds, which
differences from the track's baseline exceed the seed range, the markdown
tables and the best method of each track."""
import glob
import json
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np

from .methods import TRACKS, Method, track_baselines

#: The numbers of the table, in order (keys of LVISMetric's results, the
#: fixed and pooled protocols' from the benchmark configs' evaluator).
TABLE_KEYS = ('bbox_AP', 'bbox_APr', 'bbox_APc', 'bbox_APf', 'bbox_APfixed',
              'bbox_APpool', 'segm_AP', 'segm_APr', 'segm_APc', 'segm_APf')
#: Column titles of :data:`TABLE_KEYS`.
COLUMN_TITLES = ('bbox AP', 'AP_r', 'AP_c', 'AP_f', 'AP^fixed', 'AP^pool',
                 'segm AP', 'AP_r', 'AP_c', 'AP_f')
#: Marks of a difference from the baseline beyond the seed range.
ABOVE, BELOW = '▲', '▼'
_TRACK_TITLES = dict(two_stage='Two-stage track (light Mask R-CNN)',
                     one_stage='One-stage track (light RetinaNet, boxes '
                     'only)',
                     query='Query-based track (small DINO, boxes only)')


def fmt_percent(v: Optional[float]) -> str:
    """``0.123`` -> ``'12.3'``; None -> ``'-'``."""
    return '-' if v is None else f'{100 * v:.1f}'


def beyond_seed_range(values: Sequence[float],
                      baseline: Sequence[float]) -> Optional[str]:
    """:data:`ABOVE` if every value is above every baseline value,
    :data:`BELOW` if every one is below, else ``''``; None when either has
    fewer than two seeds (no range to compare with).

    With two seeds each this is ``|mean - mean_base| > spread +
    spread_base`` (half ranges): the two ranges do not overlap.
    """
    if len(values) < 2 or len(baseline) < 2:
        return None
    if min(values) > max(baseline):
        return ABOVE
    if max(values) < min(baseline):
        return BELOW
    return ''


def summarize(records: Sequence[dict], methods: Sequence[Method]) -> dict:
    """Per method (in ``methods`` order): kind, track, the runs' seeds,
    per-seed values, mean and spread (half the range: with two seeds,
    mean +- spread gives both values), the post-hoc values chosen per seed,
    and ``vs_baseline``: per key, :func:`beyond_seed_range` against the
    first method of its track (None for the baseline itself)."""
    out = {}
    for m in methods:
        runs = sorted((r for r in records if r['spec']['key'] == m.key),
                      key=lambda r: r['spec']['seed'])
        if not runs:
            continue
        row = dict(label=m.label, kind=m.kind, track=m.track,
                   init_from=m.init_from,
                   seeds=[r['spec']['seed'] for r in runs], values={},
                   mean={}, spread={}, vs_baseline={})
        if m.kind == 'posthoc':
            row['param'] = m.param
            row['chosen'] = [r['selection']['chosen'] for r in runs]
        for k in TABLE_KEYS:
            vals = [r['metrics'].get(f'lvis/{k}') for r in runs]
            vals = [float(v) for v in vals if v is not None]
            row['values'][k] = vals
            row['mean'][k] = float(np.mean(vals)) if vals else None
            row['spread'][k] = (float((max(vals) - min(vals)) / 2)
                                if len(vals) > 1 else None)
        out[m.key] = row
    for track, base in track_baselines(methods).items():
        if base not in out:
            continue
        for key, row in out.items():
            if row['track'] != track or key == base:
                continue
            row['vs_baseline'] = {
                k: beyond_seed_range(row['values'][k],
                                     out[base]['values'][k])
                for k in TABLE_KEYS
            }
    return out


def _how(row: dict, summary: dict) -> str:
    if row['kind'] == 'train':
        return 'trained'
    base = summary.get(row['init_from'], {}).get('label', row['init_from'])
    if row['kind'] == 'stage2':
        return f'stage 2 on {base}'
    name = row['param'].split('.')[-1]
    chosen = ', '.join(f'{v:g}' for v in row['chosen'])
    return f'post-hoc on {base}, {name} = {chosen}'


def results_markdown(summary: dict) -> str:
    """One table per track: bbox AP / AP_r / AP_c / AP_f / AP^fixed /
    AP^pool and segm AP / AP_r / AP_c / AP_f in percent, mean +- spread
    (half the range) over the seeds a method ran, marked :data:`ABOVE` /
    :data:`BELOW` where the difference from the track's baseline exceeds
    the seed range; ``-`` where a number does not exist (no masks)."""
    parts: List[str] = []
    for track in TRACKS:
        rows = [r for r in summary.values() if r['track'] == track]
        if not rows:
            continue
        lines = [f'**{_TRACK_TITLES[track]}**', '',
                 '| method | how | seeds | ' + ' | '.join(COLUMN_TITLES) +
                 ' |', '|---|---|---|' + '---:|' * len(TABLE_KEYS)]
        for row in rows:
            cells = []
            for k in TABLE_KEYS:
                mean, spread = row['mean'][k], row['spread'][k]
                cell = fmt_percent(mean)
                if spread is not None:
                    cell += f' ± {100 * spread:.1f}'
                cell += row['vs_baseline'].get(k) or ''
                cells.append(cell)
            seeds = ','.join(str(s) for s in row['seeds'])
            lines.append(f'| {row["label"]} | {_how(row, summary)} | '
                         f'{seeds} | ' + ' | '.join(cells) + ' |')
        parts.append('\n'.join(lines))
    return '\n\n'.join(parts)


def pick_best(summary: dict, methods: Sequence[Method],
              by: str) -> Dict[str, str]:
    """Per track, the non-baseline method with the highest mean ``by``
    (e.g. ``'segm_APr'``); ties go to the higher mean box AP. Tracks where
    no such method has ``by`` are left out."""
    if by not in TABLE_KEYS:
        raise ValueError(f'best_by must be one of {TABLE_KEYS}, got {by!r}')
    best = {}
    for track, base in track_baselines(methods).items():
        cands = [(row['mean'][by], row['mean']['bbox_AP'] or 0.0, key)
                 for key, row in summary.items()
                 if row['track'] == track and key != base
                 and row['mean'][by] is not None]
        if cands:
            best[track] = max(cands)[2]
    return best


#: The paired comparison's numbers: box AP and its strict-IoU part (where a
#: regressor shows), the frequency bands, pooled AP and mask AP.
PAIRED_KEYS = ('bbox_AP', 'bbox_AP75', 'bbox_APr', 'bbox_APc', 'bbox_APf',
               'bbox_APpool', 'segm_AP')
_PAIRED_TITLES = ('bbox AP', 'AP75', 'AP_r', 'AP_c', 'AP_f', 'AP^pool',
                  'segm AP')


def final_train_loss(work_dir: str, name: str = 'loss_bbox') -> \
        Optional[float]:
    """Mean of ``name`` over the last training epoch's logged iterations,
    from mmengine's ``vis_data/scalars.json`` in ``work_dir`` (None when
    the run logged none)."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    if not files:
        return None
    rows = []
    with open(files[-1]) as f:
        for line in f:
            rec = json.loads(line)
            if name in rec and 'epoch' in rec:
                rows.append((rec['epoch'], rec[name]))
    if not rows:
        return None
    last = max(e for e, _ in rows)
    return float(np.mean([v for e, v in rows if e == last]))


def paired_markdown(records: Sequence[dict],
                    methods: Sequence[Method]) -> str:
    """For each method built on another row (``Method.built_on``) when both
    ran: the seed means of :data:`PAIRED_KEYS` for the row, the method and
    their difference (points), and the last epoch's mean ``loss_bbox`` of
    each, as one markdown table; ``''`` when no pair ran."""
    by_key: Dict[str, List[dict]] = {}
    for r in records:
        by_key.setdefault(r['spec']['key'], []).append(r)
    labels = {m.key: m.label for m in methods}

    def means(key):
        runs = by_key[key]
        out = []
        for k in PAIRED_KEYS:
            vals = [r['metrics'].get(f'lvis/{k}') for r in runs]
            vals = [float(v) for v in vals if v is not None and v >= 0]
            out.append(float(np.mean(vals)) if vals else None)
        losses = [final_train_loss(r['spec']['work_dir']) for r in runs]
        losses = [v for v in losses if v is not None]
        return out, (float(np.mean(losses)) if losses else None)

    lines = []
    for m in methods:
        if m.built_on is None or m.key not in by_key \
                or m.built_on not in by_key:
            continue
        (mine, my_loss), (base, base_loss) = means(m.key), means(m.built_on)
        cells = []
        for a, b in zip(mine, base):
            if a is None or b is None:
                cells.append('-')
            else:
                cells.append(f'{fmt_percent(b)} → {fmt_percent(a)} '
                             f'({100 * (a - b):+.1f})')
        loss = '-' if my_loss is None or base_loss is None else \
            f'{base_loss:.3f} → {my_loss:.3f}'
        lines.append(f'| {labels[m.key]} | {labels.get(m.built_on)} | ' +
                     ' | '.join(cells) + f' | {loss} |')
    if not lines:
        return ''
    head = ('| method | built on | ' + ' | '.join(_PAIRED_TITLES) +
            ' | final loss_bbox |')
    rule = '|---|---|' + '---:|' * (len(PAIRED_KEYS) + 1)
    return '\n'.join([head, rule] + lines)
