"""Trust (issue 11): inputs that used to escape ValueError, accepted schedules whose lr went
negative or infinite, torch recurrences queried far out, and the cross-path tolerances."""

from __future__ import annotations

import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import schedules as S
from schedules import hf
from schedules import torch as T

_DEEP: list = [1.0]
for _ in range(1000):
    _DEEP = [_DEEP]

ESCAPES = [  # (call, fragment of the message: parameter and rule)
    (lambda: S.constant(10**400), "value="),
    (lambda: S.from_config({"type": "constant", "value": 10**400}), "must be finite"),
    (lambda: S.linear(0.0, 1.0, 10**400), "below 2**62"),
    (lambda: S.Scheduler(1.0), "schedules=1.0 must be a Schedule"),
    (lambda: T.Scheduler(0.5), "schedules=0.5 must be a Schedule"),
    (lambda: S.multistep(1.0, np.array(3)), "milestones=array(3)"),
    (lambda: S.piecewise_constant(np.array(3), [1.0]), "boundaries=array(3)"),
    (lambda: S.piecewise_linear(np.array(3), [1.0]), "steps=array(3)"),
    (lambda: S.join(S.constant(1.0), at=np.array(3)), "at=array(3)"),
    (lambda: S.values(3.0, set()), "steps=set()"),
    (lambda: S.values(1.5, 2**53 + 1), "steps=9007199254740993"),
    (lambda: S.values(1.5, 10**8 + 1), "at most 100,000,000"),
    (lambda: S.from_config({"type": "constant", "value": _DEEP}), "nested"),
    (lambda: S.from_config(_DEEP), "must be a dict"),
    (lambda: S.step(1.0, 3_000_000_000), "step_size=3000000000 must be below 2**31"),
    (lambda: S.parse("1e308"), "at most 3.4028234663852886e+38"),
    (lambda: S.constant(1e39), "float32"),
    (lambda: S.noise(2**40), "seed="),
    (lambda: T.StepLR(0.1, 1, horizon=2**53 + 1), "horizon="),
    (lambda: T.StepLR(0.1, 1, horizon=10**8), "horizon=100000000 must be at most"),
]


@pytest.mark.parametrize("call,fragment", ESCAPES)
def test_inputs_that_escaped_now_raise_value_error(call, fragment):
    with pytest.raises(ValueError) as e:
        call()
    assert fragment in str(e.value), str(e.value)


def test_horizon_zero_is_no_table():
    s = T.StepLR(0.1, 2, 0.5, horizon=0)
    got = np.asarray(jax.jit(s)(jnp.arange(5.0)))
    np.testing.assert_allclose(got, [s(t) for t in range(5)], rtol=1e-6)


NEGATIVE_OR_INF = [  # accepted on main, lr negative / inf / NaN somewhere
    (lambda: T.StepLR(-1.0, step_size=1), "lr=-1.0 must be >= 0"),
    (lambda: T.ExponentialLR(0.1, gamma=-0.5), "gamma=-0.5 must be >= 0"),
    (lambda: T.ExponentialLR(0.1, gamma=1.5), "gamma=1.5 must be <= 1"),
    (lambda: T.StepLR(0.1, 3, gamma=1.2), "gamma=1.2 must be <= 1"),
    (lambda: T.MultiStepLR(0.1, [3], gamma=-1.0), "gamma=-1.0 must be >= 0"),
    (lambda: T.PolynomialLR(0.1, total_iters=10, power=-2.0), "power=-2.0 must be >= 0"),
    (lambda: T.CosineAnnealingLR(0.1, 10, eta_min=-0.1), "eta_min=-0.1 must be >= 0"),
    (lambda: T.CosineAnnealingWarmRestarts(0.1, 10, eta_min=-1e-3), "eta_min=-0.001"),
    (lambda: T.CyclicLR(0.1, base_lr=-0.1, max_lr=1.0), "base_lr=-0.1 must be >= 0"),
    (lambda: T.CyclicLR(0.1, base_lr=0.1, max_lr=-1.0), "max_lr=-1.0 must be >= 0"),
    (lambda: T.CyclicLR(0.1, 0.1, 1.0, mode="exp_range", gamma=1.1), "gamma=1.1 must be <= 1"),
    (lambda: T.OneCycleLR(0.1, max_lr=-1.0, total_steps=10), "max_lr=-1.0 must be >= 0"),
    (lambda: T.OneCycleLR(0.1, 1.0, total_steps=10, div_factor=-25.0), "div_factor=-25.0"),
    (lambda: T.OneCycleLR(0.1, 1e30, total_steps=10, div_factor=1e-10), "exceed float32"),
    (lambda: T.ReduceLROnPlateau(-0.1), "lr=-0.1 must be >= 0"),
    (lambda: hf.get_constant_schedule(-1e-3), "lr=-0.001 must be >= 0"),
    (lambda: hf.get_cosine_with_min_lr_schedule_with_warmup(1.0, 0, 10, min_lr_rate=-0.5),
     "min_lr_rate=-0.5 must be >= 0"),
    (lambda: hf.get_cosine_with_min_lr_schedule_with_warmup(1.0, 0, 10, min_lr=-0.5),
     "min_lr=-0.5 must be >= 0"),
    (lambda: hf.get_wsd_schedule(1.0, 2, 2, num_training_steps=8, min_lr_ratio=-1.0),
     "min_lr_ratio=-1.0 must be >= 0"),
    (lambda: hf.get_polynomial_decay_schedule_with_warmup(1.0, 0, 10, lr_end=-1.0),
     "lr_end=-1.0 must be >= 0"),
    (lambda: hf.get_polynomial_decay_schedule_with_warmup(1.0, 0, 10, power=-1.0),
     "power=-1.0 must be >= 0"),
]


