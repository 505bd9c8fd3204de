"""A seeded fuzzer of every public entry point of ``schedules`` (issue 11).

For each entry point (``S.*`` constructors and combinators, ``S.parse``, ``S.from_config``,
``S.values``, ``schedules.torch`` classes, ``schedules.hf`` functions), ``N`` calls with
arguments drawn (plain ``random``, fixed seeds: the same inputs on every run) from plausible
values, edge cases (0, -0.0, 2**31, 10**400, 1e308, inf, NaN, subnormals) and wrong types
(strings, None, bools, nested lists, 0-d arrays, sets, dicts). Asserted:

* only ``ValueError`` escapes (construction, host query, NumPy and JAX paths);
* an accepted schedule never gives a negative (``schedules.torch``: torch's own numbers, negative
  ones included), infinite or NaN lr: each is queried on the
  host at a small and a huge step (up to 1e15) -- a value there is finite and >= 0, or the
  query raises ``ValueError`` (a step torch itself refuses, or a recurrence too far to
  replay) -- and a sample is evaluated on the NumPy path and on the JAX path (eager, float32,
  the same XLA operations as under ``jit``) at small and huge steps: finite and >= 0, or NaN
  where the host raises;
* no query takes more than 1 s.

User formulas (``expr``, ``lambda_``) are algebra values, free to be negative: the second
property is not asked of schedules built on them (``schedules.torch`` checks a user
lambda's lr at each step itself, and is held to it).
"""

from __future__ import annotations

import inspect
import math
import random
import time
import zlib
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import schedules as S
from schedules import hf
from schedules import torch as T

N = 10_000  # inputs per entry point
N_ARRAY = 12  # accepted schedules per entry point also evaluated on the array paths
SLOW = 1.0  # seconds: the longest a query may take

WILD = [0, 1, -1, 2, 3, 7, 100, 2**31 - 1, 2**31, -(2**31), 2**53 + 1, 10**400, -(10**400),
        0.0, -0.0, 0.5, 1.0, 1.5, -0.5, 5e-324, 1e-300, 1e308, 3e38, 3.5e38, math.inf,
        -math.inf, math.nan, True, False, None, "1", "cos", "", [], [1], [1, 2], [[1]],
        [0.5, math.nan], np.array(3), np.array([1, 2]), np.array([[1.0]]), np.float32(0.5),
        np.int64(7), np.float64(math.inf), {}, set(), (1, 2), b"x", object()]
HUGE_STEPS = [2**31, 10**9 + 7, 10**12, 10**15, 2**53 + 1]
LAMBDAS = ["0.95 ** step", "1 / (1 + step)", "min(1, (step + 1) / 7)", "1 - step / 50",
           "0.5 ** (step // 13)", "step % 3", "-1", "exp(step)", "log(step)"]


