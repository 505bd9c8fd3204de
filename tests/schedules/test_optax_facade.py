"""schedules.optax against optax itself (issue 24, items 3 and 6): every schedule function of
``optax.schedules`` over random arguments and optax's degenerate cases; float32 under jit
against optax's jitted numbers, float64 on the host against optax run under x64 (in a
subprocess: x64 is process-wide)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import schedules as S
from schedules import optax as O

FUNCTIONS = sorted(O.__all__)


def test_every_optax_schedule_function_is_here():
    # optax.schedules' public functions, less the optimizer wrappers (inject_*hyperparams)
    have = {n for n in dir(optax.schedules)
            if not n.startswith("_") and n.endswith(("_schedule", "_schedules", "_decay"))}
    assert have == set(FUNCTIONS)
    for n in FUNCTIONS:  # optax's top-level aliases are the same functions
        assert getattr(optax, n) is getattr(optax.schedules, n)


def _steps(rng: random.Random, lo: int = -5, hi: int = 400) -> int:
    return rng.choice([0, 1, rng.randint(lo, hi), rng.randint(1, hi)])


def _val(rng: random.Random) -> float:
    return rng.choice([0.0, rng.uniform(-2, 2), rng.uniform(0, 1), 10 ** rng.uniform(-6, 1)])


def rand_args(name: str, rng: random.Random) -> dict:
    """Arguments as optax takes them (degenerate ones included)."""
    u = rng.uniform
    if name == "constant_schedule":
        return {"value": _val(rng)}
    if name in ("polynomial_schedule", "linear_schedule"):
        kw = {"init_value": _val(rng), "end_value": _val(rng), "transition_steps": _steps(rng),
              "transition_begin": rng.choice([0, rng.randint(-10, 100)])}
        if name == "polynomial_schedule":
            kw["power"] = rng.choice([1, 2, u(0.3, 3.0)])
        return kw
    if name == "exponential_decay":
        rate = rng.choice([0.0, u(0.1, 0.999), u(1.001, 1.5), 0.5])
        end = rng.choice([None, _val(rng)])
        return {"init_value": u(0.01, 2), "transition_steps": _steps(rng, -3, 50),
                "decay_rate": rate, "transition_begin": rng.choice([0, rng.randint(-5, 50)]),
                "staircase": rng.random() < 0.4, "end_value": end}
    if name == "cosine_decay_schedule":
        return {"init_value": _val(rng), "decay_steps": rng.randint(1, 300),
                "alpha": rng.choice([0.0, u(-0.5, 1.0)]), "exponent": rng.choice([1.0, u(0.5, 3)])}
    if name in ("piecewise_constant_schedule", "piecewise_interpolate_schedule"):
        n = rng.randint(0, 4)
        table = {rng.randint(0, 200): rng.choice([0.0, u(0.0, 3.0)]) for _ in range(n)}
        kw = {"init_value": _val(rng), "boundaries_and_scales": table if n or rng.random() < .5
              else None}
        if name == "piecewise_interpolate_schedule":
            kw["interpolate_type"] = rng.choice(["linear", "cosine"])
        return kw
    if name in ("linear_onecycle_schedule", "cosine_onecycle_schedule"):
        kw = {"transition_steps": rng.randint(1, 400), "peak_value": u(0.01, 3),
              "pct_start": rng.choice([0.3, u(0, 1)]), "div_factor": rng.choice([25.0, u(1, 50)]),
              "final_div_factor": rng.choice([1e4, u(0.5, 100)])}
        if name == "linear_onecycle_schedule":
            kw["pct_final"] = rng.choice([0.85, u(kw["pct_start"], 1)])
        return kw
    if name == "warmup_constant_schedule":
        return {"init_value": _val(rng), "peak_value": _val(rng), "warmup_steps": _steps(rng)}
    if name == "warmup_cosine_decay_schedule":
        w = rng.randint(0, 100)
        return {"init_value": _val(rng), "peak_value": rng.choice([0.0, u(0.1, 2)]),
                "warmup_steps": w, "decay_steps": w + rng.randint(1, 300),
                "end_value": rng.choice([0.0, _val(rng), -3.0]), "exponent": rng.choice([1.0, 2.0])}
    if name == "warmup_exponential_decay_schedule":
        kw = rand_args("exponential_decay", rng)
        kw["decay_rate"] = rng.choice([u(0.1, 0.999), u(1.001, 1.2)])
        kw["transition_steps"] = rng.randint(1, 50)
        del kw["init_value"]
        return {"init_value": _val(rng), "peak_value": u(0.1, 2), "warmup_steps": _steps(rng), **kw}
    if name == "sgdr_schedule":
        return {"cosine_kwargs": [rand_args("warmup_cosine_decay_schedule", rng)
                                  for _ in range(rng.randint(1, 3))]}
    if name == "join_schedules":
        raise AssertionError("built from other schedules: see _build")
    raise AssertionError(name)


def _build(name: str, kw: dict, lib: object):
    if name == "join_schedules":
        kids = [lib.linear_schedule(**kw["a"]), lib.cosine_decay_schedule(**kw["b"]),
                lib.constant_schedule(kw["c"])]
        return lib.join_schedules(kids, kw["boundaries"])
    return getattr(lib, name)(**kw)


def _join_args(rng: random.Random) -> dict:
    return {"a": rand_args("linear_schedule", rng), "b": rand_args("cosine_decay_schedule", rng),
            "c": _val(rng), "boundaries": sorted(rng.randint(0, 300) for _ in range(2))}


def cases(name: str, n: int) -> list[dict]:
    rng = random.Random(f"optax-{name}")
    return [_join_args(rng) if name == "join_schedules" else rand_args(name, rng)
            for _ in range(n)]


STEPS = np.concatenate([np.arange(-3, 420), [1000, 4096, 10**5]]).astype(np.int32)


def _f32_close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    """Same float32 operations in the same order: equal up to a few ulps of the curve's scale
    (terms of opposite signs cancel, so the scale, not the value, bounds the rounding), and
    ulps of ``rate ** p``'s exponent for the powers (``|p log rate|`` amplifies an ulp)."""
    finite = np.isfinite(ref)
    assert (np.isfinite(got) == finite).all(), what
    scale = max(np.max(np.abs(ref[finite]), initial=0.0), 1e-30)
    tol = 8 * np.finfo(np.float32).eps * (scale + np.abs(ref[finite]) * 64)
    err = np.abs(got[finite] - ref[finite])
    assert (err <= tol).all(), (what, int(np.argmax(err - tol)), got[finite][err > tol][:3],
                                ref[finite][err > tol][:3])