@pytest.mark.parametrize("call,fragment", NEGATIVE_OR_INF)
def test_arguments_that_make_an_lr_negative_or_inf_are_refused(call, fragment):
    with pytest.raises(ValueError) as e:
        call()
    assert fragment in str(e.value), str(e.value)


def test_a_user_function_that_goes_negative_gives_torchs_negative_number():
    """torch's own numbers, negative ones included (issue 24): the refusal of a negative lr is
    the trainer's; only a value float32 cannot hold is refused (and only there)."""
    s = T.LambdaLR(0.1, S.expr("1 - step / 10"))  # negative from step 11 on, as in torch
    assert s(10) == 0.0 and s(11) == pytest.approx(-0.01, rel=1e-12)
    got = np.asarray(jax.jit(jax.vmap(s))(jnp.arange(13.0)))
    np.testing.assert_allclose(got, [0.1 * (1 - k / 10) for k in range(13)], atol=1e-8)
    m = T.MultiplicativeLR(0.1, lambda t: -1.0 if t == 3 else 1.0)
    assert (m(2), m(3), m(4)) == (0.1, -0.1, -0.1)  # torch's lr stays at -0.1
    c = T.CyclicLR(0.1, 0.5, 0.1, step_size_up=2, scale_fn=lambda x: -10.0)
    assert c(1) == pytest.approx(0.5 + (0.1 - 0.5) * 0.5 * -10.0, rel=1e-12)
    big = T.LambdaLR(0.1, lambda k: 1e300 if k == 2 else 1.0)
    with pytest.raises(ValueError, match=r"step 2 would be 1e\+299.*check lr_lambda / scale_fn"):
        big(2)


def test_a_refusal_without_user_function_does_not_blame_one():
    # linear extrapolation one step past the last phase (torch computes it): beyond float32
    s = T.OneCycleLR(0.05, max_lr=3e38, pct_start=0.95, total_steps=10, anneal_strategy="linear")
    assert 0 < s(9) < 3e38
    with pytest.raises(ValueError, match=r"step 10 would be -5.99") as e:
        s(10)
    assert "lr_lambda" not in str(e.value) and "scale_fn" not in str(e.value)


def test_decay_lengths_beyond_int32_on_the_host_and_under_x64():
    """Issue 24: a decay's step count may pass 2**31 (optax evaluates cosine_decay_schedule
    over 1e10 steps): the host path in Python ints / float64, the array path under x64; without
    x64 the array path says so (a ValueError, never a silent int32 wrap)."""
    s = S.warmup(S.cosine(1000.0, 0.0, 10**10), 3_000_000_000)
    ref = 1000 * 0.5 * (1 + math.cos(math.pi * 1e9 / 1e10))
    assert s(4_000_000_000) == pytest.approx(ref, rel=1e-14)
    assert S.values(s, np.asarray([4e9]))[0] == pytest.approx(ref, rel=1e-14)
    with pytest.raises(ValueError, match=r"beyond int32.*jax_enable_x64"):
        jax.jit(s)(5)
    with jax.enable_x64(True):
        got = float(jax.jit(s)(jnp.int64(4_000_000_000)))
    assert got == pytest.approx(ref, rel=1e-12)


def test_step_counts_are_int32_and_float32_range_holds_on_the_array_path():
    s = S.linear(0.0, 1.0, 2**31 - 1)
    np.testing.assert_allclose(np.asarray(s(jnp.arange(3.0))), [s(0), s(1), s(2)], atol=1e-9)
    c = S.parse("3e38")
    assert float(c(jnp.float32(5))) == pytest.approx(3e38, rel=1e-7) and c(5) == 3e38


# -- torch recurrences queried far out ------------------------------------------------------


