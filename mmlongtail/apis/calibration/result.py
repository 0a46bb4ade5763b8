"""A calibration sweep's outcome: the table of rows, the chosen value, and
its markdown, JSON and plot files."""
import json
import os.path as osp
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from mmlongtail.utils import atomic_write
from .split import SplitInfo

#: The metrics in the table and the plot, and the criteria for the best.
TABLE_KEYS = ('AP', 'APr', 'APc', 'APf')
CRITERIA = TABLE_KEYS
TASKS = ('bbox', 'segm')
#: Label of the row without the swept component.
BASELINE = 'none'


def metric_line(metrics: Dict[str, float]) -> str:
    """``'bbox AP 12.3 APr 4.5 ... | segm AP ...'`` for a log line."""
    parts = []
    for task in TASKS:
        vals = [(k, metric_of(metrics, task, k)) for k in TABLE_KEYS]
        if all(v is None for _, v in vals):
            continue
        parts.append(f'{task} ' + ' '.join(
            f'{k} {percent(v)}' for k, v in vals))
    return ' | '.join(parts)


def metric_of(metrics: Dict[str, float], task: str,
              key: str) -> Optional[float]:
    """``task``'s ``key`` (``'bbox'``, ``'APr'``) in the LVIS metric's
    ``metrics`` (``'lvis/bbox_APr'``), or None when absent."""
    for name, v in metrics.items():
        if name.split('/')[-1] == f'{task}_{key}':
            return float(v)
    return None


def percent(v: Optional[float]) -> str:
    """A metric in percent with one decimal; ``'-'`` when absent or
    undefined (-1)."""
    return '-' if v is None or v < 0 else f'{100 * v:.1f}'


