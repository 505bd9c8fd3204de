"""The stateful facade, torch state_dict round trips, ReduceLROnPlateau, optax use, and
the algebra integration (pytrees, configs)."""

from __future__ import annotations

import os
import random
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.dirname(__file__))
from torch_ref import build_ours, build_torch, make_opt, rand_spec  # noqa: E402

import schedules as S  # noqa: E402
from schedules import torch as T  # noqa: E402
from schedules.torch._recurrence import SAFE_TICKS  # noqa: E402


def test_resume_from_torch_state_dict_mid_schedule():
    for seed in range(40):
        rng = random.Random(seed)
        spec = rand_spec(rng, 200)
        lr = rng.uniform(0.01, 1.0)
        opt = make_opt(lr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                sch = build_torch(spec, opt)
                ours = build_ours(spec, lr)
                cut = rng.randint(0, 150)
                for _ in range(cut):
                    opt.step()
                    sch.step()
            except (ValueError, ZeroDivisionError, NotImplementedError):
                continue
            fac = T.Scheduler(ours)
            fac.load_state_dict(sch.state_dict())
            assert fac.last_epoch == cut
            try:
                for _ in range(30):
                    assert fac.get_last_lr()[0] == pytest.approx(sch.get_last_lr()[0], rel=1e-12)
                    opt.step()
                    sch.step()
                    fac.step()
            except (ValueError, ZeroDivisionError, NotImplementedError):
                continue
            again = T.Scheduler(ours)
            again.load_state_dict(fac.state_dict())
            assert again.get_last_lr() == fac.get_last_lr()


def test_base_facade_works_too():
    sch = S.Scheduler(T.CosineAnnealingLR(0.1, T_max=10))
    for _ in range(3):
        sch.step()
    assert sch.get_last_lr()[0] == T.CosineAnnealingLR(0.1, T_max=10)(3)


def _torch_plateau(metrics, lr, **kw):
    opt = make_opt(lr)
    sch = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
    out = []
    for m in metrics:
        opt.step()
        sch.step(m)
        out.append(opt.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("seed", range(12))
def test_reduce_on_plateau_random(seed):
    rng = random.Random(seed)
    kw = dict(mode=rng.choice(["min", "max"]), factor=rng.uniform(0.1, 0.9),
              patience=rng.randint(0, 5), threshold=rng.choice([1e-4, 0.05, 0.2]),
              threshold_mode=rng.choice(["rel", "abs"]), cooldown=rng.randint(0, 4),
              min_lr=rng.choice([0.0, 1e-3]), eps=1e-8)
    # a noisy trend, in multiples of 1/64 so float32 comparisons are exact
    metrics = [round((10 + (-1) ** (kw["mode"] == "max") * -0.05 * i + rng.gauss(0, 1)) * 64) / 64
               for i in range(120)]
    ref = _torch_plateau(metrics, 0.5, **kw)
    tx = T.ReduceLROnPlateau(0.5, **kw)
    st = tx.init(None)
    step = jax.jit(lambda st, m: tx.update(jnp.ones(2), st, value=m))
    for m, r in zip(metrics, ref):
        upd, st = step(st, m)
        assert float(st.lr) == pytest.approx(r, rel=1e-6)
        assert float(upd[0]) == pytest.approx(r / 0.5, rel=1e-6)
    assert int(st.last_epoch) == len(metrics)


def test_optax_learning_rate_and_inject():
    s = T.OneCycleLR(1e-3, max_lr=1e-2, total_steps=100)
    opt = optax.adamw(learning_rate=s)
    params = {"w": jnp.ones(3)}
    st = opt.init(params)
    _upd, st = jax.jit(opt.update)(params, st, params)
    mom = T.OneCycleLR.momentum(max_lr=1e-2, total_steps=100)
    inj = optax.inject_hyperparams(optax.sgd)(learning_rate=s, momentum=mom)
    st2 = inj.init(params)
    _, st2 = inj.update(params, st2, params)
    assert float(st2.hyperparams["momentum"]) == pytest.approx(mom(0), rel=1e-6)


def test_pytree_config_and_spec_roundtrip():
    s = T.SequentialLR(0.1, [T.LinearLR(0.1, 0.1, total_iters=5),
                             T.CosineAnnealingLR(0.1, T_max=50, eta_min=1e-3)], [5])
    s2 = S.from_config(s.to_config())
    assert [s2(t) for t in range(60)] == [s(t) for t in range(60)]
    s3 = S.parse(repr(s))
    assert s3(30) == s(30)
    leaves, tree = jax.tree_util.tree_flatten(s)
    s4 = jax.tree_util.tree_unflatten(tree, leaves)
    assert s4(17) == s(17)
    lam = T.LambdaLR(0.1, S.expr("0.9 ** step"))
    assert S.from_config(lam.to_config())(3) == lam(3)
    with pytest.raises(ValueError, match="callable"):
        T.LambdaLR(0.1, lambda t: 1.0).to_config()


def test_sequential_host_queries_are_amortized(monkeypatch):
    """Each step of torch's recurrence is computed once, however the steps are queried: the
    multiplicative ones in chunks of Chain.CHUNK steps at C speed (each chunk once), the
    others (no closed form: MultiplicativeLR) by replaying each step once."""
    from schedules.torch._recurrence import Chain

    chunks = []
    real = Chain._chunk
    monkeypatch.setattr(Chain, "_chunk", lambda self, i: chunks.append(i) or real(self, i))
    for s in (T.ExponentialLR(0.1, gamma=0.999),
              T.ChainedScheduler([T.ExponentialLR(0.1, 0.999), T.StepLR(0.1, 7, 0.9)])):
        chunks.clear()
        vals = [s(t) for t in range(SAFE_TICKS + 1, 5000)]
        assert chunks == list(range(5000 // Chain.CHUNK + 1)), chunks  # each chunk once
        vals += [s(4000), s(1500)]  # back: from the checkpoints
        # the values are torch's loop: lr * gamma rounded at each step
        ref, v = [], s(0)
        for t in range(1, 5000):
            v = v * 0.999 if isinstance(s, T.ExponentialLR) else (
                (v * 0.999) * (0.9 if t % 7 == 0 else 1.0))
            ref.append(v)
        assert vals == [*ref[SAFE_TICKS:], ref[3999], ref[1499]]
    calls = []
    m = T.MultiplicativeLR(0.1, lambda t: calls.append(t) or 0.999)
    calls.clear()
    for t in range(3000):
        m(t)
    assert sorted(calls) == list(range(1, 3000))  # each step's factor asked for once


def test_numpy_path():
    s = T.SequentialLR(0.1, [T.ExponentialLR(0.1, 0.9), T.StepLR(0.1, 3)], [10])
    arr = s(np.arange(20))
    assert arr.tolist() == [s(t) for t in range(20)]