def _torch_lrs(build, steps):
    """torch's lr after each of ``steps`` (sorted) calls of ``scheduler.step()``."""
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    out, want = [], set(steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sch = build(torch.optim.lr_scheduler, opt)
        for t in range(max(steps) + 1):
            if t in want:
                out.append(opt.param_groups[0]["lr"])
            opt.step()
            sch.step()
    return out


FAR = [  # (ours, the same in torch, step): past the closed forms' 1000 ticks, several chunks
    (lambda M, o: M.ExponentialLR(o, 0.9999), 9_000),
    (lambda M, o: M.StepLR(o, 3, 0.995), 8_000),
    (lambda M, o: M.StepLR(o, 2, 0.5), 5_000),  # underflows to 0: a fixed point
    (lambda M, o: M.StepLR(o, 1, 0.9), 8_000),  # to the smallest subnormal: a fixed point
    (lambda M, o: M.LinearLR(o, 0.01, total_iters=6_000), 8_000),
    (lambda M, o: M.PolynomialLR(o, 6_000, power=1.7), 5_000),
    (lambda M, o: M.CosineAnnealingLR(o, 700, eta_min=1e-3), 5_123),
    (lambda M, o: M.CosineAnnealingLR(o, 1_300), 7_000),
    (lambda M, o: M.SequentialLR(o, [M.LinearLR(o, 0.01, total_iters=200),
                                     M.CosineAnnealingLR(o, 1_500, eta_min=1e-4)], [200]), 6_000),
    (lambda M, o: M.SequentialLR(o, [M.ConstantLR(o, 0.5, 100), M.StepLR(o, 7, 0.999)], [500]),
     9_000),
    (lambda M, o: M.ChainedScheduler([M.ConstantLR(o, 0.5, 100), M.ExponentialLR(o, 0.9995),
                                      M.MultiStepLR(o, [3000, 6000, 6000]), M.StepLR(o, 11, 0.99)]),
     9_000),
]


@pytest.mark.parametrize("i", range(len(FAR)))
def test_a_first_query_far_out_is_torch_bit_for_bit(i, monkeypatch):
    """The same float64 operations as torch's loop (np.multiply.accumulate is a sequential
    fold; the cosines are math.cos), so the values are equal, not close. Chunks of 512 steps
    (instead of 65536) so that a few thousand steps cross many chunk boundaries."""
    from schedules.torch._recurrence import Chain

    monkeypatch.setattr(Chain, "CHUNK", 512)
    build, k = FAR[i]
    steps = [3100, 4095, 4096, k - 1, k]  # past 1000 updates: no closed form (it is 1e-12 close)
    ref = _torch_lrs(build, steps)
    ours = build(T, 0.1)
    assert [ours(t) for t in reversed(steps)] == ref[::-1]  # the furthest first


def test_far_steps_do_not_hang():
    t0 = time.perf_counter()
    assert T.StepLR(0.1, step_size=3)(10**12) == 0.0  # underflows after ~330 updates: a fixed point
    assert T.ExponentialLR(0.1, 0.5)(10**12) == 0.0
    assert T.ExponentialLR(0.1, 1.0)(10**12) == 0.1
    assert T.LinearLR(0.1, 0.5, total_iters=10)(10**12) == T.LinearLR(0.1, 0.5, total_iters=10)(10)
    # no closed form (affine updates on a running lr): the host refuses a gap it cannot
    # replay in time, the array path gives NaN there -- neither hangs
    c = T.ChainedScheduler([T.CosineAnnealingLR(0.1, T_max=100), T.ExponentialLR(0.1, 0.99)])
    with pytest.raises(ValueError, match="limited to"):
        c(10**12)
    m = T.MultiplicativeLR(0.1, lambda t: 0.99)
    assert np.isnan(float(jax.jit(m)(jnp.float32(1e12))))
    assert time.perf_counter() - t0 < 30  # generous: a hang is hours


# -- cross-path tolerances (item 1) ------------------------------------------------------------


def test_tolerance_covers_simd_drift(monkeypatch):
    """NumPy's SIMD float64 power (AVX-512) may differ from libm's by a few ulps; the
    tolerance used to compare the host and NumPy paths (8 eps, notebooks/05) covers a drift
    of 4 ulps on every power, while a bit-for-bit comparison does not."""
    from schedules import _ops

    def drift(a, b):  # NumPy's power, 4 ulps up: the worst documented SIMD error
        out = np.power(a, b)
        for _ in range(4):
            out = np.nextafter(out, np.inf)
        return out

    class Shim:
        def __getattr__(self, name):
            return drift if name == "power" else getattr(np, name)

    monkeypatch.setattr(_ops.NP, "xp", Shim())
    s = S.exponential(1e-5, (10 / 1e-5) ** (1 / 119), end=10.0)
    host = np.asarray([s(t) for t in range(1, 120)])
    arr = S.values(s, np.arange(1.0, 120.0))
    assert not np.array_equal(host, arr)
    np.testing.assert_allclose(arr, host, rtol=8 * np.finfo(float).eps, atol=0)
