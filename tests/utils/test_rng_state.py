"""get_rng_state / set_rng_state: every global generator continues exactly
where it was, including the cached Gaussians of Python and NumPy, and the
state survives torch.save / torch.load(weights_only=True)."""
import io
import random

import numpy as np
import pytest
import torch

from mmlongtail.utils.rng_state import get_rng_state, set_rng_state


def _draws():
    return (random.random(), random.gauss(0, 1), random.getrandbits(40),
            np.random.rand(3).tolist(), np.random.standard_normal(),
            np.random.randint(0, 1 << 30), torch.rand(4).tolist(),
            torch.randperm(10).tolist())


def test_round_trip_continues_every_generator():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    # leave a cached Gaussian in Python's and NumPy's generators
    random.gauss(0, 1)
    np.random.standard_normal()
    assert random.getstate()[2] is not None
    assert np.random.get_state()[3] == 1
    state = get_rng_state()
    expected = _draws()
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert _draws() != expected
    assert set_rng_state(state) == []
    assert _draws() == expected


def test_state_is_weights_only_loadable_plain_data():
    state = get_rng_state()
    buf = io.BytesIO()
    torch.save({'rng_states': [state, state]}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)['rng_states'][1]
    assert loaded['python']['state'].dtype == torch.int64
    assert loaded['numpy']['keys'].dtype == torch.int64
    assert loaded['torch'].dtype == torch.uint8
    expected = _draws()
    set_rng_state(loaded)
    assert _draws() == expected


def test_bad_state_is_refused():
    state = get_rng_state()
    with pytest.raises(ValueError, match=r"lacks \['numpy'\]"):
        set_rng_state({k: v for k, v in state.items() if k != 'numpy'})
    bad = dict(state, python=dict(state['python'],
                                  state=state['python']['state'][:10]))
    with pytest.raises(ValueError, match='625 ints'):
        set_rng_state(bad)
    bad = dict(state, numpy=dict(state['numpy'],
                                 keys=state['numpy']['keys'][:5]))
    with pytest.raises(ValueError, match='624 keys'):
        set_rng_state(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_cuda_states_without_cuda_are_reported_not_dropped_silently():
    state = get_rng_state()
    assert state['cuda'] == []
    expected = _draws()
    fake = dict(state, cuda=[torch.zeros(16, dtype=torch.uint8)] * 2)
    problems = set_rng_state(fake)
    assert len(problems) == 1 and '2 CUDA generator(s)' in problems[0]
    assert _draws() == expected  # the CPU generators were restored


@pytest.mark.cuda
def test_cuda_generators_round_trip():
    state = get_rng_state()
    assert len(state['cuda']) == torch.cuda.device_count()
    expected = torch.rand(8, device='cuda').tolist()
    torch.cuda.manual_seed_all(123)
    assert set_rng_state(state) == []
    assert torch.rand(8, device='cuda').tolist() == expected
