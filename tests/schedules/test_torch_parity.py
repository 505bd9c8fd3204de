"""Parity of schedules.torch with real torch.optim.lr_scheduler: random configurations of
every class and random compositions, host path (1e-12) and traced paths (float32 jit/vmap;
float64 in a subprocess with jax_enable_x64)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))
from torch_ref import LEAVES, build_ours, rand_leaf, rand_spec, torch_lrs  # noqa: E402

from schedules import torch as T  # noqa: E402

N = 300


def _cases(n: int, seed0: int, leaves_only: str | None = None) -> list:
    out = []
    for seed in range(seed0, seed0 + n):
        rng = random.Random(seed)
        spec = rand_leaf(rng, leaves_only, N) if leaves_only else rand_spec(rng, N)
        out.append((seed, spec, rng.uniform(0.01, 1.0)))
    return out


def _check_host(spec, lr) -> None:
    ref, exc = torch_lrs(spec, lr, N)
    try:
        s = build_ours(spec, lr)
    except ValueError:
        assert exc is not None and not ref, "we raised at construction, torch did not"
        return
    # torch's numbers, negative ones included (issue 24)
    got = [s(t) for t in range(len(ref))]
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)
    if exc is not None:  # torch raised at step len(ref): so do we
        with pytest.raises(ValueError):
            s(len(ref))


@pytest.mark.parametrize("name", LEAVES)
def test_every_class_host(name):
    for _seed, spec, lr in _cases(25, 1000, name):
        _check_host(spec, lr)


def test_random_compositions_host():
    for _seed, spec, lr in _cases(250, 0):
        _check_host(spec, lr)


def test_sequential_and_chained_of_every_kind_host():
    rng = random.Random(7)
    for i in range(120):
        kids = [rand_leaf(rng, rng.choice(LEAVES), N) for _ in range(rng.randint(2, 3))]
        if i % 2:
            ms = sorted(rng.sample(range(1, N), len(kids) - 1))
            spec = ("SequentialLR", {"schedulers": kids, "milestones": ms})
        else:
            spec = ("ChainedScheduler", {"schedulers": kids})
        _check_host(spec, rng.uniform(0.01, 1.0))


def _f32_tol(ref: np.ndarray, got: np.ndarray, rtol: float) -> None:
    assert not np.isnan(got).any(), got[np.isnan(got)][:3]  # negative lrs are torch's numbers
    peak = np.max(np.abs(ref))
    small = np.abs(ref) < 1e-6 * peak
    err = np.abs(got - ref)
    lim = np.where(small, 2e-5 * np.abs(ref) + 1e-6 * peak * 1e-6, rtol * np.abs(ref))
    bad = ~((err <= lim) | (np.isnan(got) & np.isnan(ref)))
    assert not bad.any(), (int(np.argmax(bad)), got[bad][:3], ref[bad][:3])


def _user_cos(spec) -> bool:
    name, kw = spec
    if name in ("SequentialLR", "ChainedScheduler"):
        return any(_user_cos(c) for c in kw["schedulers"])
    return "cos(" in str(kw.get("lr_lambda", ""))


@pytest.mark.parametrize("horizon", [None, N])
def test_traced_float32_jit_vmap(horizon):
    for _seed, spec, lr in _cases(120, 0):
        ref, _exc = torch_lrs(spec, lr, N)
        try:
            s = build_ours(spec, lr)
        except ValueError:
            continue
        if horizon is not None:
            s = type(s)(**{f: getattr(s, f) for f in s._fields if f != "horizon"},
                        horizon=horizon) if not isinstance(s, T.ChainedScheduler) else \
                T.ChainedScheduler(list(s.schedulers), s.lr, horizon=horizon)
        ts = jnp.arange(len(ref), dtype=jnp.float32)
        got = np.asarray(jax.jit(jax.vmap(s))(ts), np.float64)
        # closed forms: powers as one accurate exp2, no cancellation (documented: 1e-6);
        # the table: exact rounding. A user lambda's own float32 cos is not ours (1e-5).
        _f32_tol(np.asarray(ref), got, 1e-5 if _user_cos(spec) and not horizon else 1e-6)


def _uses(spec, names: tuple[str, ...]) -> bool:
    name, kw = spec
    return name in names or any(_uses(c, names) for c in kw.get("schedulers", []))


def test_as_a_traced_argument():
    """``jit(f)(schedule, t)``: the hyperparameters arrive as float32 arrays. Closed forms then
    carry the float32 rounding of e.g. ``gamma`` through ``gamma ** t`` (at most ~300 ulps of
    relative error after 300 steps, hence 3e-5); the recurrences that need concrete values
    raise a ValueError that says to close over the schedule, never a JAX tracer error."""
    f = jax.jit(lambda s, t: jax.vmap(s)(t))
    needs_concrete = ("MultiplicativeLR", "SequentialLR", "ChainedScheduler")
    ran = set()
    for _seed, spec, lr in _cases(12 * 10, 1000, None) + [
        (None, rand_leaf(random.Random(i), LEAVES[i % len(LEAVES)], N), 0.3)
        for i in range(120)
    ]:
        ref, _exc = torch_lrs(spec, lr, N)
        try:
            s = build_ours(spec, lr)
        except ValueError:
            continue
        ts = jnp.arange(len(ref), dtype=jnp.float32)
        if _uses(spec, needs_concrete):
            with pytest.raises(ValueError, match="close over the schedule"):
                f(s, ts)
            continue
        got = np.asarray(f(s, ts), np.float64)
        _f32_tol(np.asarray(ref), got, 3e-5)
        ran.add(spec[0])
    assert ran == set(LEAVES) - {"MultiplicativeLR"}


def test_traced_argument_does_not_retrace_on_new_values():
    traces = []

    @jax.jit
    def f(s, t):
        traces.append(1)
        return s(t)

    for max_lr, gamma in [(0.1, 0.99), (0.2, 0.98), (0.5, 0.9)]:
        s = T.CyclicLR(0.1, 0.01, max_lr, step_size_up=5, mode="exp_range", gamma=gamma)
        np.testing.assert_allclose(float(f(s, 7)), s(7), rtol=1e-6)
        o = T.OneCycleLR(0.1, max_lr, total_steps=50)
        np.testing.assert_allclose(float(f(o, 7)), o(7), rtol=1e-6)
    assert len(traces) == 2  # once per class: only the values changed


_X64 = r"""
import json, random, sys, os
sys.path.insert(0, os.environ["TDIR"])
import jax; jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
from torch_ref import build_ours, rand_spec, torch_lrs
bad = []
for seed in range(int(sys.argv[1])):
    rng = random.Random(seed); spec = rand_spec(rng, 300); lr = rng.uniform(0.01, 1.0)
    ref, exc = torch_lrs(spec, lr, 300)
    try: s = build_ours(spec, lr)
    except ValueError: continue
    got = np.asarray(jax.jit(jax.vmap(s))(jnp.arange(len(ref), dtype=jnp.float64)))
    ref = np.asarray(ref)
    ok = (np.abs(got - ref) <= 1e-12 * np.abs(ref)) | (got == ref)
    if not ok.all(): bad.append([seed, int(np.argmin(ok))])
