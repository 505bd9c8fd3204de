"""The shared numerics (schedules/_numerics.py) against exact references: Python's exact
integer floor division and rational arithmetic (``fractions``)."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import schedules as S
from schedules import _numerics as N
from schedules._ops import JNP, NP, PY


def _exact_floor(a, b):
    return np.array([int(Fraction(float(x)) // Fraction(float(b))) for x in np.ravel(a)])


# float32 numerators (integral and the float just below a multiple of d) and divisors for
# which XLA's floor(a / d) (a multiplication by the rounded reciprocal) misses by one
_INTS = np.array([12582914, 12582917, 10186169, 10773999, 12653624, 3, 29, 30], np.float32)
_BELOW = np.nextafter(np.array([15, 30, 60, 90, 1000, 2000, 61725], np.float32), np.float32(0))


@pytest.mark.parametrize("d", [3, 7, 30, 1000, 12345])
def test_floordiv_is_exact_where_the_plain_quotient_is_not(d):
    a = np.concatenate([_INTS, _BELOW, np.arange(0, 5000, dtype=np.float32) * np.float32(0.37)])
    exact = _exact_floor(a, d)
    plain = np.asarray(jax.jit(lambda x: jnp.floor(x / d))(jnp.asarray(a)))
    new = np.asarray(jax.jit(lambda x: JNP.floordiv(x, d))(jnp.asarray(a)))
    np.testing.assert_array_equal(new, exact)
    np.testing.assert_array_equal(np.asarray(N.floordiv(jnp.asarray(a), d, JNP)), exact)
    # NumPy (float64) and Python agree with the exact floor as well
    np.testing.assert_array_equal(NP.floordiv(a.astype(np.float64), d), exact)
    assert [PY.floordiv(float(x), d) for x in a] == list(exact)
    if d in (3, 30, 1000):  # the old formula is wrong on some of these (not for every d)
        assert (plain != exact).any()


def test_floordiv_traced_and_negative_divisors():
    a = np.array([-7.0, -6.0, 0.0, 5.0, 6.0, 7.0, 29.999998], np.float32)
    for d in (3.0, -3.0, 30.0, -2.0):
        got = jax.jit(lambda x, b: JNP.floordiv(x, b))(jnp.asarray(a), jnp.float32(d))
        np.testing.assert_array_equal(np.asarray(got), _exact_floor(a, d))


@pytest.mark.parametrize("d", [3, 30, 1000])
def test_step_and_staircase_use_the_exact_floor(d):
    steps = np.concatenate([_BELOW, np.arange(0, 4000, dtype=np.float32)])
    steps = steps[steps < 120 * d]  # 0.5 ** n stays a normal float32 (no flush to zero)
    n = _exact_floor(steps, d)
    s = S.step(1.0, step_size=d, gamma=0.5)
    got = np.asarray(jax.jit(s)(jnp.asarray(steps)))
    # gamma ** n with an exact integer n: the lr is an exact power of two
    np.testing.assert_array_equal(got, np.ldexp(np.float32(1.0), -n).astype(np.float32))
    e = S.exponential(1.0, 0.5, steps=d, staircase=True)
    np.testing.assert_array_equal(np.asarray(jax.jit(e)(jnp.asarray(steps))), got)


def test_cycle_position_exact_remainder():
    t = jnp.asarray(np.array([0, 29, 30, 59.999996, 12582914, 12582917], np.float32))
    n, r = N.cycle_position(t, 3, JNP)
    ex = _exact_floor(np.asarray(t), 3)
    np.testing.assert_array_equal(np.asarray(n), ex)
    assert (np.asarray(r) >= 0).all() and (np.asarray(r) < 3).all()


def test_half_cos_forms_agree():
    p = np.linspace(0, 1, 101)
    ref = 0.5 * (1 + np.cos(np.pi * p))
    np.testing.assert_allclose(N.half_cos(p, NP), ref, rtol=0, atol=1e-15)
    np.testing.assert_allclose(N.half_cos_remaining(p * 100, 100, NP), ref, rtol=0, atol=1e-15)
    np.testing.assert_allclose(N.half_cos_torch(p * 100, 100, NP), ref, rtol=0, atol=1e-15)
    # cycles=1/2 over den is the same half-cosine
    np.testing.assert_allclose(N.half_cos_cycles(0.5, p * 100, 100, NP), ref, atol=1e-15)
    assert [N.half_cos(x, PY) for x in (0.0, 1.0)] == [1.0, 0.0]
    assert N.half_cos_remaining(0.0, 10, PY) == 1.0 and N.half_cos_remaining(10.0, 10, PY) == 0.0
    np.testing.assert_allclose(N.cos_mix(0.1, 1.0, p * 100, 100, NP), 0.1 + 0.9 * ref, atol=1e-15)


def test_progress_zero_length_is_complete():
    assert N.progress(5.0, 0, PY) == 1.0 and N.progress(5.0, 10, PY) == 0.5
    assert float(N.progress(jnp.float32(5.0), jnp.int32(0), JNP)) == 1.0



def test_sin2_f32_is_as_accurate_as_float32_sin_squared():
    """``JNP.sin2`` (the polynomial of ``schedules._ops.sin2_f32``) against ``sin(x) ** 2`` in
    float64 of the same float32 inputs, within 5 pi / 2 of 0 (what it promises; the annealing
    schedules pass half angles within 3 pi / 2), the zeros at 0, +-pi, +-2 pi included.
    Bound: float32's own ``sin(x) ** 2`` is off by up to ~2.1e-7 relative (two roundings,
    doubled by the square); the fit adds 5.2e-8 and Horner's six steps a few roundings of the
    same size: 4e-7 relative."""
    from schedules._ops import sin2_f32

    zeros = np.pi * np.arange(-2, 3)
    near = (zeros[:, None] + np.array([-1e-3, -1e-5, 0.0, 1e-5, 1e-3])).ravel()
    x = np.concatenate([np.linspace(-2.5 * np.pi, 2.5 * np.pi, 400_001), near]).astype(np.float32)
    got = np.asarray(jax.jit(sin2_f32)(jnp.asarray(x)), np.float64)
    want = np.sin(x.astype(np.float64)) ** 2
    rel = np.abs(got - want) / np.maximum(want, 1e-300)
    assert np.all((rel <= 4e-7) | (np.abs(got - want) <= 1e-20)), float(rel.max())
    # the JAX backend takes it for float32 only; the host and NumPy keep sin(x) ** 2
    assert JNP.sin2(jnp.float32(0.5)) == sin2_f32(jnp.float32(0.5))
    assert PY.sin2(0.5) == np.sin(0.5) ** 2 and NP.sin2(np.float64(0.5)) == np.sin(0.5) ** 2
