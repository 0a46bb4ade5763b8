"""The benchmark's plots: per-class AP against training images for every
method, in frequency bands placed by the dataset's own r/c/f rule; and the
summary, AP_r against AP_f per method with the seeds' range as error
bars."""
from typing import Dict, Sequence, Tuple

import numpy as np

from ..synthetic import read_frequency_rule
from .methods import Method


def frequency_bands(rare_max: int, common_max: int) -> np.ndarray:
    """Edges of the plot's bands of training-image counts.

    Rare classes (1..``rare_max`` images) split at a quarter and a half of
    ``rare_max``, common ones at the middle of ``rare_max..common_max``, and
    frequent ones at 2x and 4x ``common_max``; edges sit half an image off
    the integer counts. For the synthetic set's rule (10, 30): 1-2, 3-5,
    6-10 | 11-20, 21-30 | 31-60, 61-120, >120 images.

    Returns:
        np.ndarray: Increasing edges, ``0`` first and ``inf`` last.
    """
    if not 1 <= rare_max < common_max:
        raise ValueError('need 1 <= rare_max < common_max, got '
                         f'{rare_max}, {common_max}')
    inner = np.array([
        rare_max // 4, rare_max // 2, rare_max, (rare_max + common_max) // 2,
        common_max, 2 * common_max, 4 * common_max
    ]) + 0.5
    inner = np.unique(inner[inner > 1])  # no empty band below 1 image
    return np.concatenate([[0.0], inner, [np.inf]])


def plot_ap_vs_frequency(records: Sequence[dict],
                         methods: Sequence[Method],
                         path: str,
                         rule: Tuple[int, int],
                         seed: int = 0) -> str:
    """Per-class AP (boxes and masks) against training images for every
    method's ``seed`` run: points per class and a line through the mean AP
    of each frequency band (:func:`frequency_bands` of ``rule``, the
    dataset's ``(rare_max, common_max)`` images); rare and common ranges
    shaded. Box-only runs (the one-stage and query tracks) appear in the
    box panel only."""
    from mmlongtail.analysis.per_class import load_per_class
    from mmlongtail.analysis.report import agg_pyplot

    rare_max, common_max = rule
    edges = frequency_bands(rare_max, common_max)
    plt = agg_pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5), sharey=True)
    cmap = plt.get_cmap('tab20')
    try:
        top = 0.0
        for i, m in enumerate(methods):
            rec = next((r for r in records if r['spec']['key'] == m.key
                        and r['spec']['seed'] == seed), None)
            if rec is None:
                continue
            res = load_per_class(rec['per_class'])
            counts = np.maximum(res.image_count.astype(np.float64), 0.8)
            band = np.digitize(counts, edges) - 1
            style = '-' if i < 20 else '--'
            for ax, task in zip(axes, ('bbox', 'segm')):
                if task not in res.iou_types:
                    continue
                ap = res.per_class(task)
                ok = np.isfinite(ap)
                jitter = 1 + 0.06 * (i - len(methods) / 2) / len(methods)
                ax.scatter(counts[ok] * jitter, ap[ok], s=6, alpha=0.2,
                           color=cmap(i % 20))
                top = max(top, float(ap[ok].max(initial=0.0)))
                xs, ys = [], []
                for b in range(len(edges) - 1):
                    sel = ok & (band == b)
                    if sel.any():
                        xs.append(np.exp(np.log(counts[sel]).mean()))
                        ys.append(ap[sel].mean())
                ax.plot(xs, ys, style, marker='o', ms=3, lw=1.4,
                        color=cmap(i % 20), label=m.label)
        for ax, task in zip(axes, ('bbox', 'segm')):
            ax.set_xscale('log')
            ax.axvspan(0.7, rare_max + 0.5, color='#d62728', alpha=0.06)
            ax.axvspan(rare_max + 0.5, common_max + 0.5, color='#ff7f0e',
                       alpha=0.06)
            ax.set_xlabel('training images containing the class '
                          f'(shaded: rare <= {rare_max}, common <= '
                          f'{common_max})')
            ax.set_title(f'{task} AP per class (lines: band means), '
                         f'seed {seed}')
            ax.grid(True, which='both', alpha=0.3)
        axes[0].set_ylabel('AP')
        axes[0].set_ylim(-0.02, min(1.02, top + 0.08))
        axes[0].legend(loc='upper left', fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


_KIND_MARKERS = dict(train='o', stage2='s', posthoc='D')


def plot_rare_vs_frequent(summary: dict, path: str) -> str:
    """The benchmark at a glance: per method (rows of
    :func:`.results.summarize`), mean AP_r against mean AP_f, boxes and
    masks side by side, the seeds' range as error bars; markers by kind
    (trained / stage 2 / post-hoc), hollow for the one-stage and query
    tracks, dashed lines through the two-stage baseline."""
    from mmlongtail.analysis.report import agg_pyplot

    plt = agg_pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5))
    cmap = plt.get_cmap('tab20')
    try:
        for ax, task in zip(axes, ('bbox', 'segm')):
            r, f = f'{task}_APr', f'{task}_APf'
            for i, row in enumerate(summary.values()):
                if row['mean'][r] is None or row['mean'][f] is None:
                    continue
                x, y = 100 * row['mean'][f], 100 * row['mean'][r]
                xerr = [[x - 100 * min(row['values'][f])],
                        [100 * max(row['values'][f]) - x]]
                yerr = [[y - 100 * min(row['values'][r])],
                        [100 * max(row['values'][r]) - y]]
                colour = cmap(i % 20)
                hollow = row['track'] != 'two_stage'
                ax.errorbar(x, y, xerr=xerr, yerr=yerr,
                            fmt=_KIND_MARKERS[row['kind']], ms=7,
                            color=colour, mfc='white' if hollow else colour,
                            capsize=3, lw=1.2, label=row['label'])
                ax.annotate(row['label'], (x, y), xytext=(4, 4),
                            textcoords='offset points', fontsize=7)
            base = next((row for row in summary.values()
                         if row['track'] == 'two_stage'), None)
            if base is not None and base['mean'][r] is not None:
                ax.axhline(100 * base['mean'][r], color='grey', ls='--',
                           lw=0.8)
                ax.axvline(100 * base['mean'][f], color='grey', ls='--',
                           lw=0.8)
            ax.set_xlabel(f'{task} AP_f (frequent classes)')
            ax.set_ylabel(f'{task} AP_r (rare classes)')
            ax.set_title(f'{task}: rare against frequent (mean, error bars: '
                         'seed range)')
            ax.grid(True, alpha=0.3)
        axes[0].legend(loc='best', fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def rule_of_runs(records: Sequence[dict]) -> Tuple[int, int]:
    """The frequency rule recorded in the training file of every run (the
    same for all, else ``ValueError``)."""
    rules: Dict[str, Tuple[int, int]] = {}
    for r in records:
        path = r['spec']['train_ann_file']
        if path not in rules:
            rules[path] = read_frequency_rule(path)
    if len(set(rules.values())) != 1:
        raise ValueError('the runs trained on datasets with different '
                         f'frequency rules: {rules}')
    return next(iter(rules.values()))