print(json.dumps(bad))
"""


def test_traced_float64_subprocess():
    env = dict(os.environ, TDIR=os.path.dirname(__file__), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _X64, "120"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_per_group_lists():
    L = torch.optim.lr_scheduler
    lrs = [0.1, 0.02]
    fns = [lambda t: 0.9 ** t, lambda t: 1.0 / (t + 1)]
    G = T.per_group
    cases = [
        (lambda o: L.LambdaLR(o, fns), G(T.LambdaLR, lrs, fns)),
        (lambda o: L.StepLR(o, 3, 0.5), G(T.StepLR, lrs, 3, 0.5)),
        (lambda o: L.CyclicLR(o, [0.01, 0.001], [0.1, 0.05], step_size_up=4),
         G(T.CyclicLR, lrs, [0.01, 0.001], [0.1, 0.05], step_size_up=4)),
        (lambda o: L.OneCycleLR(o, [1.0, 0.5], total_steps=50),
         G(T.OneCycleLR, lrs, [1.0, 0.5], total_steps=50)),
        (lambda o: L.SequentialLR(o, [L.ConstantLR(o, 0.5, 3), L.ExponentialLR(o, 0.9)], [5]),
         G(T.SequentialLR, lrs, [G(T.ConstantLR, lrs, 0.5, 3), G(T.ExponentialLR, lrs, 0.9)],
           [5])),
        (lambda o: L.ChainedScheduler([L.LinearLR(o, 0.2, total_iters=4),
                                       L.ExponentialLR(o, 0.9)]),
         G(T.ChainedScheduler, [G(T.LinearLR, lrs, 0.2, total_iters=4),
                                G(T.ExponentialLR, lrs, 0.9)])),
    ]
    for build, ours in cases:
        from torch_ref import make_opt

        opt = make_opt(lrs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sch = build(opt)
            for t in range(40):
                for g, s in zip(opt.param_groups, ours):
                    assert abs(s(t) - g["lr"]) <= 1e-12 * abs(g["lr"])
                opt.step()
                sch.step()


def test_momentum_companions():
    L = torch.optim.lr_scheduler
    from torch_ref import make_opt

    for mode in ["triangular", "triangular2", "exp_range"]:
        opt = make_opt(0.1)
        sch = L.CyclicLR(opt, 0.01, 0.1, step_size_up=5, step_size_down=3, mode=mode, gamma=0.99)
        m = T.CyclicLR.momentum(0.01, 0.1, step_size_up=5, step_size_down=3, mode=mode,
                                gamma=0.99)
        for t in range(40):
            assert abs(m(t) - opt.param_groups[0]["momentum"]) < 1e-12
            opt.step()
            sch.step()
    for three in (False, True):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.Adam([p], lr=0.1)
        sch = L.OneCycleLR(opt, 1.0, total_steps=60, three_phase=three)
        m = T.OneCycleLR.momentum(1.0, total_steps=60, three_phase=three)
        got = jax.jit(jax.vmap(m))(jnp.arange(60.0))
        for t in range(60):
            assert abs(m(t) - opt.param_groups[0]["betas"][0]) < 1e-12
            assert abs(float(got[t]) - opt.param_groups[0]["betas"][0]) < 1e-6
            opt.step()
            sch.step()


def test_torch_raises_we_raise():
    with pytest.raises(ValueError):
        T.ConstantLR(0.1, factor=1.5)
    with pytest.raises(ValueError):
        T.LinearLR(0.1, start_factor=0.0)
    with pytest.raises(ValueError):
        T.CosineAnnealingWarmRestarts(0.1, T_0=0)
    with pytest.raises(ValueError):
        T.OneCycleLR(0.1, 1.0)
    with pytest.raises(ValueError):
        T.SequentialLR(0.1, [T.StepLR(0.1, 2)], milestones=[3])
    s = T.OneCycleLR(0.1, 1.0, total_steps=20)
    s(20)  # step total_steps is still defined in torch
    with pytest.raises(ValueError, match="Tried to step 21"):
        s(21)
    assert np.isnan(float(jax.jit(s)(jnp.float32(21))))
    # a composite at a SequentialLR milestone: torch raises NotImplementedError there
    bad = T.SequentialLR(0.1, [T.StepLR(0.1, 2), T.ChainedScheduler([T.StepLR(0.1, 2)])], [4])
    assert bad(3) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="NotImplementedError"):
        bad(4)
