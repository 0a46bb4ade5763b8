"""The benchmark's numbers: per-method summary over seeds, the markdown
table and the choice of the best method."""
from typing import Optional, Sequence

import numpy as np

from .methods import Method

#: The eight numbers of the table, in order (keys of LVISMetric's results).
TABLE_KEYS = tuple(f'{task}_{k}' for task in ('bbox', 'segm')
                   for k in ('AP', 'APr', 'APc', 'APf'))


def fmt_percent(v: Optional[float]) -> str:
    """``0.123`` -> ``'12.3'``; None -> ``'-'``."""
    return '-' if v is None else f'{100 * v:.1f}'


def summarize(records: Sequence[dict], methods: Sequence[Method]) -> dict:
    """Per method: the runs' seeds, per-seed values, mean and spread (half
    the range: with two seeds, mean +- spread gives both values)."""
    out = {}
    for m in methods:
        runs = sorted((r for r in records if r['spec']['key'] == m.key),
                      key=lambda r: r['spec']['seed'])
        if not runs:
            continue
        row = dict(label=m.label, seeds=[r['spec']['seed'] for r in runs],
                   values={}, mean={}, spread={})
        for k in TABLE_KEYS:
            vals = [r['metrics'].get(f'lvis/{k}') for r in runs]
            vals = [float(v) for v in vals if v is not None]
            row['values'][k] = vals
            row['mean'][k] = float(np.mean(vals)) if vals else None
            row['spread'][k] = (float((max(vals) - min(vals)) / 2)
                                if len(vals) > 1 else None)
        out[m.key] = row
    return out


def results_markdown(summary: dict) -> str:
    """The table: bbox and segm AP / AP_r / AP_c / AP_f in percent, mean
    +- spread (half the range) over the seeds a method ran."""
    head = ('| method | seeds | ' + ' | '.join(
        f'{k.split("_")[0]} {k.split("_")[1]}' for k in TABLE_KEYS) + ' |')
    lines = [head, '|---|---|' + '---:|' * len(TABLE_KEYS)]
    for row in summary.values():
        cells = []
        for k in TABLE_KEYS:
            mean, spread = row['mean'][k], row['spread'][k]
            cell = fmt_percent(mean)
            if spread is not None:
                cell += f' ± {100 * spread:.1f}'
            cells.append(cell)
        seeds = ','.join(str(s) for s in row['seeds'])
        lines.append(f'| {row["label"]} | {seeds} | ' + ' | '.join(cells) +
                     ' |')
    return '\n'.join(lines)


def pick_best(summary: dict, baseline: str, by: str) -> str:
    """The non-baseline method with the highest ``by`` (e.g. 'segm_APr') on
    its first seed; ties go to the higher mask AP."""
    if by not in TABLE_KEYS:
        raise ValueError(f'best_by must be one of {TABLE_KEYS}, got {by!r}')
    cands = [(row['values'][by][0], row['values']['segm_AP'][0], key)
             for key, row in summary.items()
             if key != baseline and row['values'][by]]
    if not cands:
        raise ValueError('no method besides the baseline has results')
    return max(cands)[2]