@dataclass
class SweepResult:
    """The outcome of :func:`sweep`.

    Attributes:
        param (str): The qualified parameter (``'NorCal.gamma'`` ...).
        where (str): Where it lives in the config.
        values (list[float]): The grid, in the order given.
        rows (list[dict]): ``{'label', 'value', 'metrics', 'files'}`` per
            row, the baseline (``label='none'``, ``value=None``) first
            when asked;
            metrics as the LVIS metric returns them (``'lvis/bbox_AP'`` ...,
            in [0, 1], -1 where undefined); ``files``: what the row's
            metrics wrote (``'bbox'``, ``'segm'``, ``'per_class'`` ...: path;
            empty without an ``outfile_prefix``), the one place to find
            them.
        split (SplitInfo): The evaluated images.
        criterion (str): ``'AP'``, ``'APr'``, ``'APc'`` or ``'APf'``.
        task (str): ``'bbox'`` or ``'segm'`` (the criterion's).
        best (float): The grid value with the highest criterion (ties: the
            first in grid order); the baseline row never wins.
        config (str), checkpoint (str): What was evaluated.
        files (dict): ``markdown``, ``json``, ``png`` paths (when written).
    """
    param: str
    where: str
    values: List[float]
    rows: List[dict]
    split: SplitInfo
    criterion: str
    task: str
    best: float
    config: str
    checkpoint: str
    files: Dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.param.split('.')[-1]

    def score(self, row: dict) -> Optional[float]:
        """The criterion's value in a row."""
        return metric_of(row['metrics'], self.task, self.criterion)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        tasks = [t for t in TASKS
                 if any(metric_of(r['metrics'], t, 'AP') is not None
                        for r in self.rows)]
        best_row = next(r for r in self.rows if r['value'] == self.best)
        base = next((r for r in self.rows if r['value'] is None), None)
        vs = '' if base is None else \
            f' ({percent(self.score(base))} with `{BASELINE}`)'
        seen = {True: 'yes', False: 'no', None: 'n/a (val)'}[
            self.split.seen_in_training]
        lines = [
            f'# Calibration sweep: {self.param}', '',
            f'- config: `{self.config}`',
            f'- checkpoint: `{self.checkpoint}`',
            f'- parameter: `{self.param}` at `{self.where}`'
            + ('' if base is None else
               f'; row `{BASELINE}`: that component removed'),
            f'- split: **{self.split.name}**, `{self.split.ann_file}` '
            f'({self.split.num_images} images; {self.split.note})',
            f'- images seen in training: {seen}',
            f'- criterion: highest {self.task} {self.criterion} (ties: the '
            'first value of the grid)',
            f'- best: **{self.key} = {self.best:g}**, {self.task} '
            f'{self.criterion} {percent(self.score(best_row))}{vs}', '',
            'LVIS AP in percent ("-": no class of that group in the split).',
            ''
        ]
        head = [self.key] + [f'{t} {k}' for t in tasks for k in TABLE_KEYS]
        lines.append('| ' + ' | '.join(head) + ' |')
        lines.append('|---|' + '---:|' * (len(head) - 1))
        for r in self.rows:
            label = BASELINE if r['value'] is None else f'{r["value"]:g}'
            if r['value'] == self.best:
                label = f'**{label}**'
            lines.append('| ' + ' | '.join(
                [label] + [percent(metric_of(r['metrics'], t, k))
                           for t in tasks for k in TABLE_KEYS]) + ' |')
        return '\n'.join(lines) + '\n'

    def plot(self, path: str) -> str:
        """AP, AP_r, AP_c, AP_f against the parameter, one panel per task
        (dashed: the baseline row; dotted vertical: the best value)."""
        from mmlongtail.analysis.report import agg_pyplot
        plt = agg_pyplot()
        tasks = [t for t in TASKS
                 if any(metric_of(r['metrics'], t, 'AP') is not None
                        for r in self.rows)]
        grid = [r for r in self.rows if r['value'] is not None]
        base = next((r for r in self.rows if r['value'] is None), None)
        fig, axes = plt.subplots(
            1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
        try:
            for ax, task in zip(axes[0], tasks):
                for i, k in enumerate(TABLE_KEYS):
                    color = f'C{i}'
                    pts = [(r['value'], metric_of(r['metrics'], task, k))
                           for r in grid]
                    pts = [(x, 100 * y) for x, y in pts
                           if y is not None and y >= 0]
                    if pts:
                        ax.plot(*zip(*pts), marker='o', color=color,
                                label=k)
                    b = None if base is None else metric_of(
                        base['metrics'], task, k)
                    if b is not None and b >= 0:
                        ax.axhline(100 * b, color=color, ls='--', lw=0.8)
                ax.axvline(self.best, color='grey', ls=':', lw=1)
                ax.set_xlabel(self.key + ('' if base is None else
                                          f' (dashed: {BASELINE})'))
                ax.set_ylabel(f'{task} AP (%)')
                ax.set_title(f'{task}: {self.param} on {self.split.name}')
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(path, dpi=100)
        finally:
            plt.close(fig)
        return path

    def write(self, out_dir: str) -> Dict[str, str]:
        """Write ``calibration_{param}_{split}.{md,json,png}`` into
        ``out_dir``; returns (and records in :attr:`files`) their paths."""
        stem = osp.join(out_dir, f'calibration_{self.param}_{self.split.name}')
        self.files = dict(markdown=stem + '.md', json=stem + '.json',
                          png=stem + '.png')
        atomic_write(self.files['markdown'], self.to_markdown())
        atomic_write(self.files['json'],
                     json.dumps(self.to_dict(), indent=1, default=float))
        self.plot(self.files['png'])
        return self.files


def choose_best(rows: List[dict], task: str, criterion: str) -> float:
    """The value of the grid row with the highest ``task`` ``criterion``
    (ties: the first in order; the baseline row excluded).

    Raises:
        ValueError: The metric is missing from the rows or undefined (-1)
            on this split.
    """
    scored = []
    for r in rows:
        if r['value'] is None:
            continue
        v = metric_of(r['metrics'], task, criterion)
        if v is None or v < 0:
            raise ValueError(
                f'criterion {task} {criterion} is not available on this '
                f'split (value {v}; e.g. no rare class in the images); '
                'choose another criterion')
        scored.append((v, r['value']))
    best = max(s for s, _ in scored)
    return next(value for s, value in scored if s == best)


