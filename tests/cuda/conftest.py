"""Fixtures of the CUDA suite (the ``cuda`` marker, its skips and the
``cuda_device`` fixture live in ``tests/conftest.py``)."""
import pytest
import torch


@pytest.fixture
def exact_fp32():
    """float32 matmuls and convolutions without TF32 (cuDNN uses TF32 by
    default on Ampere and later), so float32 results are compared at float32's
    accuracy."""
    flags = (torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    (torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = flags
