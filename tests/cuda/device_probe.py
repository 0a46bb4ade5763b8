"""A test-only hook for the CUDA suite: ``longtail_probe.LongTailProbeHook``
on any device (its EQLv2 sums follow the model to its device), plus each
rank's ``torch.distributed`` backend and the devices its model and
statistics are on, in ``<work_dir>/device_rank<r>.json``. A config names it
as ``type='device_probe.DeviceProbeHook'`` with ``tests/`` and
``tests/cuda/`` on ``PYTHONPATH``."""
import json
import os.path as osp

import torch.distributed as dist
from mmengine.dist import get_dist_info

from longtail_probe import LongTailProbeHook


class DeviceProbeHook(LongTailProbeHook):
    """Also record the backend and the devices (see the module doc)."""

    def before_train(self, runner) -> None:
        super().before_train(runner)
        # the pre-hooks add each call's sums on the model's device
        device = next(self._model(runner).parameters()).device
        self.eqlv2_local = {k: v.to(device)
                            for k, v in self.eqlv2_local.items()}

    def after_train(self, runner) -> None:
        super().after_train(runner)
        model = self._model(runner)
        rank, _ = get_dist_info()
        record = dict(
            backend=dist.get_backend() if dist.is_initialized() else None,
            params={p.device.type for p in model.parameters()},
            buffers={b.device.type for b in model.buffers()})
        record = {k: sorted(v) if isinstance(v, set) else v
                  for k, v in record.items()}
        with open(osp.join(runner.work_dir, f'device_rank{rank}.json'),
                  'w') as f:
            json.dump(record, f)
