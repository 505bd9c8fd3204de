"""schedules.megatron.OptimizerParamScheduler against an independent plain-Python transcription
of Megatron-LM's ``get_lr`` (its step counter counts samples: ``step(increment=gbs)``), on the
host (float64, 1e-12), on NumPy arrays (float64, 1e-12) and traced under ``jit`` (float32: a few
roundings of values <= max_lr, so 1e-6 relative to max_lr)."""

from __future__ import annotations

import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import schedules as S
from reference.megatron import get_lr
from schedules.megatron import DECAY_STYLES, WSD_DECAY_STYLES, OptimizerParamScheduler


def cases():
    rng = random.Random(7)
    for style in DECAY_STYLES:
        for wsd_style in WSD_DECAY_STYLES if style == "WSD" else (None,):
            for i in range(3):
                gbs = rng.choice([1, 4, 256])
                W = rng.choice([0, rng.randint(1, 30)])
                D = rng.randint(W + 1, W + 200)
                wsd = rng.randint(1, D) if style == "WSD" else None
                yield dict(init=rng.choice([0.0, 1e-6]), mx=rng.choice([1e-3, 6e-4]),
                           mn=rng.choice([0.0, 1e-5]), W=W * gbs, D=D * gbs, style=style,
                           wsd=None if wsd is None else wsd * gbs, wsd_style=wsd_style), gbs, i == 0


@pytest.mark.parametrize(("p", "gbs", "jit"), list(cases()))
def test_matches_megatron_formula(p: dict, gbs: int, jit: bool) -> None:
    s = OptimizerParamScheduler(p["init"], p["mx"], p["mn"], lr_warmup_steps=p["W"],
                                lr_decay_steps=p["D"], lr_decay_style=p["style"],
                                wsd_decay_steps=p["wsd"], lr_wsd_decay_style=p["wsd_style"],
                                increment=gbs)
    n = p["D"] // gbs + 20
    ref = np.array([get_lr(t * gbs, **p) for t in range(n)])
    host = np.array([s(t) for t in range(n)])
    np.testing.assert_allclose(host, ref, rtol=1e-12, atol=1e-15 * p["mx"])
    np.testing.assert_allclose(S.values(s, n), ref, rtol=1e-12, atol=1e-15 * p["mx"])
    if jit:  # one compilation per style (each compiles anew: the style is static)
        traced = np.asarray(jax.jit(s)(jnp.arange(n)), np.float64)
        np.testing.assert_allclose(traced, ref, rtol=0, atol=1e-6 * p["mx"])
    # serializable and parseable like every schedule
    assert S.from_config(s.to_config())(n // 2) == s(n // 2)
    assert S.parse(repr(s))(n // 3) == s(n // 3)


def test_warmup_starts_at_init_and_trains_step_zero_at_it() -> None:
    s = S.megatron_lr(0.0, 1e-3, 0.0, lr_warmup_steps=10, lr_decay_steps=100,
                      lr_decay_style="cosine")
    assert s(0) == 0.0 and s(10) == 1e-3 and s(100) == 0.0 and s(101) == 0.0


def test_is_a_pytree_argument_of_jit() -> None:
    """The lrs are leaves: a jitted function taking the schedule sees new values without
    recompiling and gives each schedule's own values."""
    f = jax.jit(lambda s, t: s(t))
    a = OptimizerParamScheduler(0.0, 1e-3, 0.0, 5, 50, "linear")
    b = OptimizerParamScheduler(0.0, 2e-3, 1e-4, 5, 50, "linear")
    t = jnp.arange(60)
    np.testing.assert_allclose(f(a, t), S.values(a, 60), rtol=0, atol=1e-6 * 1e-3)
    np.testing.assert_allclose(f(b, t), S.values(b, 60), rtol=0, atol=1e-6 * 2e-3)
    assert f._cache_size() == 1


@pytest.mark.parametrize(("kw", "needle"), [
    (dict(min_lr=1e-2), "max_lr=0.001 must be >= min_lr=0.01"),
    (dict(lr_warmup_steps=100), "lr_warmup_steps=100 must be < lr_decay_steps=100"),
    (dict(lr_decay_style="WSD"), "wsd_decay_steps=None"),
    (dict(lr_decay_style="WSD", wsd_decay_steps=5), "lr_wsd_decay_style=None"),
    (dict(lr_decay_style="cosine-annealing"), "lr_decay_style='cosine-annealing'"),
    (dict(increment=0), "increment=0 must be > 0"),
])
def test_rejects_bad_arguments(kw: dict, needle: str) -> None:
    args = dict(init_lr=0.0, max_lr=1e-3, min_lr=0.0, lr_warmup_steps=0, lr_decay_steps=100,
                lr_decay_style="linear")
    args.update(kw)
    with pytest.raises(ValueError) as e:
        OptimizerParamScheduler(**args)
    assert needle in str(e.value)
