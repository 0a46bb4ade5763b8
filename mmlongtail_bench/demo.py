"""The CPU demo: train on the synthetic dataset, evaluate, report."""
import os.path as osp
from typing import Dict, Optional, Tuple

from mmengine.config import Config

from mmlongtail.apis import build_runner_config
from mmlongtail.engine import LastMetricsHook

#: The metrics the demo prints, in order.
DEMO_KEYS = ('AP', 'APr', 'APc', 'APf')


def demo_config(config: str, work_dir: str,
                data_root: Optional[str] = None) -> Config:
    """The demo config, pointed at ``data_root`` and writing per-class AP.

    ``outfile_prefix`` makes the metric write the per-class file that
    :func:`mmlongtail.analysis.analyze_longtail` reads.
    """
    cfg = build_runner_config(config, work_dir=work_dir)
    if data_root is not None:
        root = data_root.rstrip('/') + '/'
        for loader in ('train_dataloader', 'val_dataloader',
                       'test_dataloader'):
            cfg[loader].dataset.data_root = root
        for ev in ('val_evaluator', 'test_evaluator'):
            cfg[ev].ann_file = root + 'annotations/lvis_v1_val.json'
    cfg.val_evaluator.outfile_prefix = osp.join(cfg.work_dir, 'lvis')
    return cfg


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
             work_dir: str,
             data_root: Optional[str] = None) -> Tuple[Dict[str, float], dict]:
    """Train, evaluate and write the long-tail report.

    Returns:
        tuple: ``(metrics, report)`` where ``metrics`` is the LVIS metric's
        dict and ``report`` maps output names to file paths.
    """
    from mmlongtail.analysis import analyze_longtail

    cfg = demo_config(config, work_dir, data_root)
    metrics = train_keeping_final_metrics(cfg)
    root = cfg.train_dataloader.dataset.data_root
    report = analyze_longtail(
        osp.join(cfg.work_dir, 'lvis.per_class.json'),
        osp.join(cfg.work_dir, 'longtail'),
        stats=osp.join(root, cfg.train_dataloader.dataset.ann_file),
        checkpoint=osp.join(cfg.work_dir,
                            f'epoch_{cfg.train_cfg.max_epochs}.pth'))
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