@pytest.mark.parametrize("name", FUNCTIONS)
def test_jit_float32_equals_optax(name):
    ts = jnp.asarray(STEPS)
    for kw in cases(name, 8):
        try:
            ref_fn = _build(name, kw, optax)
            ref = np.asarray(jax.jit(jax.vmap(ref_fn))(ts), np.float64)
        except (ValueError, ZeroDivisionError) as e:
            with pytest.raises(ValueError):
                _build(name, kw, O)
            assert "decay_steps" in str(e) or "positive" in str(e) or "non-negative" in str(e)
            continue
        ours = _build(name, kw, O)
        assert isinstance(ours, S.Schedule)
        got = np.asarray(jax.jit(jax.vmap(ours))(ts), np.float64)
        _f32_close(got, ref, f"{name}({kw})")


_X64 = r"""
import json, os, sys
sys.path.insert(0, os.environ["TDIR"])
import jax; jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np, optax
from schedules import optax as O
from test_optax_facade import FUNCTIONS, STEPS, _build, cases
bad, n = [], 0
ts = jnp.asarray(STEPS.astype(np.int64))
for name in FUNCTIONS:
    for kw in cases(name, 8):
        try:
            ref = np.asarray(jax.vmap(_build(name, kw, optax))(ts), np.float64)
        except (ValueError, ZeroDivisionError):
            continue
        s = _build(name, kw, O)
        host = np.asarray([s(int(t)) for t in STEPS])
        n += 1
        scale = max(np.max(np.abs(ref[np.isfinite(ref)]), initial=0.0), 1e-300)
        ok = (np.abs(host - ref) <= 1e-12 * (scale + np.abs(ref))) | (host == ref)
        if not ok.all():
            i = int(np.argmin(ok))
            bad.append([name, repr(kw), int(STEPS[i]), float(host[i]), float(ref[i])])
print(json.dumps([n, bad]))
"""


