"""Batch-size scaling (``scale_batch``): the four rules, a batch size that is itself a schedule,
and the complete custom scheduler of docs/schedules.md ("A custom scheduler by composition")
against a plain-Python implementation written independently here."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import schedules as S


@pytest.mark.parametrize("batch", [64, 256, 512, 1024, 4096])
def test_rules_closed_forms(batch):
    base = S.cosine(0.1, 0.0, 500)
    k = batch / 256
    expected = {
        "linear": k,
        "sqrt": math.sqrt(k),
        "blend": 0.5 * k + 0.5 * math.sqrt(k),  # what users mean by "blend"
        "crossover": min(batch, 1024) / 256 * math.sqrt(max(batch, 1024) / 1024),
    }
    for rule, factor in expected.items():
        kw = {"crossover": 1024} if rule == "crossover" else {}
        s = S.scale_batch(base, batch, 256, rule=rule, **kw)
        assert s.factor() == pytest.approx(factor, rel=1e-15)
        for t in (0, 123, 499, 800):
            assert s(t) == pytest.approx(factor * base(t), rel=1e-14, abs=1e-300)


def test_blend_lies_between_sqrt_and_linear():
    for batch in (512, 2048, 8192):  # above the base batch: sqrt < blend < linear
        lin, sq, bl = (S.scale_batch(S.constant(1.0), batch, 256, rule=r).factor()
                       for r in ("linear", "sqrt", "blend"))
        assert sq < bl < lin


def test_batch_size_as_a_function_of_the_step():
    """A batch-size ramp: the lr at step t is the schedule times the factor of batch(t)."""
    ramp = S.piecewise_linear([0, 100, 200], [256.0, 1024.0, 4096.0])
    base = S.warmup(S.cosine(0.1, 0.01, 300), 20)
    s = S.scale_batch(base, ramp, 256, rule="blend")
    t = np.arange(0, 320)
    host = np.array([s(int(i)) for i in t])
    b = np.interp(t, [0, 100, 200], [256.0, 1024.0, 4096.0])
    k = b / 256
    expected = (0.5 * k + 0.5 * np.sqrt(k)) * np.array([base(int(i)) for i in t])
    np.testing.assert_allclose(host, expected, rtol=1e-13, atol=1e-18)
    # NumPy and jitted float32 paths agree with the host path (float32: a few ulps)
    np.testing.assert_allclose(s(t), host, rtol=1e-13, atol=1e-18)
    traced = np.asarray(jax.jit(s)(jnp.asarray(t)), np.float64)
    np.testing.assert_allclose(traced, host, rtol=2e-6, atol=1e-9)
    # the factor moves with the step: step 200 uses batch 4096 (k = 16)
    assert s.factor(t=200.0) == pytest.approx(0.5 * 16 + 0.5 * 4)
    # serializable, and rebuilt equal
    assert S.from_config(s.to_config())(150) == s(150)
    assert S.parse(repr(s))(150) == s(150)


def test_validation_names_parameter_and_rule():
    with pytest.raises(ValueError, match="crossover=1024 is only used with rule='crossover'"):
        S.scale_batch(S.constant(1.0), 4096, 256, rule="blend", crossover=1024)
    with pytest.raises(ValueError, match="crossover=None must be given with rule='crossover'"):
        S.scale_batch(S.constant(1.0), 4096, 256, rule="crossover")
    with pytest.raises(ValueError, match="batch_size=0 must be > 0"):
        S.scale_batch(S.constant(1.0), 0, 256)
    with pytest.raises(ValueError, match="rule='mean' must be one of"):
        S.scale_batch(S.constant(1.0), 512, 256, rule="mean")


# -- the complete custom scheduler of docs/schedules.md -----------------------------------------


def custom_scheduler(base_lr: float, *, warmup: int, warmup_scale_min: float, warmup_shape: str,
                     T_0: int, T_mult: int, gamma: float, eta_min: float, base_batch: int,
                     batch: S.Schedule, lam: str) -> S.Schedule:
    """The composition shown in docs/schedules.md (kept in sync by hand: the doc's code block
    is executed by ``test_doc_example_is_this_composition``)."""
    lo = warmup_scale_min * base_lr
    rise = S.linear(lo, base_lr, warmup) if warmup_shape == "linear" else \
        S.cosine(lo, base_lr, warmup)
    restarts = S.cosine_restarts(base_lr, eta_min, period=T_0, period_mult=T_mult, decay=gamma)
    shape = S.join(rise, restarts, at=[warmup])
    return S.scale_batch(shape, batch, base_batch, rule="blend") * S.expr(lam)


def reference_lr(t: int, base_lr: float, *, warmup: int, warmup_scale_min: float,
                 warmup_shape: str, T_0: int, T_mult: int, gamma: float, eta_min: float,
                 base_batch: int, batch_of: callable, lam: callable) -> float:
    """Plain Python, written from the definitions (no schedules code)."""
    if t < warmup:
        p = t / warmup
        w = p if warmup_shape == "linear" else (1 - math.cos(math.pi * p)) / 2
        shape = base_lr * (warmup_scale_min + (1 - warmup_scale_min) * w)
    else:
        u, n, length = t - warmup, 0, T_0
        while u >= length:  # walk the cycles: T_0, T_0 T_mult, T_0 T_mult^2, ...
            u -= length
            n += 1
            length *= T_mult
        peak = base_lr * gamma ** n
        shape = eta_min + (peak - eta_min) * (1 + math.cos(math.pi * u / length)) / 2
    k = batch_of(t) / base_batch
    return shape * (0.5 * k + 0.5 * math.sqrt(k)) * lam(t)


@pytest.mark.parametrize("warmup_shape", ["linear", "cosine"])
def test_custom_scheduler_matches_plain_python(warmup_shape):
    hp = dict(warmup=50, warmup_scale_min=0.1, warmup_shape=warmup_shape, T_0=100, T_mult=2,
              gamma=0.5, eta_min=1e-5, base_batch=256)
    # batch size doubles at steps 200 and 500 (a batch-size ramp), as a schedule and as Python
    batch = S.piecewise_constant([200, 500], [256.0, 512.0, 1024.0])

    def batch_of(t: int) -> float:
        return 256.0 if t < 200 else (512.0 if t < 500 else 1024.0)

    lam_text = "0.98 ** (step // 100)"

    def lam(t: int) -> float:
        return 0.98 ** (t // 100)

    # two parameter groups: the model at 3e-3, the embeddings at 10x less
    groups = {"default": 3e-3, "embeddings": 3e-4}
    scheds = {g: custom_scheduler(lr, batch=batch, lam=lam_text, **hp) for g, lr in groups.items()}
    steps = np.arange(1600)
    for g, lr in groups.items():
        ref = np.array([reference_lr(int(t), lr, batch_of=batch_of, lam=lam, **hp) for t in steps])
        host = np.array([scheds[g](int(t)) for t in steps])
        # the same formula in float64 by two routes: rounding only
        np.testing.assert_allclose(host, ref, rtol=1e-12, atol=1e-18)
        traced = np.asarray(jax.jit(jax.vmap(scheds[g]))(jnp.asarray(steps)), np.float64)
        np.testing.assert_allclose(traced, ref, rtol=2e-5, atol=1e-10)  # float32 on the device
    # sanity of the shape: warmup starts at warmup_scale_min x lr, reaches the peak at step W,
    # each restart peaks at gamma^n x lr (times the batch factor and the lambda)
    s = scheds["default"]
    assert s(0) == pytest.approx(0.1 * 3e-3)
    assert s(50) == pytest.approx(3e-3)
    assert s(150) == pytest.approx(3e-3 * 0.5 * 0.98)  # cycle 1 starts at 50 + 100
    k = 2.0
    assert s(350) == pytest.approx(3e-3 * 0.25 * (0.5 * k + 0.5 * math.sqrt(k)) * 0.98 ** 3)
    # the second group peaks at its own lr (eta_min is shared, so the groups are not
    # proportional at the bottom of a cycle)
    assert scheds["embeddings"](50) == pytest.approx(3e-4)
    # both groups through the PyTorch-style facade
    sch = S.Scheduler([scheds["default"], scheds["embeddings"]])
    for _ in range(350):
        sch.step()
    assert sch.get_last_lr() == [scheds["default"](350), scheds["embeddings"](350)]


def test_doc_example_is_this_composition():
    """docs/schedules.md's custom-scheduler block runs and builds the same schedules."""
    import pathlib
    import re

    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "schedules.md").read_text()
    m = re.search(r"<!-- custom-scheduler -->\s*```python\n(.*?)```", doc, re.S)
    assert m, "docs/schedules.md lost its custom-scheduler example"
    ns: dict = {}
    exec(compile(m.group(1), "docs/schedules.md", "exec"), ns)  # our own doc, not user text
    batch = S.piecewise_constant([200, 500], [256.0, 512.0, 1024.0])
    for lr, got in zip((3e-3, 3e-4), ns["group_lrs"]):
        want = custom_scheduler(lr, warmup=50, warmup_scale_min=0.1, warmup_shape="cosine",
                                T_0=100, T_mult=2, gamma=0.5, eta_min=1e-5, base_batch=256,
                                batch=batch, lam="0.98 ** (step // 100)")
        np.testing.assert_allclose(S.values(got, 1600), S.values(want, 1600), rtol=0, atol=0)
