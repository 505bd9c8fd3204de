"""Primitive formulas against independent references: optax, PyTorch, transformers,
and closed forms written out here."""

import math

import numpy as np
import optax
import pytest
import torch

import schedules as S

T = np.arange(0, 1500)


def host(s, steps=T):
    return np.array([s(int(t)) for t in steps])


def ref(fn, steps=T):
    return np.array([fn(int(t)) for t in steps], dtype=np.float64)


def torch_lrs(make, n, lr=1.0):
    """lrs used by optimizer steps 0..n-1 under a torch scheduler (stepped after each)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


def close(a, b, rtol=1e-12, atol=0.0):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# --- optax references (float32 there, so compare at float32 precision) ---------------


def optax_curve(sched, steps=T):
    import jax.numpy as jnp

    return np.asarray(sched(jnp.asarray(steps)), dtype=np.float64)


def test_constant_and_linear_vs_optax():
    close(host(S.constant(0.3)), optax_curve(optax.constant_schedule(0.3)), rtol=1e-7)
    close(
        host(S.linear(0.1, 2.0, 300)),
        optax_curve(optax.linear_schedule(0.1, 2.0, 300)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("exponent", [1.0, 2.0, 0.5])
def test_cosine_vs_optax(exponent):
    s = S.cosine(2.0, 0.2, 700, exponent=exponent)
    o = optax.cosine_decay_schedule(2.0, 700, alpha=0.1, exponent=exponent)
    close(host(s), optax_curve(o), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_vs_optax(staircase):
    s = S.exponential(1.5, 0.8, steps=40, staircase=staircase, end=0.01)
    o = optax.exponential_decay(1.5, 40, 0.8, staircase=staircase, end_value=0.01)
    close(host(s), optax_curve(o), rtol=1e-5)


@pytest.mark.parametrize("end", [None, 40.0])
def test_exponential_growth_vs_optax(end):
    """Growth, with or without a bound (issue 24): optax's numbers."""
    s = S.exponential(0.5, 1.01, steps=2, end=end)
    o = optax.exponential_decay(0.5, 2, 1.01, end_value=end)
    close(host(s), optax_curve(o), rtol=1e-5)


def test_warmup_of_a_zero_step_schedule_is_refused():
    """optax raises for a warmup-cosine whose cosine has no steps; so does S.warmup (the
    warmup would ramp to the end value and never reach the peak)."""
    with pytest.raises(ValueError, match="steps=0"):
        S.warmup(S.cosine(1.2, 0, 0), 10, init=0.2)
    with pytest.raises(ValueError):
        optax.warmup_cosine_decay_schedule(0.2, 1.2, 10, 10)
    assert S.warmup(S.cosine(1.2, 0, 1), 10, init=0.2)(10) == 1.2


def test_polynomial_vs_optax():
    s = S.polynomial(1.0, 0.05, 500, power=3.0)
    o = optax.polynomial_schedule(1.0, 0.05, 3.0, 500)
    close(host(s), optax_curve(o), rtol=1e-5, atol=1e-7)


def test_piecewise_linear_vs_numpy_interp():
    xs, ys = [0, 100, 400, 1000], [0.0, 1.0, 0.5, 0.1]
    s = S.piecewise_linear(xs, ys)
    close(host(s), np.interp(T, xs, ys), rtol=1e-12, atol=1e-15)


def test_piecewise_constant_vs_optax():
    s = S.piecewise_constant([100, 300, 900], [1.0, 0.5, 0.05, 0.005])
    o = optax.piecewise_constant_schedule(1.0, {100: 0.5, 300: 0.1, 900: 0.1})
    close(host(s), optax_curve(o), rtol=1e-6)


# --- PyTorch references ---------------------------------------------------------------


def test_step_vs_torch():
    s = S.step(0.3, step_size=37, gamma=0.6)
    t = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 37, 0.6), len(T), lr=0.3)
    close(host(s), t, rtol=1e-13)


def test_multistep_repeated_milestones_vs_torch():
    ms = [10, 100, 100, 700]
    s = S.multistep(0.5, ms, gamma=0.2)
    t = torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, ms, 0.2), len(T), lr=0.5)
    close(host(s), t, rtol=1e-13)


@pytest.mark.parametrize(
    "mode,up,down,gamma",
    [("triangular", 20, None, 1.0), ("triangular2", 15, 40, 1.0), ("exp_range", 30, 10, 0.997)],
)
def test_cyclic_vs_torch(mode, up, down, gamma):
    s = S.cyclic(0.01, 0.2, up=up, down=down, mode=mode, gamma=gamma)
    t = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, 0.01, 0.2, up, down, mode=mode, gamma=gamma, cycle_momentum=False
        ),
        len(T),
    )
    close(host(s), t, rtol=1e-12)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_vs_torch(anneal, three_phase):
    total = 777
    s = S.one_cycle(0.4, total, pct_start=0.3, anneal=anneal, three_phase=three_phase)
    t = torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o,
            0.4,
            total_steps=total,
            pct_start=0.3,
            anneal_strategy=anneal,
            three_phase=three_phase,
            cycle_momentum=False,
        ),
        total,
    )
    close(host(s, np.arange(total)), t, rtol=1e-12)
    assert s(total + 50) == s(total - 1)  # holds its final value past the end


