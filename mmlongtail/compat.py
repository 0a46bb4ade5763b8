"""The few, explicit fixes that make the OpenMMLab 3.x stack run on today's
PyTorch and NumPy. Each is scoped to the smallest surface that works and is
covered by ``tests/test_compat.py``.

1. **torch>=2.6 loads checkpoints with ``weights_only=True``.** mmengine's
   ``load_checkpoint`` and ``Runner.resume`` call ``torch.load`` without the
   argument, so every mmengine runner checkpoint is refused: its message hub
   holds ``HistoryBuffer`` objects, NumPy arrays and NumPy scalars.
   :func:`register_checkpoint_safe_globals` allow-lists exactly the globals
   that mmengine writes, with ``torch.serialization.add_safe_globals``.
   ``weights_only`` stays on, so a checkpoint that carries any other pickled
   object is still refused.

   ``HistoryBuffer`` pickles its statistics methods (``HistoryBuffer.min``
   ...) as ``getattr(HistoryBuffer, 'min')``. Allow-listing the builtin
   ``getattr`` would re-open the door the safe unpickler closes, so the name
   ``builtins.getattr`` is bound to :func:`_history_buffer_getattr`, which
   resolves only ``HistoryBuffer``'s registered statistics methods and refuses
   anything else.

2. **lvis-api 0.5.3 (PyPI) uses ``np.float``**, removed in NumPy 1.24.
   :func:`patch_lvis_numpy` gives ``lvis.eval`` (the one module that uses it)
   a NumPy namespace whose ``float`` is the builtin, as NumPy defined it. The
   global ``numpy`` module is not touched. It is applied by the code that runs
   lvis-api evaluation (the LVIS metric's ``'lvis'`` backend), not at import.
"""
import types
from typing import Any, List

import numpy as np
import torch

_REGISTERED = False


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` inside the weights-only unpickler.

    Only resolves ``HistoryBuffer.<statistics method>``, which is the one use
    of ``getattr`` in mmengine checkpoints.
    """
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and isinstance(name, str):
        allowed = set(HistoryBuffer._statistics_methods) | {
            'min', 'max', 'current', 'mean'
        }
        if name in allowed:
            return getattr(HistoryBuffer, name)
    raise torch.serialization.pickle.UnpicklingError(
        f'weights_only load refused getattr({obj!r}, {name!r}): mmlongtail '
        'only allows HistoryBuffer statistics methods here')


def checkpoint_safe_globals() -> List[Any]:
    """The globals that mmengine runner checkpoints contain.

    Returns a list in the form ``torch.serialization.add_safe_globals`` takes:
    objects, or ``(object, 'pickled.full.name')`` where the pickled name
    differs from the object's own (NumPy 1.x wrote ``numpy.core``, NumPy 2
    writes ``numpy._core``).
    """
    from mmengine.logging import HistoryBuffer
    multiarray = np._core.multiarray if hasattr(
        np, '_core') else np.core.multiarray
    safe: List[Any] = [HistoryBuffer, np.ndarray, np.dtype]
    for name in ('_reconstruct', 'scalar'):
        fn = getattr(multiarray, name)
        safe.append((fn, f'numpy.core.multiarray.{name}'))
        safe.append((fn, f'numpy._core.multiarray.{name}'))
    # NumPy >= 1.25 may pickle a dtype through its class (numpy.dtypes.*).
    for dt in (np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64,
               np.float16, np.float32, np.float64):
        safe.append(type(np.dtype(dt)))
    safe.append((_history_buffer_getattr, 'builtins.getattr'))
    return safe


def register_checkpoint_safe_globals() -> None:
    """Allow-list mmengine's checkpoint globals for ``weights_only`` loading.

    Idempotent. A no-op on torch versions without ``add_safe_globals``.
    """
    global _REGISTERED
    if _REGISTERED or not hasattr(torch.serialization, 'add_safe_globals'):
        return
    torch.serialization.add_safe_globals(checkpoint_safe_globals())
    _REGISTERED = True


def _numpy_with_float() -> types.ModuleType:
    """A module that forwards to ``numpy`` and adds the removed aliases."""
    ns = types.ModuleType('numpy', doc='numpy with the aliases lvis-api uses')

    def __getattr__(name: str) -> Any:  # PEP 562 module __getattr__
        return getattr(np, name)

    ns.__getattr__ = __getattr__  # type: ignore[attr-defined]
    ns.float = float  # type: ignore[attr-defined]
    return ns


def patch_lvis_numpy() -> None:
    """Make lvis-api's evaluation run on NumPy >= 1.24. Idempotent.

    Only ``lvis.eval``'s module-level ``np`` is replaced; the real ``numpy``
    keeps no ``float`` alias.
    """
    import lvis.eval as lvis_eval
    if hasattr(np, 'float') or hasattr(lvis_eval.np, 'float'):
        return
    lvis_eval.np = _numpy_with_float()
