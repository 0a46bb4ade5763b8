"""The second edition's open questions, answered from the benchmark's own
runs (issue 29), as a section of ``results.md`` and one plot each.

* **Where do boxes and masks part?** (:func:`iou_breakdown`): a run's
  standard-pass detections (``lvis.bbox.json`` / ``lvis.segm.json`` in its
  work dir, each image's best ``max_dets``) evaluated again at each of
  LVIS's ten IoU thresholds, per frequency band, for boxes and masks: the
  AP at IoU 0.5 is the table's AP50, the mean over the ten its AP. The
  rows asked about (balanced softmax; EQLv2 and ECM with their
  learning-rate sweep and CAB) against the CE baseline.
* **Which classes?** (:func:`per_class_shift`): a method's per-class box
  and mask AP minus the baseline's (seed means, from the runs' per-class
  files), counted by frequency band, e.g. how many classes lose box AP and
  gain mask AP.
* **The same detection's box and mask** (:func:`mask_matched_boxes`): for
  each ground-truth object, the highest-scoring detection of its class
  whose mask overlaps it (mask IoU >= 0.5), and that detection's box: its
  IoU with the object's box and its area over the object's box area.
  Boxes and masks come from one detection, so a mask that matches with a
  box that does not says the box is loose while the detection is right.
* **Held-out curves** (:func:`posthoc_curves`): every candidate value's
  held-out box AP / AP_r, which the post-hoc rows chose from (logit
  adjustment's τ next to NorCal's γ).

Nothing here trains or runs a model: it reads what the runs wrote.
"""
import json
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .methods import Method

#: The rows whose boxes and masks the IoU breakdown follows (when run),
#: against the first: the baseline, the row whose box AP falls while its
#: mask AP rises (balanced softmax), and the rows that lost their boxes in
#: the second edition with the changes that might restore them.
BREAKDOWN_ROWS = ('baseline_ce', 'balanced_softmax', 'eqlv2',
                  'eqlv2_lr0p02', 'eqlv2_lr0p01', 'cab_eqlv2', 'ecm',
                  'ecm_lr0p02', 'ecm_lr0p01', 'cab_ecm')
#: The row whose per-class box / mask shift is counted against the
#: baseline.
SHIFT_ROW = 'balanced_softmax'
#: The post-hoc rows whose held-out curves are drawn side by side.
CURVE_ROWS = ('logit_adjustment', 'norcal')
#: LVIS's IoU thresholds (0.50:0.05:0.95), the first axis of its
#: precision array.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
BANDS = ('r', 'c', 'f')
#: Where :func:`iou_breakdown` remembers a run's numbers (its work dir).
BREAKDOWN_FILE = 'ap_per_iou.json'
#: Where :func:`mask_matched_boxes` remembers a run's numbers.
MATCHED_FILE = 'mask_matched_boxes.json'
_TASKS = (('bbox', 'box'), ('segm', 'mask'))


def nan_mean(x, axis=None):
    """``np.nanmean`` without its warning where every entry is NaN (NaN
    there)."""
    x = np.asarray(x, np.float64)
    n = (~np.isnan(x)).sum(axis=axis)
    total = np.nansum(x, axis=axis)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _gt(val_ann_file: str, cache: dict):
    from mmlongtail.evaluation.lvis_gt import LVISGroundTruth, normalize_gt

    if val_ann_file not in cache:
        with open(val_ann_file, encoding='utf-8') as f:
            data = json.load(f)
        cache[val_ann_file] = LVISGroundTruth(
            normalize_gt(data, val_ann_file), val_ann_file)
    return cache[val_ann_file]


def _detections(path: str, with_masks: bool):
    from mmlongtail.evaluation.lvis_detections import DetectionColumns

    with open(path, encoding='utf-8') as f:
        anns = json.load(f)
    return DetectionColumns(
        image_id=np.array([a['image_id'] for a in anns], np.int64),
        category_id=np.array([a['category_id'] for a in anns], np.int64),
        bbox=np.array([a['bbox'] for a in anns],
                      np.float64).reshape(-1, 4),
        score=np.array([a['score'] for a in anns], np.float64),
        segmentation=[a['segmentation'] for a in anns]
        if with_masks else None)