def test_host_float64_equals_optax_under_x64():
    env = dict(os.environ, TDIR=os.path.dirname(__file__), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _X64], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    n, bad = json.loads(out.stdout.strip().splitlines()[-1])
    assert n >= 80 and bad == [], bad[:5]


def test_degenerate_cases_as_optax():
    # non-positive transition_steps: the constant init_value (optax logs and returns it)
    assert O.polynomial_schedule(10, 20, 1, 0)(3) == 10.0
    assert optax.polynomial_schedule(10, 20, 1, 0)(3) == 10.0
    assert O.linear_schedule(1.0, 0.0, -4)(100) == 1.0
    assert O.exponential_decay(2.0, 0, 0.5)(9) == 2.0
    assert O.exponential_decay(2.0, 5, 0.0)(9) == 2.0
    # growth, with and without a bound (the bound is a cap when growing)
    assert O.exponential_decay(1.0, 2, 2.0)(4) == 4.0
    assert O.exponential_decay(1.0, 1, 2.0, end_value=5.0)(10) == 5.0
    assert O.exponential_decay(1.0, 1, 0.5, end_value=0.2)(10) == 0.2
    # a negative transition_begin is 0
    assert O.linear_schedule(0.0, 1.0, 10, transition_begin=-5)(5) == 0.5
    # optax's ValueErrors
    for make in (lambda m: m.cosine_decay_schedule(1.0, 0),
                 lambda m: m.piecewise_constant_schedule(1.0, {5: -0.1}),
                 lambda m: m.piecewise_interpolate_schedule("cubic", 1.0, {5: 0.5}),
                 lambda m: m.piecewise_interpolate_schedule("linear", 1.0, {5: -0.5}),
                 lambda m: m.linear_onecycle_schedule(0, 1.0),
                 lambda m: m.cosine_onecycle_schedule(-1, 1.0),
                 # a warmup whose cosine has zero steps
                 lambda m: m.warmup_cosine_decay_schedule(0.2, 1.2, 10, 10)):
        with pytest.raises(ValueError):
            make(optax)
        with pytest.raises(ValueError):
            make(O)
    # negative values are schedule values like any other
    s = O.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110, end_value=-3.0)
    assert s(110) == -3.0 == float(optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110, -3.0)(110))
    # before step 0 an interpolated schedule is 0, as in optax
    assert O.piecewise_interpolate_schedule("linear", 1.0, {10: 2.0})(-1) == 0.0
    # one-cycle phase ends are optax's (the algebra's S.one_cycle keeps torch's)
    lin = O.linear_onecycle_schedule(1000, 1.0)
    assert [round(lin(t), 12) for t in (300, 850, 1000)] == [1.0, 0.04, 4e-06]


def test_steps_beyond_int32_on_the_host():
    s = O.cosine_decay_schedule(1000.0, 10**10)
    ref = 1000 * 0.5 * (1 + np.cos(np.pi * 1e9 / 1e10))
    assert s(10**9) == pytest.approx(ref, rel=1e-14)
    assert round(s(10**9), 3) == 975.528


def test_facade_values_compose_print_serialize_vmap():
    s = O.warmup_cosine_decay_schedule(0.0, 1.0, 10, 110, end_value=0.1)
    assert S.parse(repr(s)) == s and S.from_config(s.to_config()) == s
    both = 0.5 * s + O.constant_schedule(0.25)
    assert both(10) == 0.75
    batch = jax.tree.map(lambda *x: jnp.stack(x), s, s.replace(schedules=list(s.schedules)))
    assert jax.vmap(lambda b: b(jnp.float32(60)))(batch).shape == (2,)
    np.testing.assert_allclose(S.values(s, 120), [s(t) for t in range(120)], rtol=0, atol=0)
