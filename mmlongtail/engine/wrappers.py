"""A model wrapper that lets mmengine's Runner train distributed on CPU.

mmengine's Runner always passes ``device_ids=[LOCAL_RANK]`` to its DDP
wrapper, which torch refuses for a module on the CPU.
:class:`CPUDistributedDataParallel` drops ``device_ids`` there, so
``tools/dist_train.sh`` runs on CPU-only machines with the gloo backend;
:func:`mmlongtail.apis.apply_device_defaults` selects it on machines without
CUDA.
"""
from mmengine.model import MMDistributedDataParallel
from torch import nn

from mmlongtail.registry import MODEL_WRAPPERS


def _on_cpu(module: nn.Module) -> bool:
    devices = {p.device.type for p in module.parameters()}
    return devices == {'cpu'}


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's ``MMDistributedDataParallel`` that also wraps CPU modules.

    On a module whose parameters are all on the CPU, ``device_ids`` and
    ``output_device`` are dropped (torch's DDP accepts them only for a
    single-device accelerator module). Anywhere else it is exactly
    ``MMDistributedDataParallel``.

    Build it from a config::

        model_wrapper_cfg = dict(type='mmlongtail.CPUDistributedDataParallel',
                                 find_unused_parameters=False)

    Args:
        module (nn.Module): The model.
        **kwargs: Passed to ``MMDistributedDataParallel``.
    """

    def __init__(self, module: nn.Module, **kwargs) -> None:
        if _on_cpu(module):
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        super().__init__(module=module, **kwargs)