@pytest.mark.parametrize("T0,mult", [(50, 1), (10, 2), (7, 3)])
def test_cosine_restarts_vs_torch(T0, mult):
    s = S.cosine_restarts(0.5, 0.01, period=T0, period_mult=mult)
    t = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T0, mult, 0.01),
        len(T),
        lr=0.5,
    )
    close(host(s), t, rtol=1e-12)


def test_cosine_restarts_decay_and_cycle_limit_closed_form():
    P, m, d, k = 20, 1.5, 0.7, 3
    s = S.cosine_restarts(2.0, 0.1, period=P, period_mult=m, decay=d, max_cycles=k)

    def f(t):
        start, n, length = 0.0, 0, P
        while start + length <= t:
            start, n, length = start + length, n + 1, length * m
        if n >= k:
            return 0.1
        return 0.1 + (2.0 * d**n - 0.1) * 0.5 * (1 + math.cos(math.pi * (t - start) / length))

    close(host(s), ref(f), rtol=1e-12, atol=1e-15)


# --- transformers references ------------------------------------------------------------


def test_inverse_sqrt_vs_transformers():
    from transformers.optimization import get_inverse_sqrt_schedule

    s = S.inverse_sqrt(1e-3, warmup=40, timescale=100)
    t = torch_lrs(lambda o: get_inverse_sqrt_schedule(o, 40, timescale=100), len(T), lr=1e-3)
    close(host(s), t, rtol=1e-12)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd_vs_transformers(shape):
    from transformers.optimization import get_wsd_schedule

    w, st, d = 50, 400, 300
    # transformers warms up from min_lr (= min_lr_ratio * lr) and decays back to it.
    s = S.wsd(1e-3, total=w + st + d, warmup=w, decay=d, init=1e-4, end=1e-4, shape=shape)
    t = torch_lrs(
        lambda o: get_wsd_schedule(
            o, w, d, num_stable_steps=st, min_lr_ratio=0.1, decay_type=shape
        ),
        w + st + d,
        lr=1e-3,
    )
    close(host(s, np.arange(w + st + d)), t, rtol=1e-12, atol=1e-18)


# --- closed forms worked out here -------------------------------------------------------


def test_noam_closed_form():
    d, w = 512, 4000
    s = S.noam(d, w, scale=2.0)
    f = lambda t: 2.0 * d**-0.5 * min((t + 1) ** -0.5, (t + 1) * w**-1.5)  # noqa: E731
    close(host(s), ref(f), rtol=1e-13)
    peak = int(np.argmax(host(s, np.arange(8000))))
    assert peak == w - 1  # s = t + 1 reaches warmup at t = warmup - 1


def test_tanh_closed_form():
    s = S.tanh_decay(1.0, 0.1, 500, lower=-4, upper=2)

    def f(t):
        p = min(t, 500) / 500
        g = lambda x: 1 - math.tanh(x)  # noqa: E731
        return 0.1 + 0.9 * (g(-4 + 6 * p) - g(2)) / (g(-4) - g(2))

    close(host(s), ref(f), rtol=1e-12, atol=1e-15)
    assert s(0) == 1.0 and abs(s(500) - 0.1) < 1e-15 and s(10**6) == s(500)


def test_linear_zero_steps_is_end():
    assert S.linear(1.0, 0.2, 0)(0) == 0.2


def test_noise_is_uniform_deterministic_and_seeded():
    n = S.noise(seed=11, low=1.0, high=3.0)
    v = n(np.arange(200_000))
    assert np.all((v >= 1) & (v < 3))
    assert abs(v.mean() - 2) < 0.01 and abs(v.var() - 1 / 3) < 0.01  # U(1, 3): mean 2, var 1/3
    hist, _ = np.histogram(v, bins=20, range=(1, 3))
    assert hist.min() > 0.9 * hist.mean()
    assert np.corrcoef(v[:-1], v[1:])[0, 1] < 0.01
    assert n(1234) == n(1234) == S.noise(seed=11, low=1.0, high=3.0)(1234)
    assert n(1234) != S.noise(seed=12, low=1.0, high=3.0)(1234)
    assert n(5) == n(5.7)  # a function of floor(step)


# --- documented edge behaviour -----------------------------------------------------------

FINITE = {
    "linear": S.linear(0.1, 1.0, 100),
    "cosine": S.cosine(1.0, 0.1, 100),
    "polynomial": S.polynomial(1.0, 0.1, 100),
    "wsd": S.wsd(1.0, total=100, warmup=10, decay=20, end=0.1),
    "one_cycle": S.one_cycle(1.0, 100),
    "tanh_decay": S.tanh_decay(1.0, 0.1, 100),
    "piecewise_linear": S.piecewise_linear([0, 100], [1.0, 0.1]),
}


@pytest.mark.parametrize("name", sorted(FINITE))
def test_finite_schedules_hold_their_end_and_clamp_negative_steps(name):
    s = FINITE[name]
    end = {"one_cycle": s(99)}.get(name, s(100))
    assert s(10**6) == end and s(100_000) == end
    assert s(-1) == s(0) and s(-1000) == s(0)


def test_periodic_schedules_keep_cycling():
    c = S.cyclic(0.1, 1.0, up=10)
    assert c(1000) == c(0) and c(1010) == c(10)
    r = S.cosine_restarts(1.0, 0.0, period=10)
    assert r(1000) == 1.0 and r(1005) == r(5)