def _max_dets(work_dir: str) -> int:
    """The per-image cap the run's standard pass was evaluated with (its
    per-class file records it)."""
    from mmlongtail.analysis.per_class import load_per_class
    from mmlongtail.evaluation.per_class_file import path_for
    path = path_for(osp.join(work_dir, 'lvis'))
    max_dets = load_per_class(path).max_dets
    if max_dets is None:
        raise ValueError(f'{path} records no max_dets')
    return max_dets


def ap_per_iou(precision: np.ndarray, frequency: Sequence[str],
               band: Optional[str] = None) -> np.ndarray:
    """``(T,)`` AP at each IoU threshold from LVIS's ``(T, R, K, A)``
    precision (area 'all'): the mean over recall thresholds and the
    categories with ground truth (``-1`` entries left out), all categories
    or those of ``band``; NaN where none has ground truth."""
    p = precision[..., 0]  # (T, R, K)
    if band is not None:
        keep = np.array([f == band for f in frequency])
        p = p[:, :, keep]
    valid = p > -1
    num = np.where(valid, p, 0).sum(axis=(1, 2))
    den = valid.sum(axis=(1, 2))
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _remembered(record: dict, name: str, version: int, compute):
    """``compute(sources)`` for the run of ``record``, remembered in
    its work dir as ``name`` with the hashes of the files it reads (the val
    ground truth and the run's ``lvis.bbox.json`` / ``lvis.segm.json``):
    computed again when one of them, or ``version``, changes. ``sources``:
    ``{'bbox' | 'segm': path}`` of the files the run wrote."""
    from .identity import file_sha256

    work_dir = record['spec']['work_dir']
    sources = {task: osp.join(work_dir, f'lvis.{task}.json')
               for task, _ in _TASKS}
    sources = {t: p for t, p in sources.items() if osp.isfile(p)}
    key = dict(version=version,
               val=file_sha256(record['spec']['val_ann_file']),
               **{t: file_sha256(p) for t, p in sources.items()})
    saved = osp.join(work_dir, name)
    if osp.isfile(saved):
        with open(saved, encoding='utf-8') as f:
            old = json.load(f)
        if old.get('key') == key:
            return old['value']
    return_value = compute(sources)
    with open(saved, 'w', encoding='utf-8') as f:
        json.dump(dict(key=key, value=return_value), f)
    return return_value


def iou_breakdown(record: dict, cache: Optional[dict] = None) -> \
        Dict[str, Dict[str, List[float]]]:
    """AP at each IoU threshold of one run's standard-pass detections:
    ``{'bbox' | 'segm': {'all' | 'r' | 'c' | 'f': [10 floats]}}`` (a task
    is left out when the run wrote no detections for it). Remembered in
    the run's work dir (:data:`BREAKDOWN_FILE`) with the hashes of the
    files it was computed from, and computed again when they change.

    Raises:
        FileNotFoundError: The run's work dir has no per-class file (it
            was not evaluated).
    """
    from mmlongtail.evaluation.lvis_backends import run_evaluation

    cache = {} if cache is None else cache

    def compute(sources):
        gt = _gt(record['spec']['val_ann_file'], cache)
        max_dets = _max_dets(record['spec']['work_dir'])
        out = {}
        for task, path in sources.items():
            res = run_evaluation('fast', gt,
                                 _detections(path, task == 'segm'), task,
                                 max_dets=max_dets)
            out[task] = {
                'all': ap_per_iou(res.precision, gt.frequency).tolist(),
                **{b: ap_per_iou(res.precision, gt.frequency, b).tolist()
                   for b in BANDS}
            }
        return out

    return _remembered(record, BREAKDOWN_FILE, 2, compute)


def _median(x: Sequence[float]) -> Optional[float]:
    return float(np.median(x)) if len(x) else None


