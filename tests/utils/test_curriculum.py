"""DCL's schedules (Wang et al., ICCV 2019): g(l) and f(l) against their
formulas at several l, and errors."""
import math

import pytest

from mmlongtail.utils.curriculum import loss_f, sampling_g


@pytest.mark.parametrize('step', [0, 1, 2.5, 4, 7, 10])
def test_sampling_g_formulas(step):
    L = 10
    t = step / L
    assert sampling_g('linear', step, L) == pytest.approx(1 - t)
    assert sampling_g('convex', step, L) == pytest.approx(
        math.cos(t * math.pi / 2), abs=1e-15)
    assert sampling_g('composite', step, L) == pytest.approx(
        0.5 * math.cos(t * math.pi) + 0.5, abs=1e-15)
    assert sampling_g('concave', step, L, base=0.9) == pytest.approx(
        0.9**step)


def test_sampling_g_endpoints_and_clipping():
    for shape in ('linear', 'convex', 'composite'):
        assert sampling_g(shape, 0, 6) == 1.0
        assert sampling_g(shape, 6, 6) == 0.0
        assert sampling_g(shape, 60, 6) == 0.0
        assert sampling_g(shape, -3, 6) == 1.0
    assert sampling_g('concave', 60, 6, base=0.5) == 0.5**6


@pytest.mark.parametrize('step', [0, 1, 3, 5, 6, 9, 12])
def test_loss_f_formula(step):
    L, p, eps = 12, 0.5, 0.01
    want = (0.5 * math.cos(step / L * math.pi) + 0.5 + eps
            if step < p * L else eps)
    assert loss_f(step, L, p, eps) == pytest.approx(want)
    # p = 1 keeps the cosine to the end; f(0) = 1 + eps
    assert loss_f(0, L, 1.0, 0.0) == 1.0
    assert loss_f(step, L, 1.0, 0.0) == pytest.approx(
        0.5 * math.cos(step / L * math.pi) + 0.5)


def test_bad_schedules_raise():
    for args, match in [(('cos', 1, 4), 'shape must be one of'),
                        (('linear', 1, 0), 'total must be > 0'),
                        (('concave', 1, 4, 1.5), '0 < base < 1'),
                        (('linear', 1, 4, 0.5), 'only for')]:
        with pytest.raises(ValueError, match=match):
            sampling_g(*args)
    for args, match in [((1, 4, 0, 0.1), r'p .* must be in \(0, 1\]'),
                        ((1, 4, 1.2, 0.1), r'must be in \(0, 1\]'),
                        ((1, 4, 0.5, -1), 'eps must be >= 0'),
                        ((1, 4, float('nan'), 0), 'finite'),
                        ((1, 0, 0.5, 0), 'total must be > 0')]:
        with pytest.raises(ValueError, match=match):
            loss_f(*args)
