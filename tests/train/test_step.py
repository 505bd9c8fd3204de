"""train.engine.step.update: the ``lr`` metric is the rate the optimizer applied, the ``finite``
metric, and float16 dynamic loss scaling, on losses whose gradients are known in closed form;
the same update with and without ``jax.jit`` (``chex.variants``)."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import schedules as S
from train.engine.step import LossScale, init_state, schedule_count, update

C = np.array([1.0, -2.0, 0.5, 4.0], np.float32)  # d loss / d w of the linear loss
BATCH = jnp.zeros((1, 1, 2), jnp.int32)  # unused by the losses below; [accum, B, T + 1]


def linear_loss(params, tokens, key):
    """loss = c . w: its gradient is the constant ``C``."""
    return jnp.sum(params["w"] * C) + jnp.sum(params["v"] * C)


def run_updates(tx, schedule, params, n, loss_fn=linear_loss, loss_scale=None):
    """n jitted updates; the recorded parameters before/after each and the metrics."""
    state = jax.device_put(init_state(params, tx, loss_scale))
    step = jax.jit(lambda s, b: update(s, b, None, tx=tx, schedule=schedule, reduce=lambda x: x,
                                       loss_fn=loss_fn, loss_scale=loss_scale))
    rows = []
    for _ in range(n):
        before = jax.device_get(state)
        state, m = step(state, BATCH)
        rows.append((before, jax.device_get(state), jax.device_get(m)))
    return rows


def applied_lr(before, after, leaf="w"):
    """SGD: w' = w - lr * C, so lr = (w - w') / C, per element (all equal up to rounding)."""
    return (before["params"][leaf] - after["params"][leaf]) / C


# a schedule with jumps (StepLR-like, 10x down at 3, and a join back up at 5): an optimizer one
# step ahead of (or behind) the log applies a rate 10x off at the jump steps
JUMPY = S.join(S.step(1.0, 3, 0.1), S.constant(0.5), at=[5])


def _tol(rows):
    """|error| of the recovered lr: float32 rounding of w (|w| <= sum of the updates) and of the
    difference, divided by min |C|."""
    wmax = max(np.max(np.abs(a["params"]["w"])) for _, a, _ in rows) + 1.0
    return 4 * np.finfo(np.float32).eps * wmax * np.max(np.abs(C)) / np.min(np.abs(C))


def test_logged_lr_is_the_applied_lr_across_jumps() -> None:
    params = {"w": np.zeros(4, np.float32), "v": np.zeros(4, np.float32)}
    rows = run_updates(optax.sgd(JUMPY), JUMPY, params, 8)
    tol = _tol(rows)
    expected = [1.0, 1.0, 1.0, 0.1, 0.1, 0.5, 0.5, 0.5]  # StepLR(1, 3, 0.1), then 0.5 from 5
    for t, (before, after, m) in enumerate(rows):
        rec = applied_lr(before, after)
        np.testing.assert_allclose(rec, m["lr"], rtol=0, atol=tol, err_msg=f"step {t}")
        assert abs(float(m["lr"]) - expected[t]) < tol, (t, m["lr"])
        assert bool(m["finite"])
        assert float(m["grad_norm"]) == pytest.approx(np.sqrt(2) * np.linalg.norm(C), rel=1e-6)


def test_lr_metric_with_groups_is_the_default_groups() -> None:
    # multi_transform: "v" gets 0.1 x the schedule; the metric reports the default group ("w")
    params = {"w": np.zeros(4, np.float32), "v": np.zeros(4, np.float32)}
    tx = optax.multi_transform({"default": optax.sgd(JUMPY), "v": optax.sgd(JUMPY * 0.1)},
                               {"w": "default", "v": "v"})
    rows = run_updates(tx, JUMPY, params, 6)
    tol = _tol(rows)
    for before, after, m in rows:
        np.testing.assert_allclose(applied_lr(before, after), m["lr"], rtol=0, atol=tol)
        np.testing.assert_allclose(applied_lr(before, after, "v"), 0.1 * m["lr"], rtol=0,
                                   atol=tol)


def test_schedule_count_reads_the_optimizers_own_count() -> None:
    p = {"w": jnp.zeros(3)}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(S.constant(1e-3)))
    st = tx.init(p)
    for _ in range(3):
        _, st = tx.update({"w": jnp.ones(3)}, st, p)
    assert int(schedule_count(st)) == 3
    with pytest.raises(ValueError, match="no step count"):
        schedule_count(optax.sgd(0.1).init(p))  # a constant float rate keeps no count


def test_finite_metric_flags_a_non_finite_new_state() -> None:
    # the loss (before the update) is finite; the update overflows float32
    params = {"w": np.full(4, 3e38, np.float32), "v": np.zeros(4, np.float32)}
    rows = run_updates(optax.sgd(S.constant(1e38)), S.constant(1e38), params, 1,
                       loss_fn=lambda p, t, k: jnp.sum(p["w"] * 0.0 + C * p["v"]) + 1.0)
    (_, after, m) = rows[0]
    assert np.isfinite(m["loss"]) and not bool(m["finite"])
    assert not np.all(np.isfinite(after["params"]["v"]))


def f16_loss(params, tokens, key):
    """The linear loss computed in float16: its gradient C passes through float16, so the loss
    scale S overflows it (to inf) exactly when S * max|C| > 65504 (float16's largest)."""
    w = params["w"].astype(jnp.float16)
    return jnp.sum(w * C.astype(jnp.float16)).astype(jnp.float32) + 0.0 * jnp.sum(params["v"])


def test_float16_loss_scaling_follows_the_gradscaler_rule() -> None:
    # max|C| = 4: S = 2**15 and 2**14 overflow (131072, 65536 > 65504), 2**13 does not
    # (32768). Start at 2**15, growth after 2 finite steps.
    rule = LossScale(init=2.0**15, growth_interval=2)
    params = {"w": np.zeros(4, np.float32), "v": np.zeros(4, np.float32)}
    rows = run_updates(optax.sgd(JUMPY), JUMPY, params, 9, loss_fn=f16_loss, loss_scale=rule)
    # hand-worked from the rule: skip halves S and does not move the optimizer's count; two
    # finite steps in a row double S (and restart the run of finite steps).
    scale, good, count = 2.0**15, 0, 0
    for t, (before, after, m) in enumerate(rows):
        overflow = scale * 4 > 65504
        assert float(m["loss_scale"]) == scale, t
        assert bool(m["skipped"]) == overflow, t
        assert float(m["lr"]) == pytest.approx(float(JUMPY(count)), rel=1e-6), t
        if overflow:
            np.testing.assert_array_equal(after["params"]["w"], before["params"]["w"])
            assert int(schedule_count(after["opt_state"])) == count  # the schedule did not move
            scale, good = scale * 0.5, 0
        else:
            np.testing.assert_allclose(applied_lr(before, after), m["lr"], rtol=1e-6)
            count, good = count + 1, good + 1
            if good == 2:
                scale, good = scale * 2, 0
        assert float(after["loss_scale"]["scale"]) == scale
        assert int(after["loss_scale"]["good_steps"]) == good
        assert bool(m["finite"])
    assert 0 < count < len(rows)  # both branches were exercised


class UpdateJitParity(chex.TestCase):
    """:func:`update` compiled whole (``jax.jit``, what the engines run) and run op by op
    (no jit): the same state and metrics, on a real model (a 1-layer GPT-2, 2 micro-batches
    through ``lax.scan``, dropout keys)."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_update_is_the_same_with_and_without_jit(self) -> None:
        import models

        mcfg = models.get_config("gpt2", "tiny", n_layer=1, n_head=2, n_embd=32, block_size=16,
                                 dropout=0.1)
        params = jax.device_get(models.init_params(mcfg, jax.random.key(0)))
        sched = S.constant(0.5)
        tx = optax.sgd(sched)  # p' = p - lr g: a gradient error maps to a parameter error
        fn = functools.partial(update, tx=tx, schedule=sched, reduce=lambda x: x,
                               module=models.build(mcfg))
        step, ref = self.variant(fn), jax.jit(fn)  # (one compilation when both are jit)
        rng = np.random.default_rng(0)
        state = s_ref = init_state(params, tx)
        bound = 0.0
        for t in range(1):  # (op by op, one update of even this model takes a minute)
            batch = jnp.asarray(rng.integers(0, 256, (2, 2, 17)), jnp.int32)
            keys = jax.random.split(jax.random.key(t), 2)
            state, m = step(state, batch, keys)
            s_ref, m_ref = ref(s_ref, batch, keys)
            chex.assert_trees_all_equal_shapes_and_dtypes(state, s_ref)
            chex.assert_shape(state["step"], ())
            assert int(state["step"]) == t + 1
            # float32 sums of up to 256 terms (the vocabulary) in either order: <= 256 eps
            rtol = 256 * float(np.finfo(np.float32).eps)
            for k in ("loss", "grad_norm", "lr"):
                np.testing.assert_allclose(m[k], m_ref[k], rtol=rtol, err_msg=k)
            assert bool(m["finite"]) and float(m_ref["lr"]) == pytest.approx(float(sched(t)))
            # SGD: |p - p_ref| <= sum over steps of lr_t |g_t - g_ref_t| <= lr_t rtol |g_t|
            bound += float(m_ref["lr"]) * rtol * float(m_ref["grad_norm"])
            chex.assert_trees_all_close(state["params"], s_ref["params"], rtol=0,
                                        atol=bound + 1e-7)