def mask_matched_boxes(record: dict, cache: Optional[dict] = None) -> \
        Optional[Dict[str, dict]]:
    """Per frequency band (and ``'all'``), over the val ground-truth
    objects: ``objects``; ``found``, those that a detection of their class
    covers with mask IoU >= 0.5; and for each found object the
    highest-scoring such detection's box: ``box_below_half`` (share of
    found objects whose box IoU is under 0.5), the medians ``box_iou``,
    ``mask_iou`` and ``area_ratio`` (the detection's box area over the
    object's box area; None where nothing was found). None when the run
    wrote no masks. Remembered as :data:`MATCHED_FILE` like
    :func:`iou_breakdown`."""
    import pycocotools.mask as mask_util

    cache = {} if cache is None else cache

    def compute(sources):
        if 'segm' not in sources:
            return None
        gt = _gt(record['spec']['val_ann_file'], cache)
        freq = dict(zip(gt.cat_ids.tolist(), gt.frequency))
        coco = gt.faster_coco()
        objects: Dict[Tuple[int, int], List[dict]] = {}
        for a in gt.dataset['annotations']:
            objects.setdefault((a['image_id'], a['category_id']),
                               []).append(a)
        with open(sources['segm'], encoding='utf-8') as f:
            dets: Dict[Tuple[int, int], List[dict]] = {}
            for d in json.load(f):
                dets.setdefault((d['image_id'], d['category_id']),
                                []).append(d)
        rows: Dict[str, List[Tuple[float, float, float]]] = {
            b: [] for b in BANDS}
        counts = {b: 0 for b in BANDS}
        for key, objs in objects.items():
            band = freq[key[1]]
            counts[band] += len(objs)
            mine = sorted(dets.get(key, []), key=lambda d: -d['score'])
            if not mine:
                continue
            crowd = [0] * len(objs)
            box_iou = mask_util.iou([d['bbox'] for d in mine],
                                    [o['bbox'] for o in objs], crowd)
            mask_iou = mask_util.iou(
                [d['segmentation'] for d in mine],
                [coco.annToRLE(o) for o in objs], crowd)
            for j, o in enumerate(objs):
                hit = np.flatnonzero(mask_iou[:, j] >= 0.5)
                if not len(hit):
                    continue
                i = hit[0]
                w, h = mine[i]['bbox'][2:]
                rows[band].append((float(box_iou[i, j]),
                                   float(mask_iou[i, j]),
                                   w * h / (o['bbox'][2] * o['bbox'][3])))
        rows['all'] = [r for b in BANDS for r in rows[b]]
        counts['all'] = sum(counts.values())
        out = {}
        for band, found in rows.items():
            arr = np.array(found, np.float64).reshape(-1, 3)
            out[band] = dict(
                objects=counts[band], found=len(found),
                box_below_half=float((arr[:, 0] < 0.5).mean())
                if len(found) else None,
                box_iou=_median(arr[:, 0]), mask_iou=_median(arr[:, 1]),
                area_ratio=_median(arr[:, 2]))
        return out

    return _remembered(record, MATCHED_FILE, 1, compute)


def matched_markdown(records: Sequence[dict], labels: dict,
                     rows: Sequence[str] = (BREAKDOWN_ROWS[0], SHIFT_ROW)
                     ) -> str:
    """Seed means of :func:`mask_matched_boxes` per band for the ``rows``
    that ran with masks, as a table; ``''`` when fewer than two did."""
    cache: dict = {}
    got = {}
    for key in rows:
        per_seed = [mask_matched_boxes(r, cache) for r in _runs(records, key)]
        per_seed = [m for m in per_seed if m is not None]
        if per_seed:
            got[key] = per_seed
    if len(got) < 2:
        return ''

    def mean(runs, band, name, scale=1.0, fmt='.2f', unit=''):
        vals = [r[band][name] for r in runs if r[band][name] is not None]
        return f'{scale * np.mean(vals):{fmt}}{unit}' if vals else '-'

    lines = ['| method | band | objects | found by a mask | of them, box '
             'IoU < 0.5 | median box IoU | median mask IoU | median box '
             'area / object\'s |', '|---|---|' + '---:|' * 6]
    for key, runs in got.items():
        for band in BANDS + ('all', ):
            lines.append(
                f'| {labels.get(key, key)} | {band} | '
                f'{mean(runs, band, "objects", fmt=".0f")} | '
                f'{mean(runs, band, "found", fmt=".0f")} | '
                f'{mean(runs, band, "box_below_half", 100, ".0f", "%")} | '
                f'{mean(runs, band, "box_iou")} | '
                f'{mean(runs, band, "mask_iou")} | '
                f'{mean(runs, band, "area_ratio")} |')
    return '\n'.join(lines)


