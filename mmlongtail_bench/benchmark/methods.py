"""The methods of the long-tail benchmark: one config each in
``configs/benchmark/``."""
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional


@dataclass(frozen=True)
class Method:
    """One row of the benchmark.

    Attributes:
        key (str): Short name, also the work-dir prefix.
        label (str): Name in the table and the plot.
        config (str): Config file.
        init_from (str, optional): Key of the method whose trained checkpoint
            (same seed) this one starts from (decoupled retraining). Its
            config reads the path from ``$LONGTAIL_BENCH_INIT_CHECKPOINT``.
    """
    key: str
    label: str
    config: str
    init_from: Optional[str] = None


def default_methods(config_dir: str = 'configs/benchmark') -> List[Method]:
    """The methods of the benchmark, the baseline first."""
    rows = [
        ('baseline_ce', 'CE baseline', None),
        ('rfs', 'RFS', None),
        ('seesaw_normed_mask', 'Seesaw + Norm Mask', None),
        ('eql', 'EQL', None),
        ('eqlv2', 'EQLv2', None),
        ('focal', 'Focal', None),
        ('bags_decoupled', 'BAGS (decoupled)', 'baseline_ce'),
        ('federated', 'Federated loss', None),
        ('ecm', 'ECM + Norm Mask', None),
        ('gumbel_droploss', 'GOL (Gumbel + DropLoss)', None),
        ('balanced_softmax', 'Balanced softmax', None),
        ('class_balanced_focal', 'Class-balanced focal', None),
    ]
    return [
        Method(k, label, osp.join(config_dir, f'{k}.py'), init)
        for k, label, init in rows
    ]
