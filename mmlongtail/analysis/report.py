"""The long-tail report: plots and a markdown summary of an LVIS evaluation.

:func:`analyze_longtail` reads the metric's ``per_class.json`` (and optionally
a checkpoint) and writes into ``out_dir``:

* ``ap_vs_train_images_{iou}.png``: (a) per-class AP against the class's
  training image count, log x, coloured rare / common / frequent;
* ``weight_norms.png`` (with a checkpoint): (c) ‖w_j‖ of the box
  classifier against the class's training instance count n_j (a panel of a
  normalized, cosine classifier says that its norms do not affect its
  scores);
* ``longtail_summary.md``: (b) the per-group AP / AP50 / AR table per iou type,
  the norm-vs-frequency rank correlation, and links to the figures.
"""
import os
import os.path as osp
from typing import Dict, Optional, Sequence, Union

import numpy as np

from mmlongtail.datasets.category_stats import (FREQUENCY_GROUPS,
                                                StatsSource,
                                                load_category_stats)
from .per_class import (GROUP_NAMES, PerClassResult, check_same_classes,
                        group_table, load_per_class, training_counts)
from .weight_norms import (ConfigSource, as_config, box_classifier_layouts,
                           box_classifier_normalized, checkpoint_classes,
                           classifier_weight_norms, config_from_checkpoint,
                           load_checkpoint, spearman)

#: What the summary says of a cosine classifier, and its panel's title.
NORMALIZED_NOTE = ('normalized (cosine) classifier: ||w_j|| does not affect '
                   'its scores')
NORMALIZED_TITLE = 'cosine classifier: ||w_j|| does not affect scores'

COLORS = {'r': '#d62728', 'c': '#ff7f0e', 'f': '#1f77b4'}


def agg_pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_ap_vs_count(counts: np.ndarray, ap: np.ndarray,
                     frequency: Sequence[str], path: str,
                     title: str = 'per-class AP') -> str:
    """Scatter per-class AP (NaN skipped) against training image counts
    (log x; counts of 0 drawn at 0.8), coloured by LVIS group."""
    plt = agg_pyplot()
    freq = np.asarray(frequency)
    x = np.maximum(np.asarray(counts, np.float64), 0.8)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for g in FREQUENCY_GROUPS:
            m = (freq == g) & np.isfinite(ap)
            ax.scatter(x[m], ap[m], s=12, alpha=0.7, color=COLORS[g],
                       label=f'{GROUP_NAMES[g]} ({int(m.sum())})')
        ax.set_xscale('log')
        ax.set_xlabel('training images containing the class')
        ax.set_ylabel('AP')
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(loc='upper left')
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def weight_norm_title(name: str, rho: float, normalized: bool) -> str:
    """The title of classifier ``name``'s weight-norm panel (``normalized``:
    a cosine classifier)."""
    title = f'{name}: Spearman {rho:+.2f}'
    return f'{title}\n{NORMALIZED_TITLE}' if normalized else title


def plot_weight_norms(counts: np.ndarray, norms: Dict[str, np.ndarray],
                      frequency: Sequence[str], path: str,
                      normalized: Optional[Dict[str, str]] = None) -> str:
    """‖w_j‖ against training instance count n_j (log x), one panel per
    classifier (Cascade stages side by side).

    Args:
        normalized (dict, optional): ``{name: predictor type}`` of the
            cosine classifiers (:func:`~mmlongtail.analysis.
            box_classifier_normalized`); their panels say that the norms do
            not affect the scores, rather than read as frequency imbalance.
    """
    normalized = normalized or {}
    plt = agg_pyplot()
    freq = np.asarray(frequency)
    x = np.maximum(np.asarray(counts, np.float64), 0.8)
    fig, axes = plt.subplots(
        1, len(norms), figsize=(5 * len(norms), 4), squeeze=False)
    try:
        for ax, (name, nv) in zip(axes[0], norms.items()):
            for g in FREQUENCY_GROUPS:
                m = freq == g
                ax.scatter(x[m], nv[m], s=10, alpha=0.7, color=COLORS[g],
                           label=GROUP_NAMES[g])
            ax.set_xscale('log')
            ax.set_xlabel('training instances n_j')
            ax.set_ylabel('||w_j||')
            ax.set_title(
                weight_norm_title(name, spearman(counts, nv),
                                  name in normalized),
                fontsize=10 if name in normalized else None)
            ax.grid(True, which='both', alpha=0.3)
            ax.legend(loc='upper left')
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def _fmt(v: float) -> str:
    return '-' if v is None or not np.isfinite(v) else f'{100 * v:.1f}'


def group_table_markdown(result: PerClassResult, iou_type: str) -> str:
    """(b) as a markdown table (values in %)."""
    t = group_table(result, iou_type)
    lines = [
        '| group | classes evaluated | AP | AP50 | AR@300 |',
        '|---|---:|---:|---:|---:|',
    ]
    for g in FREQUENCY_GROUPS + ('all', ):
        r = t[g]
        name = GROUP_NAMES.get(g, 'all')
        lines.append(f'| {name} | {r["num_classes"]} | {_fmt(r["AP"])} | '
                     f'{_fmt(r["AP50"])} | {_fmt(r["AR"])} |')
    return '\n'.join(lines)