def _runs(records: Sequence[dict], key: str) -> List[dict]:
    return sorted((r for r in records if r['spec']['key'] == key
                   and r['spec'].get('kind', 'train') == 'train'),
                  key=lambda r: r['spec']['seed'])


def breakdown_table(records: Sequence[dict], methods: Sequence[Method],
                    rows: Sequence[str] = BREAKDOWN_ROWS) -> Tuple[str,
                                                                   dict]:
    """Markdown table of seed-mean AP at IoU 0.5, 0.6, 0.7, 0.8, 0.9 and
    the mean over all ten, boxes and masks, for the ``rows`` that ran (the
    first, the baseline, needed); and the per-run breakdowns
    ``{key: [per-seed iou_breakdown]}``. ``('', {})`` when fewer than two
    of the rows ran."""
    labels = {m.key: m.label for m in methods}
    cache: dict = {}
    got = {k: [iou_breakdown(r, cache) for r in _runs(records, k)]
           for k in rows}
    got = {k: v for k, v in got.items() if v}
    if rows[0] not in got or len(got) < 2:
        return '', {}
    cols = (0, 2, 4, 6, 8)
    head = ('| method | task | ' + ' | '.join(
        f'AP@{IOU_THRESHOLDS[i]:.1f}' for i in cols) +
            ' | AP (mean of 10) | AP_r@0.5 | AP_r (mean of 10) |')
    lines = [head, '|---|---|' + '---:|' * (len(cols) + 3)]
    for key, runs in got.items():
        for task, name in _TASKS:
            per_seed = [b[task] for b in runs if task in b]
            if not per_seed:
                continue
            curve = nan_mean([s['all'] for s in per_seed], axis=0)
            rare = nan_mean([s['r'] for s in per_seed], axis=0)
            cells = [f'{100 * curve[i]:.1f}' for i in cols]
            cells += [f'{100 * np.mean(curve):.1f}',
                      f'{100 * rare[0]:.1f}', f'{100 * np.mean(rare):.1f}']
            lines.append(f'| {labels.get(key, key)} | {name} | ' +
                         ' | '.join(cells) + ' |')
    return '\n'.join(lines), got


def _per_class(record: dict) -> Tuple[List[str], Dict[str, np.ndarray]]:
    from mmlongtail.analysis.per_class import load_per_class
    res = load_per_class(record['per_class'])
    return res.frequency, {
        task: res.per_class(task)
        for task, _ in _TASKS if task in res.iou_types
    }


def per_class_shift(records: Sequence[dict], key: str = SHIFT_ROW,
                    base: str = BREAKDOWN_ROWS[0]) -> Optional[dict]:
    """Per class, the seed-mean box AP and mask AP of ``key`` minus those
    of ``base``: ``{'frequency': [K], 'bbox': [K], 'segm': [K],
    'counts': {band: {'box down, mask up': n, 'both down': n, 'both up':
    n, 'box up, mask down': n}}}``; None unless both ran with masks."""
    mine, theirs = _runs(records, key), _runs(records, base)
    if not mine or not theirs:
        return None

    def mean(runs):
        freq, tasks = None, {t: [] for t, _ in _TASKS}
        for r in runs:
            freq, pc = _per_class(r)
            for t in tasks:
                if t not in pc:
                    return None, None
                tasks[t].append(pc[t])
        return freq, {t: nan_mean(v, axis=0) for t, v in tasks.items()}

    freq, a = mean(mine)
    _, b = mean(theirs)
    if a is None or b is None:
        return None
    d_box, d_mask = a['bbox'] - b['bbox'], a['segm'] - b['segm']
    counts = {}
    for band in BANDS + ('all', ):
        keep = np.array([band == 'all' or f == band for f in freq])
        keep &= ~(np.isnan(d_box) | np.isnan(d_mask))
        x, y = d_box[keep], d_mask[keep]
        counts[band] = {
            'box down, mask up': int(((x < 0) & (y > 0)).sum()),
            'both down': int(((x < 0) & (y < 0)).sum()),
            'both up': int(((x > 0) & (y > 0)).sum()),
            'box up, mask down': int(((x > 0) & (y < 0)).sum()),
            'classes': int(keep.sum()),
        }
    return dict(frequency=freq, bbox=d_box.tolist(), segm=d_mask.tolist(),
                counts=counts)