def number(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.25:
        return round(rng.uniform(0, 1), rng.choice([1, 3, 12]))
    if r < 0.45:
        return rng.randint(0, 200)
    if r < 0.55:
        return rng.uniform(-2, 2)
    if r < 0.65:
        return 10 ** rng.uniform(-12, 40)
    if r < 0.75:
        return rng.choice([0.5, 0.9, 0.99, 0.1, 1.0, 2.0, 25.0, 1e4])
    return rng.choice(WILD)


def number_list(rng: random.Random) -> Any:
    if rng.random() < 0.15:
        return rng.choice(WILD)
    n = rng.randint(0, 5)
    if rng.random() < 0.6:
        out = sorted(rng.randint(0, 300) for _ in range(n))
    else:
        out = [number(rng) for _ in range(n)]
    return np.asarray(out) if rng.random() < 0.1 else out


_POOL = [S.constant(1e-3), S.linear(0.0, 1.0, 10), S.cosine(1.0, 0.1, 50),
         S.step(0.1, 5, 0.5), S.exponential(1.0, 0.9), S.warmup(S.constant(0.1), 5),
         S.expr("0.5 ** (step // 7)"), S.noise(3, 0.5, 1.5)]


def schedule(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.8:
        return rng.choice(_POOL)
    if r < 0.9:
        return number(rng)
    return rng.choice(WILD)


def torch_leaf(rng: random.Random, lr: Any) -> Any:
    kind = rng.choice(["StepLR", "ExponentialLR", "LinearLR", "ConstantLR", "CosineAnnealingLR",
                       "MultiStepLR", "LambdaLR", "OneCycleLR"])
    if rng.random() < 0.1:
        return rng.choice(WILD)
    try:
        if kind == "StepLR":
            return T.StepLR(lr, rng.randint(1, 20), rng.uniform(0, 1))
        if kind == "ExponentialLR":
            return T.ExponentialLR(lr, rng.uniform(0.5, 1))
        if kind == "LinearLR":
            return T.LinearLR(lr, rng.uniform(0.01, 1), rng.uniform(0, 1), rng.randint(0, 30))
        if kind == "ConstantLR":
            return T.ConstantLR(lr, rng.uniform(0.01, 1), rng.randint(0, 30))
        if kind == "CosineAnnealingLR":
            return T.CosineAnnealingLR(lr, rng.randint(1, 40), rng.uniform(0, 0.01))
        if kind == "MultiStepLR":
            return T.MultiStepLR(lr, sorted(rng.sample(range(60), 3)), rng.uniform(0, 1))
        if kind == "LambdaLR":
            return T.LambdaLR(lr, S.expr(rng.choice(LAMBDAS)))
        return T.OneCycleLR(lr, rng.uniform(0, 2), total_steps=rng.randint(10, 100))
    except ValueError:
        return rng.choice(WILD)


_CALLABLES = [S.expr("0.9 ** step"), S.expr("1 - step / 20"), lambda t: 0.5, lambda t: 1.0,
              S.expr("1.0 if step < 30 else 0.1")]


def value_for(name: str, rng: random.Random, where: Any, lr: Any) -> Any:
    """An argument for parameter ``name`` of ``where``: usually plausible, sometimes wild."""
    if rng.random() < 0.1:
        return rng.choice(WILD)
    if name in ("schedule",):
        return schedule(rng)
    if name == "schedulers":
        return [torch_leaf(rng, lr) for _ in range(rng.randint(1, 3))]
    if name in ("lr_lambda", "scale_fn", "fn"):
        return rng.choice([*_CALLABLES, None, 3])
    if name in ("milestones", "boundaries", "at", "steps_list"):
        return number_list(rng)
    if name in ("values",):
        out = [number(rng) for _ in range(rng.randint(1, 5))]
        return [abs(x) if isinstance(x, (int, float)) and rng.random() < 0.8 else x for x in out]
    if name in ("mode", "shape", "anneal", "anneal_strategy", "rule", "scale_mode",
                "threshold_mode", "warmup_type", "decay_type", "kind", "name"):
        return rng.choice(["triangular", "triangular2", "exp_range", "linear", "cosine",
                           "1-sqrt", "cos", "sqrt", "blend", "cycle", "iterations", "min",
                           "max", "rel", "abs", "constant", "warmup_stable_decay", "nope"])
    if name in ("staircase", "three_phase", "global_step", "cycle_momentum"):
        return rng.choice([True, False, 1, None])
    if name == "pct_start":
        return rng.choice([0.3, rng.uniform(0, 1), 0.0, 1.0, 0.5, 1])
    if name in ("total_steps", "epochs", "steps_per_epoch", "T_0", "T_mult", "period",
                "step_size", "total_iters", "T_max", "num_warmup_steps", "num_training_steps",
                "num_decay_steps", "num_stable_steps", "timescale", "warmup", "decay", "total",
                "up", "down", "step_size_up", "step_size_down", "d_model", "batch_size",
                "base_batch_size", "crossover", "patience", "cooldown", "horizon", "seed",
                "max_cycles", "steps"):
        return rng.choice([rng.randint(0, 60), rng.randint(1, 5000), None, *WILD[:13]])
    return number(rng)


def _args(fn: Any, rng: random.Random, lr: Any) -> tuple[list[Any], dict[str, Any]]:
    sig = inspect.signature(fn)
    pos: list[Any] = []
    kw: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.name in ("self", "cls"):
            continue
        if p.kind is p.VAR_POSITIONAL:
            pos.extend(schedule(rng) for _ in range(rng.randint(0, 3)))
            continue
        if p.kind is p.VAR_KEYWORD:
            continue
        if p.name == "lr":
            v = lr
        else:
            if p.default is not p.empty and rng.random() < 0.5:
                continue
            v = value_for(p.name, rng, fn, lr)
        if p.kind is p.KEYWORD_ONLY or (pos and rng.random() < 0.3) or kw:
            kw[p.name] = v
        else:
            pos.append(v)
    return pos, kw


def _lr(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.8:
        return rng.choice([0.1, 1e-3, 1.0, rng.uniform(0, 2)])
    if r < 0.9:
        return [0.1, 0.01]
    return rng.choice(WILD)


def _uses_user_fn(s: Any) -> bool:
    if isinstance(s, list):
        return any(_uses_user_fn(x) for x in s)
    if isinstance(s, (S.expr, S.lambda_)):
        return True
    return any(_uses_user_fn(c) for c in s.children()) if isinstance(s, S.Schedule) else False


def _unbounded(s: Any) -> bool:
    """Exponential growth without a bound (allowed, issue 24): inf far out, by design."""
    if isinstance(s, list):
        return any(_unbounded(x) for x in s)
    if isinstance(s, S.exponential) and s.end is None and s.rate > 1:
        return True
    return any(_unbounded(c) for c in s.children()) if isinstance(s, S.Schedule) else False


def _check_value(v: Any, where: str, signed: bool = False) -> None:
    assert isinstance(v, float), (where, type(v))
    assert (-math.inf if signed else 0.0) <= v < math.inf and abs(v) < math.inf, (where, v)


class Stats:
    def __init__(self) -> None:
        self.accepted: list[Any] = []
        self.worst = 0.0
        self.n_ok = 0


def _signed(s: Any) -> bool:
    """Values free to be negative (issue 24): schedules.torch gives torch's numbers, negative
    ones included, and a constant may be negative (a schedule need not be an lr)."""
    if isinstance(s, T.TorchSchedule) or (isinstance(s, S.constant) and s.value < 0):
        return True
    return isinstance(s, S.Schedule) and any(_signed(c) for c in s.children())


def _query(s: Any, t: int, stats: Stats, free: bool, where: str) -> bool:
    """Host query: True if it gave a value (checked unless ``free``), False on ValueError."""
    t0 = time.perf_counter()
    try:
        v = s(t)
    except ValueError:
        return False
    finally:
        stats.worst = max(stats.worst, time.perf_counter() - t0)
    if not free:
        _check_value(v, f"{where} at step {t}", _signed(s))
    return True


def fuzz(name: str, fn: Any, seed: int, make: Any = None) -> Stats:
    rng = random.Random(seed)
    stats = Stats()
    for i in range(N):
        lr = _lr(rng)
        try:
            if make is not None:
                s = make(rng)
            else:
                pos, kw = _args(fn, rng, lr)
                s = fn(*pos, **kw)
        except ValueError:
            continue
        stats.n_ok += 1
        group = s if isinstance(s, list) else [s]
        for one in group:
            if not isinstance(one, S.Schedule):  # ReduceLROnPlateau: an optax transformation
                continue
            free = (_uses_user_fn(one) and not isinstance(one, T.TorchSchedule)) or _unbounded(one)
            small = rng.choice([0, 1, rng.randint(0, 300)])
            where = f"{name} #{i}: {one!r}"[:300]
            _query(one, small, stats, free, where)
            _query(one, rng.choice(HUGE_STEPS), stats, free, where)
            if len(stats.accepted) < N_ARRAY:
                stats.accepted.append((one, free, where))
    return stats


def check_array_paths(stats: Stats) -> None:
    steps = np.asarray([0.0, 1.0, 17.0, 299.0, 4096.0, 2.0**31, 1e12, 1e15])
    for s, free, where in stats.accepted:
        host = []
        for t in steps:
            try:
                host.append(s(int(t)))
            except ValueError:
                host.append(math.nan)
        host = np.asarray(host)
        t0 = time.perf_counter()
        got_np = S.values(s, steps)
        try:
            got_jx = np.asarray(s(jnp.asarray(steps, jnp.float32)), np.float64)
        except ValueError as e:  # a decay longer than int32: the host and x64 only (issue 24)
            assert "beyond int32" in str(e), (where, e)
            continue
        # eager JAX dispatches and compiles each operation of a fresh composite: seconds on a
        # busy 2-core machine; what this guards against (a per-step loop to 1e15) takes hours
        assert time.perf_counter() - t0 < 30 * SLOW, where
        if free:
            continue
        for got in (got_np, got_jx):
            lo = -np.inf if _signed(s) else 0.0
            ok = np.isnan(got) | ((got >= lo) & (np.abs(got) < np.inf))
            assert ok.all(), (where, got)
            # NaN only where the host refuses the step (a float32 step past 2**24 is a
            # different step from the host's: the huge ones are compared for sign/finiteness)
            assert not np.isnan(got[:5][~np.isnan(host[:5])]).any(), (where, got, host)


S_ENTRIES = {
    n: getattr(S, n)
    for n in sorted(S.__all__)
    if n not in ("Schedule", "Scheduler", "SpecError", "plot", "expr", "lambda_", "parse",
                 "from_config", "values", "as_schedule")
}
T_ENTRIES = {n: getattr(T, n) for n in T.__all__ if n not in ("PlateauState", "Scheduler")}
HF_ENTRIES = {n: getattr(hf, n) for n in hf.__all__ if n != "HFLambda"}


@pytest.mark.parametrize("name", sorted(S_ENTRIES))
def test_fuzz_algebra(name):
    stats = fuzz(f"S.{name}", S_ENTRIES[name], seed=zlib.crc32(name.encode()))
    assert stats.worst < SLOW, stats.worst
    check_array_paths(stats)


@pytest.mark.parametrize("name", sorted(T_ENTRIES))
def test_fuzz_torch(name):
    stats = fuzz(f"T.{name}", T_ENTRIES[name], seed=zlib.crc32(name.encode()) + 1)
    assert stats.worst < SLOW, stats.worst
    check_array_paths(stats)


@pytest.mark.parametrize("name", sorted(HF_ENTRIES))
def test_fuzz_hf(name):
    stats = fuzz(f"hf.{name}", HF_ENTRIES[name], seed=zlib.crc32(name.encode()) + 2)
    assert stats.worst < SLOW, stats.worst
    check_array_paths(stats)
