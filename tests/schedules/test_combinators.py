"""Combinators against closed forms and optax's own combinators."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import schedules as S

T = np.arange(-3, 1200)


def host(s, steps=T):
    return np.array([s(int(t)) for t in steps])


def close(a, b, rtol=1e-12, atol=1e-15):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_join_local_steps_vs_optax_join_schedules():
    a, b, c = S.linear(0.0, 1.0, 100), S.cosine(1.0, 0.1, 600), S.exponential(0.1, 0.99)
    s = S.join(a, b, c, at=[100, 700])
    o = optax.join_schedules(
        [
            optax.linear_schedule(0.0, 1.0, 100),
            optax.cosine_decay_schedule(1.0, 600, 0.1),
            optax.exponential_decay(0.1, 1, 0.99),
        ],
        [100, 700],
    )
    steps = np.arange(0, 1200)
    close(host(s, steps), np.asarray(o(jnp.asarray(steps))), rtol=2e-5, atol=1e-7)
    # and exactly, piece by piece, on the host
    for t in [0, 99, 100, 101, 699, 700, 701, 1100]:
        want = a(t) if t < 100 else b(t - 100) if t < 700 else c(t - 700)
        assert s(t) == want


def test_join_global_step():
    a, b = S.constant(1.0), S.step(1.0, 100, 0.5)
    s = S.join(a, b, at=[150], global_step=True)
    assert s(149) == 1.0 and s(150) == b(150) == 0.5 and s(250) == 0.25


def test_multiply_scale_add_min_max_clip_closed_forms():
    c, l, e = S.cosine(1.0, 0.0, 800), S.linear(0.5, 1.0, 100), S.exponential(3.0, 0.99)
    close(host(c * l * 2.0), host(c) * host(l) * 2.0)
    close(host(S.multiply(c, l, S.constant(2.0))), host(c) * host(l) * 2.0)
    close(host(0.1 * c), 0.1 * host(c))
    close(host(c / 4), host(c) / 4)
    close(host(c + l + 0.5), host(c) + host(l) + 0.5)
    close(host(S.minimum(c, l, e)), np.minimum(np.minimum(host(c), host(l)), host(e)))
    close(host(S.maximum(c, l)), np.maximum(host(c), host(l)))
    close(host(S.clip(c, low=0.2, high=0.7)), np.clip(host(c), 0.2, 0.7))
    close(host(S.clip(c, high=0.3)), np.minimum(host(c), 0.3))


def test_operators_flatten():
    a, b, c = S.constant(1.0), S.constant(2.0), S.constant(3.0)
    assert len((a * b * c).factors) == 3
    assert len((a + b + c).terms) == 3
    assert (0.5 * (0.5 * a)).factor == 0.25


def test_shift():
    base = S.cosine(1.0, 0.0, 200)
    s = S.shift(base, 50)
    for t in [0, 10, 49, 50, 51, 120, 300]:
        assert s(t) == base(max(t - 50, 0))
    back = S.shift(S.linear(0.0, 1.0, 200), -40)
    assert back(0) == 0.2 and back(160) == 1.0


def test_repeat_constant_period_and_decay():
    base = S.linear(1.0, 0.0, 60)
    s = S.repeat(base, period=60, decay=0.7)
    f = lambda t: 0.7 ** (t // 60) * base(t % 60)  # noqa: E731
    close(host(s, np.arange(0, 500)), [f(t) for t in range(500)])


def test_repeat_growing_periods_stretch_the_curve_and_stop():
    base = S.cosine(1.0, 0.1, 40)
    s = S.repeat(base, period=40, period_mult=2, decay=0.5, max_cycles=3)

    def f(t):
        start, n, length = 0, 0, 40
        while start + length <= t:
            start, n, length = start + length, n + 1, length * 2
        if n >= 3:
            return 0.5**2 * base(40)
        return 0.5**n * base((t - start) * 40 / length)

    close(host(s, np.arange(0, 600)), [f(t) for t in range(600)])
    # the SGDR shape: repeating a cosine with growing periods is cosine_restarts
    r = S.repeat(S.cosine(1.0, 0.0, 10), period=10, period_mult=2)
    close(
        host(r, np.arange(300)),
        host(S.cosine_restarts(1.0, 0.0, 10, period_mult=2), np.arange(300)),
    )


def test_warmup_matches_optax_warmup_cosine():
    s = S.warmup(S.cosine(3e-4, 3e-5, 900), 100)
    o = optax.warmup_cosine_decay_schedule(0.0, 3e-4, 100, 1000, end_value=3e-5)
    steps = np.arange(0, 1200)
    close(host(s, steps), np.asarray(o(jnp.asarray(steps))), rtol=2e-5, atol=1e-10)


def test_warmup_init_and_zero_steps():
    s = S.warmup(S.step(1.0, 100, 0.5), 30, init=0.1)
    assert s(0) == 0.1 and abs(s(15) - 0.55) < 1e-15 and s(30) == 1.0 and s(130) == 0.5
    z = S.warmup(S.constant(2.0), 0)
    assert z(0) == 2.0 and z(5) == 2.0


def test_lambda_gets_ints_on_host_and_traces_under_jit():
    seen = []

    def fn(t):
        seen.append(type(t))
        return 0.95 ** (t // 10)

    s = S.lambda_(fn)
    assert s(25) == 0.95**2 and seen[-1] is int
    v = np.asarray(__import__("jax").jit(s)(jnp.arange(30)))
    close(v, [0.95 ** (t // 10) for t in range(30)], rtol=1e-6)
    close(s(np.arange(30)), [0.95 ** (t // 10) for t in range(30)])


def test_lambda_with_python_branches_works_on_numpy_arrays():
    s = S.lambda_(lambda t: 1.0 if t < 10 else 0.5)
    close(s(np.arange(12)), [1.0] * 10 + [0.5] * 2)


@pytest.mark.parametrize(
    "text,fn",
    [
        ("0.95 ** (step // 10)", lambda t: 0.95 ** (t // 10)),
        ("min(1, (step + 1) / 50)", lambda t: min(1, (t + 1) / 50)),
        ("1.0 if step < 100 else 0.1", lambda t: 1.0 if t < 100 else 0.1),
        (
            "0.5 * (1 + cos(pi * min(step, 300) / 300))",
            lambda t: 0.5 * (1 + math.cos(math.pi * min(t, 300) / 300)),
        ),
        (
            "exp(-step / 200) + (step % 7 == 0) * 0.1",
            lambda t: math.exp(-t / 200) + (t % 7 == 0) * 0.1,
        ),
        ("clip(sqrt(step) / 10, 0.1, 1)", lambda t: min(max(math.sqrt(t) / 10, 0.1), 1)),
        (
            "max(0.1, 1 - step / 500) if step >= 20 and not step > 900 else 0.0",
            lambda t: max(0.1, 1 - t / 500) if (t >= 20 and not t > 900) else 0.0,
        ),
        (
            "floor(step / 3) * 0.01 + abs(-1) * tanh(2) + log(e) - 1",
            lambda t: math.floor(t / 3) * 0.01 + math.tanh(2),
        ),
    ],
)
def test_expr_matches_the_python_it_spells(text, fn):
    s = S.expr(text)
    steps = np.arange(0, 1000)
    close(host(s, steps), [fn(t) for t in steps], rtol=1e-13)
    close(
        np.asarray(__import__("jax").jit(s)(jnp.asarray(steps))),
        [fn(t) for t in steps],
        rtol=2e-5,
        atol=2e-6,
    )


@pytest.mark.parametrize(
    "batch,rule,crossover,factor",
    [
        (1024, "linear", None, 4.0),
        (64, "linear", None, 0.25),
        (1024, "sqrt", None, 2.0),
        (1024, "blend", None, 0.5 * 4.0 + 0.5 * 2.0),
        (512, "crossover", 1024, 2.0),  # below the crossover: linear
        (4096, "crossover", 1024, 4.0 * 2.0),  # linear to 1024 (x4), then sqrt(4096/1024) = 2
    ],
)
def test_scale_batch(batch, rule, crossover, factor):
    base = S.cosine(0.1, 0.0, 500)
    s = S.scale_batch(base, batch, 256, rule=rule, crossover=crossover)
    assert abs(s.factor() - factor) < 1e-12
    close(host(s), factor * host(base))
