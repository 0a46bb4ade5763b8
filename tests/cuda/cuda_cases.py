"""What the CUDA suite shares: the loss specs of the contract suite, the
autocast precisions with their tolerances, and random draws that are the
same on every device.

The specs (how to build every registered loss for ``C`` classes, its
channels and inputs) are those of ``tests/models/losses/test_loss_contract
.py``, loaded from that file, so a new loss with a contract spec is picked up
here too, and a registered loss without one fails there.
"""
import contextlib
import importlib.util
import os.path as osp
from typing import Iterator, Optional

import pytest
import torch

TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
ROOT = osp.dirname(TESTS)


def _contract():
    path = osp.join(TESTS, 'models', 'losses', 'test_loss_contract.py')
    spec = importlib.util.spec_from_file_location('_cuda_loss_contract',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


contract = _contract()
#: ``{loss name: Spec}`` (kwargs, channels) of the contract suite.
SPECS = contract.SPECS
#: Classes of the specs' losses.
C = contract.C

#: ``None`` is plain float32; the others run under ``torch.autocast``.
PRECISIONS = {
    'fp32': None,
    'fp16': torch.float16,
    'bf16': torch.bfloat16,
}
#: Tolerances against the CPU float64 result: ``rtol`` for losses (and
#: float statistics), ``grad`` for gradients as a fraction of the largest
#: reference entry. The logits come out of the autocast matmul with 24, 11
#: and 8 bits of mantissa. Measured with MMLT_TEST_DEVICE=cpu (torch 2.13,
#: every loss): loss errors up to 1.3e-7 / 1.9e-4 / 1.8e-3 relative and
#: gradient errors up to 2.9e-7 / 5.7e-4 / 8.2e-3 of the largest entry in
#: fp32 / fp16 / bf16, so the bounds leave margins of about 35-150x, 10x
#: and 3.6-6.5x for CUDA's other summation orders.
TOLERANCES = {
    'fp32': dict(rtol=2e-5, grad=1e-5),
    'fp16': dict(rtol=2e-3, grad=5e-3),
    'bf16': dict(rtol=1.2e-2, grad=3e-2),
}


def autocast_dtype(device: torch.device, precision: str) -> Optional[
        torch.dtype]:
    """The autocast dtype of ``precision`` on ``device`` (None: fp32), or
    a skip where torch's autocast does not support it there."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return None
    if device.type == 'cuda':
        if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            pytest.skip(f'{torch.cuda.get_device_name(device)} has no bf16')
        return dtype
    if not torch.amp.autocast_mode.is_autocast_available(device.type):
        pytest.skip(f'no autocast on {device.type}')
    return dtype


def total(out):
    """A loss's output as one tensor (Seesaw returns a dict of terms)."""
    if isinstance(out, dict):
        return sum(out.values())
    return out


class SameDraws:
    """Routes ``torch.rand`` and ``torch.multinomial`` (the draws of
    DropLoss, GroupSoftmax's "others" sampling and the federated loss) to
    one seeded CPU generator, then moves the result to the device asked
    for, so a loss that draws at random gets the same numbers on every
    device and the CPU float64 result is a reference."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.rand = torch.rand
        self.multinomial = torch.multinomial

    def _rand(self, *size, device=None, dtype=None, **kw):
        kw.pop('generator', None)
        out = self.rand(*size, generator=self.generator, dtype=dtype, **kw)
        return out.to(device) if device is not None else out

    def _multinomial(self, input, num_samples, replacement=False, **kw):
        kw.pop('generator', None)
        out = self.multinomial(input.detach().cpu().double(), num_samples,
                               replacement, generator=self.generator, **kw)
        return out.to(input.device)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        mp = pytest.MonkeyPatch()
        try:
            mp.setattr(torch, 'rand', self._rand)
            mp.setattr(torch, 'multinomial', self._multinomial)
            yield
        finally:
            mp.undo()
