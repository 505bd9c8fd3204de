"""Every schedule gives the same curve on the host (math), NumPy and JAX paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.schedules.catalogue import ALL

STEPS = np.concatenate([np.arange(-5, 1300), [1e4, 123456.0, 2.5, 17.25, 99.999]])


def host_curve(s, steps=STEPS):
    out = [s(int(t)) if float(t).is_integer() else s(float(t)) for t in steps]
    assert all(type(v) is float for v in out), "host path must return Python floats"
    return np.asarray(out)


@pytest.mark.parametrize("name", sorted(ALL))
def test_numpy_matches_host(name):
    s = ALL[name]
    ref = host_curve(s)
    got = s(STEPS)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", sorted(ALL))
def test_jit_float32_matches_host(name):
    s = ALL[name]
    ref = host_curve(s)
    got = jax.jit(s)(jnp.asarray(STEPS, jnp.float32))
    assert got.dtype == jnp.float32
    scale = np.max(np.abs(ref))
    # float32: steps up to 2**24 are exact; the formulas lose a few ulps.
    np.testing.assert_allclose(np.asarray(got), ref, rtol=2e-5, atol=2e-6 * scale)


@pytest.mark.parametrize("name", sorted(ALL))
def test_int_steps_under_jit_and_vmap(name):
    s = ALL[name]
    steps = jnp.arange(0, 1200, dtype=jnp.int32)
    a = jax.jit(jax.vmap(s))(steps)
    b = jax.jit(s)(steps)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(
        np.asarray(a),
        host_curve(s, np.arange(1200)),
        rtol=2e-5,
        atol=2e-6 * float(jnp.max(jnp.abs(b))),
    )


@pytest.mark.parametrize("name", sorted(ALL))
def test_jit_float64_matches_host(name):
    s = ALL[name]
    ref = host_curve(s)
    with jax.enable_x64(True):
        got = jax.jit(s)(jnp.asarray(STEPS, jnp.float64))
        assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-12, atol=1e-15 * np.max(np.abs(ref)))


def test_scalar_jax_step_returns_jax_scalar():
    s = ALL["join"]
    v = s(jnp.int32(150))
    assert isinstance(v, jax.Array) and v.shape == ()
    assert abs(float(v) - s(150)) < 1e-6
