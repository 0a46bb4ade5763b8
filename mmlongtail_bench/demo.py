"""The CPU demo: train on the synthetic dataset, evaluate, report.

The demo configs say where the dataset is: ``configs/_base_/datasets/
synthetic_lvis.py`` reads ``$SYNTHETIC_LVIS_ROOT`` (default
``data/synthetic_lvis/``) with mmengine's ``{{$NAME:default}}``
substitution, and derives every path from it. ``tools/demo.py --data-root``
sets that variable; nothing here rewrites a path.
"""
import os.path as osp
from typing import Dict, Optional, Tuple

from mmengine.config import Config

from mmlongtail.apis import build_runner_config
from mmlongtail.engine import LastMetricsHook
from mmlongtail.engine.checkpoint_io import read_pointer
from mmlongtail.evaluation import per_class_file

#: Where configs/demo/* find the synthetic dataset (ends with '/').
DATA_ROOT_VAR = 'SYNTHETIC_LVIS_ROOT'
#: The metrics the demo prints, in order (AP^fixed where the config's
#: evaluator runs the fixed protocol; '-' otherwise).
DEMO_KEYS = ('AP', 'APr', 'APc', 'APf', 'APfixed')


def demo_config(config: str, work_dir: Optional[str] = None) -> Config:
    """``config`` ready to train in ``work_dir``, its metric writing the
    per-class AP file (``{work_dir}/lvis.per_class.json``, see
    :func:`per_class_path`) that :func:`mmlongtail.analysis.analyze_longtail`
    reads."""
    cfg = build_runner_config(config, work_dir=work_dir)
    cfg.val_evaluator.outfile_prefix = osp.join(cfg.work_dir, 'lvis')
    return cfg


def per_class_path(cfg: Config) -> str:
    """The per-class file the validation of ``cfg`` (from
    :func:`demo_config`) writes, as its metric names it."""
    return per_class_file.path_for(cfg.val_evaluator.outfile_prefix)


def trained_checkpoint(work_dir: str) -> str:
    """The checkpoint a finished training in ``work_dir`` saved last, as the
    checkpoint hook recorded it (``last_checkpoint``; its name is the hook's
    ``filename_tmpl``, ``epoch_{}.pth`` by default).

    Raises:
        FileNotFoundError: The training saved no checkpoint.
    """
    path = read_pointer(work_dir)
    if path is None or not osp.isfile(path):
        raise FileNotFoundError(
            f'training in {work_dir} left no checkpoint '
            f'({osp.join(work_dir, "last_checkpoint")} names '
            f'{path or "nothing"}); keep default_hooks.checkpoint with '
            'save_last=True')
    return path


def train_keeping_final_metrics(cfg: Config) -> Dict[str, float]:
    """Train ``cfg`` and return the metrics of the train loop's final
    validation (evaluating again only if the loop did not validate)."""
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    keep = LastMetricsHook()
    runner.register_hook(keep)
    runner.train()  # validates after the last epoch
    return keep.metrics or runner.val()


def run_demo(config: str,
             work_dir: Optional[str] = None) -> Tuple[Dict[str, float], dict]:
    """Train, evaluate and write the long-tail report (on the dataset the
    config names, see the module docstring).

    Returns:
        tuple: ``(metrics, report)`` where ``metrics`` is the LVIS metric's
        dict and ``report`` maps output names to file paths.
    """
    from mmlongtail.analysis import analyze_longtail

    cfg = demo_config(config, work_dir)
    metrics = train_keeping_final_metrics(cfg)
    root = cfg.train_dataloader.dataset.data_root
    report = analyze_longtail(
        per_class_path(cfg),
        osp.join(cfg.work_dir, 'longtail'),
        stats=osp.join(root, cfg.train_dataloader.dataset.ann_file),
        checkpoint=trained_checkpoint(cfg.work_dir))
    return metrics, report


def format_metrics(metrics: Dict[str, float]) -> str:
    """A small table of AP / AP_r / AP_c / AP_f for bbox and segm."""
    lines = ['| task | ' + ' | '.join(DEMO_KEYS) + ' |',
             '|---|' + '---|' * len(DEMO_KEYS)]
    for task in ('bbox', 'segm'):
        vals = []
        for k in DEMO_KEYS:
            v = metrics.get(f'lvis/{task}_{k}')
            vals.append('-' if v is None else f'{100 * float(v):.1f}')
        lines.append(f'| {task} | ' + ' | '.join(vals) + ' |')
    return '\n'.join(lines)