def shift_markdown(shift: dict, label: str, base_label: str) -> str:
    """The per-band counts of :func:`per_class_shift` as a table."""
    keys = ('box down, mask up', 'both down', 'both up',
            'box up, mask down')
    lines = [f'| band ({label} − {base_label}) | classes | ' +
             ' | '.join(keys) + ' | mean Δ box AP | mean Δ mask AP |',
             '|---|---:|' + '---:|' * (len(keys) + 2)]
    freq = shift['frequency']
    d_box, d_mask = np.array(shift['bbox']), np.array(shift['segm'])
    for band in BANDS + ('all', ):
        keep = np.array([band == 'all' or f == band for f in freq])
        c = shift['counts'][band]
        lines.append(
            f'| {band} | {c["classes"]} | ' +
            ' | '.join(str(c[k]) for k in keys) +
            f' | {100 * nan_mean(d_box[keep]):+.1f} | '
            f'{100 * nan_mean(d_mask[keep]):+.1f} |')
    return '\n'.join(lines)


def posthoc_curves(records: Sequence[dict],
                   rows: Sequence[str] = CURVE_ROWS) -> Dict[str, dict]:
    """Per post-hoc row of ``rows`` that ran: its parameter, candidate
    values and, per seed, the held-out box AP and AP_r of each value and
    the value chosen: ``{key: {'param', 'values', 'seeds': {seed: {'AP',
    'APr', 'chosen'}}}}``."""
    out: Dict[str, dict] = {}
    for key in rows:
        runs = sorted((r for r in records if r['spec']['key'] == key
                       and r.get('selection')),
                      key=lambda r: r['spec']['seed'])
        for r in runs:
            sel = r['selection']
            row = out.setdefault(key, dict(param=sel['param'],
                                           values=list(sel['values']),
                                           seeds={}))
            row['seeds'][r['spec']['seed']] = dict(
                AP=[h['lvis/bbox_AP'] for h in sel['heldout']],
                APr=[h['lvis/bbox_APr'] for h in sel['heldout']],
                chosen=sel['chosen'])
    return out


def curves_markdown(curves: Dict[str, dict], labels: dict) -> str:
    """One table per row of :func:`posthoc_curves`: held-out box AP and
    AP_r (seed means) at each candidate value, the chosen values."""
    parts = []
    for key, row in curves.items():
        seeds = sorted(row['seeds'])
        ap = np.mean([row['seeds'][s]['AP'] for s in seeds], axis=0)
        apr = np.mean([row['seeds'][s]['APr'] for s in seeds], axis=0)
        chosen = ', '.join(f'{row["seeds"][s]["chosen"]:g} (seed {s})'
                           for s in seeds)
        head = (f'| {labels.get(key, key)}: {row["param"]} | ' +
                ' | '.join(f'{v:g}' for v in row['values']) + ' |')
        lines = [head, '|---|' + '---:|' * len(row['values']),
                 '| held-out box AP | ' +
                 ' | '.join(f'{100 * v:.1f}' for v in ap) + ' |',
                 '| held-out box AP_r | ' +
                 ' | '.join(f'{100 * v:.1f}' for v in apr) + ' |']
        parts.append('\n'.join(lines) + f'\n\nChosen: {chosen}.')
    return '\n\n'.join(parts)


