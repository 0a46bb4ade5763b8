"""The model inside a runner's wrapper."""
from mmengine.model import is_model_wrapper
from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The detector inside a DDP-style wrapper (or ``model`` itself)."""
    return model.module if is_model_wrapper(model) else model
