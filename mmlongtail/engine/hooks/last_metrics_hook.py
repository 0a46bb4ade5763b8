"""Keep the metrics of the last validation."""
from typing import Dict, Optional

from mmengine.hooks import Hook

from mmlongtail.registry import HOOKS


@HOOKS.register_module()
class LastMetricsHook(Hook):
    """Keeps the metrics of the last validation in ``self.metrics``.

    mmengine's train loop validates after its last epoch and hands the
    metrics to the hooks, not to the caller of ``runner.train()``. A caller
    that registers this hook reads them afterwards instead of evaluating a
    second time (the demo and the benchmark do).
    """
    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.metrics: Dict[str, float] = {}

    def after_val_epoch(self,
                        runner,
                        metrics: Optional[Dict[str, float]] = None) -> None:
        self.metrics = dict(metrics or {})
