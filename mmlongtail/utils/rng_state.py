"""The global random number generators of a process, as checkpointable data.

A state covers every generator a training process draws from without
naming it: Python's :mod:`random`, NumPy's global ``RandomState``, torch's
CPU generator and the generator of every visible CUDA device. It is a dict
of tensors, ints, floats and lists only, so a checkpoint that holds it still
loads with ``torch.load(..., weights_only=True)``::

    {'python': {'version': int, 'state': int64 tensor (625,),
                'gauss_next': float | None},
     'numpy': {'keys': int64 tensor (624,), 'pos': int, 'has_gauss': int,
               'cached_gaussian': float},
     'torch': uint8 tensor (the CPU generator state),
     'cuda': [uint8 tensor per visible CUDA device]}   # [] without CUDA

Generators that code creates for itself (``torch.Generator`` objects, a
sampler's seeded stream) are not global and not covered; they are either
derived from (seed, epoch) or belong to their owner's ``state_dict``.
"""
import random
from typing import Any, Dict, List

import numpy as np
import torch

RNGState = Dict[str, Any]


def get_rng_state() -> RNGState:
    """This process's global generator states (see the module doc)."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    if kind != 'MT19937':
        raise ValueError(f'unsupported NumPy global generator {kind!r}')
    cuda = []
    if torch.cuda.is_available():
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return {
        'python': {
            'version': int(version),
            'state': torch.tensor(internal, dtype=torch.int64),
            'gauss_next': gauss_next,
        },
        'numpy': {
            'keys': torch.from_numpy(keys.astype(np.int64)),
            'pos': int(pos),
            'has_gauss': int(has_gauss),
            'cached_gaussian': float(cached),
        },
        'torch': torch.get_rng_state().clone(),
        'cuda': cuda,
    }


def set_rng_state(state: RNGState) -> List[str]:
    """Put the global generators back into ``state``.

    CUDA generators are restored when the process sees as many CUDA devices
    as the state holds.

    Args:
        state (dict): From :func:`get_rng_state`.

    Returns:
        list[str]: Problems that kept part of the state from being restored
        (empty when everything was restored), for the caller to log.

    Raises:
        ValueError: When ``state`` lacks a part or a part has the wrong
            shape.
    """
    missing = {'python', 'numpy', 'torch', 'cuda'} - set(state)
    if missing:
        raise ValueError(f'RNG state lacks {sorted(missing)}')
    py, npy = state['python'], state['numpy']
    if tuple(py['state'].shape) != (625, ):
        raise ValueError('Python random state must hold 625 ints, got shape '
                         f'{tuple(py["state"].shape)}')
    if tuple(npy['keys'].shape) != (624, ):
        raise ValueError('NumPy MT19937 state must hold 624 keys, got shape '
                         f'{tuple(npy["keys"].shape)}')
    random.setstate((py['version'], tuple(int(v) for v in py['state']),
                     py['gauss_next']))
    np.random.set_state(('MT19937', npy['keys'].numpy().astype(np.uint32),
                         npy['pos'], npy['has_gauss'],
                         npy['cached_gaussian']))
    torch.set_rng_state(state['torch'].cpu())
    problems = []
    cuda = state['cuda']
    if cuda:
        visible = torch.cuda.device_count() if torch.cuda.is_available() \
            else 0
        if visible == len(cuda):
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            problems.append(
                f'the state holds {len(cuda)} CUDA generator(s) but this '
                f'process sees {visible} CUDA device(s); CUDA generators not '
                'restored')
    return problems