def plot_questions(breakdowns: dict, shift: Optional[dict],
                   curves: Dict[str, dict], labels: dict,
                   path: str) -> str:
    """Three panels: AP against the IoU threshold (boxes solid, masks
    dashed) for the breakdown rows; per class Δ box AP against Δ mask AP
    of :data:`SHIFT_ROW` (coloured by band); the held-out box AP of each
    candidate value of :data:`CURVE_ROWS` (one line per seed)."""
    from mmlongtail.analysis.report import agg_pyplot

    plt = agg_pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(19, 6))
    cmap = plt.get_cmap('tab10')
    try:
        ax = axes[0]
        for i, (key, runs) in enumerate(breakdowns.items()):
            for task, style in (('bbox', '-'), ('segm', '--')):
                seeds = [b[task]['all'] for b in runs if task in b]
                if seeds:
                    ax.plot(IOU_THRESHOLDS, 100 * nan_mean(seeds, axis=0),
                            style, color=cmap(i % 10), marker='o', ms=3,
                            label=f'{labels.get(key, key)} ({task})')
        ax.set_xlabel('IoU threshold')
        ax.set_ylabel('AP (seed mean)')
        ax.set_title('AP against IoU: boxes (solid), masks (dashed)')
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
        ax = axes[1]
        if shift is not None:
            d_box = 100 * np.array(shift['bbox'])
            d_mask = 100 * np.array(shift['segm'])
            for band, colour in zip(BANDS, ('tab:red', 'tab:orange',
                                            'tab:blue')):
                keep = np.array([f == band for f in shift['frequency']])
                ax.scatter(d_box[keep], d_mask[keep], s=22, color=colour,
                           label=f'{band} classes')
            ax.axhline(0, color='grey', lw=0.8)
            ax.axvline(0, color='grey', lw=0.8)
            ax.legend(fontsize=8)
        ax.set_xlabel('Δ box AP per class (points)')
        ax.set_ylabel('Δ mask AP per class (points)')
        ax.set_title(f'{labels.get(SHIFT_ROW, SHIFT_ROW)} − '
                     f'{labels.get(BREAKDOWN_ROWS[0], BREAKDOWN_ROWS[0])}'
                     ' (seed means)')
        ax.grid(True, alpha=0.3)
        ax = axes[2]
        for i, (key, row) in enumerate(curves.items()):
            for j, (seed, s) in enumerate(sorted(row['seeds'].items())):
                ax.plot(row['values'], 100 * np.array(s['AP']),
                        '-' if j == 0 else ':', color=cmap(i % 10),
                        marker='o', ms=3,
                        label=f'{labels.get(key, key)}: {row["param"]}, '
                        f'seed {seed}')
        ax.set_xlabel('parameter value (τ for logit adjustment, γ for '
                      'NorCal)')
        ax.set_ylabel('held-out box AP')
        ax.set_title('Post-hoc held-out curves')
        ax.grid(True, alpha=0.3)
        if curves:
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def questions_section(records: Sequence[dict], methods: Sequence[Method],
                      plot_path: str) -> Tuple[str, Optional[str]]:
    """The markdown section of ``results.md`` with the three answers'
    numbers, and the plot's path (None, and ``''``, when none of the rows
    ran)."""
    labels = {m.key: m.label for m in methods}
    table, breakdowns = breakdown_table(records, methods)
    shift = per_class_shift(records)
    curves = posthoc_curves(records)
    parts = []
    if table:
        parts.append('**Boxes and masks per IoU threshold** (each run\'s '
                     'standard-pass detections evaluated again at LVIS\'s '
                     'ten IoU thresholds; seed means, percent)\n\n' + table)
    if shift is not None:
        parts.append(
            '**Per class: box AP against mask AP** (seed means; classes '
            'counted by the signs of the two differences)\n\n' +
            shift_markdown(shift, labels.get(SHIFT_ROW, SHIFT_ROW),
                           labels.get(BREAKDOWN_ROWS[0])))
    matched = matched_markdown(records, labels)
    if matched:
        parts.append(
            '**The same detection\'s box and mask** (each val object: the '
            'highest-scoring detection of its class whose mask has IoU >= '
            '0.5 with it, and that detection\'s box; seed means)\n\n' +
            matched)
    if curves:
        parts.append('**Held-out curves of the post-hoc rows** (what each '
                     'chose from; seed means, percent)\n\n' +
                     curves_markdown(curves, labels))
    if not parts:
        return '', None
    plot_questions(breakdowns, shift, curves, labels, plot_path)
    return '\n\n'.join(parts), plot_path