def analyze_longtail(per_class_file: str,
                     out_dir: str,
                     stats: Optional[StatsSource] = None,
                     checkpoint: Optional[Union[str, dict]] = None,
                     config: Optional[ConfigSource] = None
                     ) -> Dict[str, str]:
    """Write the long-tail report of one evaluation.

    Args:
        per_class_file (str): ``{outfile_prefix}.per_class.json`` written by
            ``mmlongtail.LVISMetric``.
        out_dir (str): Where the PNGs and ``longtail_summary.md`` go.
        stats: Training statistics for the x axes (``'lvis_v1'``, a stats
            JSON or the train annotation file). Defaults to the counts the
            evaluation's ground-truth categories carry.
        checkpoint: A checkpoint path or state dict for the weight-norm plot.
        config: The run's config, which says which classifier row is which
            class (its losses are asked). Defaults to the config mmengine
            stored in the checkpoint's ``meta['cfg']``.

    Returns:
        dict: ``{'summary': md path, 'ap_vs_images_<iou>': png path, ...,
        'weight_norms': png path}``.
    """
    result = load_per_class(per_class_file)
    cs = None
    if stats is not None:
        cs = load_category_stats(stats, owner='the evaluated categories')
    if checkpoint is not None:
        # everything is checked before anything is written
        ckpt_source = checkpoint if isinstance(checkpoint, str) \
            else 'the checkpoint'
        checkpoint = load_checkpoint(checkpoint)
        # parsed once here; the layout, norms and normalization ask it
        config = as_config(config_from_checkpoint(checkpoint)
                           if config is None else config)
        classes = checkpoint_classes(checkpoint)
        if classes is None:
            classes = next(iter(
                box_classifier_layouts(config).values())).num_classes
            ckpt_source += ' (num_classes of its config)'
        else:
            ckpt_source += " (meta['dataset_meta']['classes'])"
        if cs is not None:
            check_same_classes(
                cs.names, f'the training statistics {cs.source}', classes,
                f'the checkpoint {ckpt_source}',
                'Pass the statistics of the dataset the checkpoint was '
                'trained on (its train annotation file or a stats JSON)')
        check_same_classes(
            result.names, f'the evaluation {result.source}', classes,
            f'the checkpoint {ckpt_source}',
            'Evaluate the checkpoint on its own classes')
    img_counts = training_counts(result, cs, 'image_count')
    os.makedirs(out_dir, exist_ok=True)
    outputs: Dict[str, str] = {}
    md = [
        '# Long-tail analysis', '',
        f'- evaluation: `{result.source}`',
        '- training counts: '
        f'`{cs.source if cs else "ground-truth categories"}`',
        f'- categories: {len(result.cat_ids)} '
        f'(rare {result.frequency.count("r")}, '
        f'common {result.frequency.count("c")}, frequent '
        f'{result.frequency.count("f")})', ''
    ]
    for iou in result.iou_types:
        ap = result.per_class(iou, 'AP')
        png = osp.join(out_dir, f'ap_vs_train_images_{iou}.png')
        plot_ap_vs_count(img_counts, ap, result.frequency, png,
                         f'{iou} AP per class vs training images')
        outputs[f'ap_vs_images_{iou}'] = png
        fin = np.isfinite(ap)
        rho = spearman(img_counts[fin], ap[fin])
        s = result.metrics[iou]['summary']
        md += [
            f'## {iou}', '',
            group_table_markdown(result, iou), '',
            f'Evaluator summary: AP {_fmt(s.get("AP"))}, APr '
            f'{_fmt(s.get("APr"))}, APc {_fmt(s.get("APc"))}, APf '
            f'{_fmt(s.get("APf"))}. Spearman(AP, training images) over '
            f'{int(fin.sum())} classes: {rho:+.2f}.', '',
            f'![{iou} AP vs training images]({osp.basename(png)})', ''
        ]
    if checkpoint is not None:
        inst = training_counts(result, cs, 'instance_count')
        norms = classifier_weight_norms(checkpoint, config,
                                        len(result.cat_ids))
        normalized = box_classifier_normalized(config)
        png = osp.join(out_dir, 'weight_norms.png')
        plot_weight_norms(inst, norms, result.frequency, png, normalized)
        outputs['weight_norms'] = png
        md += [
            '## Classifier weight norms', '',
            'Kang et al. (ICLR 2020): with instance-balanced training, '
            '||w_j|| of a plain linear classifier grows with n_j.', ''
        ]
        for name, kind in normalized.items():
            md += [
                f'**{name} is a {NORMALIZED_NOTE}** ({kind} divides each '
                'row by its norm in forward), so its norms below are no '
                'frequency imbalance of its predictions.', ''
            ]
        md += [
            '| classifier | normalized | mean ‖w‖ rare | common | '
            'frequent | Spearman(‖w‖, n_j) |',
            '|---|---|---:|---:|---:|---:|'
        ]
        freq = np.asarray(result.frequency)
        for name, nv in norms.items():
            cells = [
                f'{nv[freq == g].mean():.3f}' if (freq == g).any() else '-'
                for g in FREQUENCY_GROUPS
            ]
            md.append(f'| {name} | '
                      f'{"yes" if name in normalized else "no"} | ' +
                      ' | '.join(cells) + f' | {spearman(inst, nv):+.2f} |')
        md += ['', '![weight norms](weight_norms.png)', '']
    path = osp.join(out_dir, 'longtail_summary.md')
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(md))
    outputs['summary'] = path
    return outputs
