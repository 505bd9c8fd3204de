"""Schedules are pytrees: vmap over hyperparameters, no recompilation, grad, optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import schedules as S
from tests.schedules.catalogue import ALL


def test_leaves_are_the_hyperparameters():
    s = S.join(S.linear(0.0, 1.0, 100), S.cosine(1.0, 0.1, 900), at=[100])
    leaves, treedef = jax.tree_util.tree_flatten(s)
    assert leaves == [0.0, 1.0, 100, 1.0, 0.1, 900, 1.0, 100]
    assert jax.tree_util.tree_unflatten(treedef, leaves) == s
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(s)[0]]
    assert paths[0] == ".pieces[0].init" and paths[-1] == ".at[0]"


@pytest.mark.parametrize("name", sorted(ALL))
def test_tree_map_round_trip_keeps_values(name):
    s = ALL[name]
    t = jax.tree_util.tree_map(lambda x: x, s)
    assert type(t) is type(s)
    np.testing.assert_array_equal(t(np.arange(300)), s(np.arange(300)))


def test_vmap_64_warmup_lengths_in_one_jitted_call():
    warmups = jnp.arange(1, 65)

    @jax.jit
    def curves(w):
        return jax.vmap(lambda wi: S.warmup(S.cosine(1.0, 0.0, 1000), wi)(jnp.arange(1100)))(w)

    got = np.asarray(curves(warmups))
    assert got.shape == (64, 1100)
    for i in [0, 17, 63]:
        ref = S.warmup(S.cosine(1.0, 0.0, 1000), i + 1)(np.arange(1100))
        np.testing.assert_allclose(got[i], ref, rtol=2e-5, atol=2e-6)


def test_vmap_over_a_stacked_batch_of_schedules():
    batch = [S.cosine(1.0, 0.0, int(n)) for n in (100, 200, 300)]
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *batch)
    got = jax.vmap(lambda s: s(jnp.arange(400)))(stacked)
    for i, s in enumerate(batch):
        np.testing.assert_allclose(np.asarray(got[i]), s(np.arange(400)), rtol=2e-5, atol=2e-6)


def test_jit_does_not_recompile_when_hyperparameters_change():
    traces = []

    @jax.jit
    def lr_at(sched, t):
        traces.append(1)
        return sched(t)

    def make(w, peak, decay):
        return S.join(S.linear(0.0, peak, w), S.cosine(peak, 0.1 * peak, decay), at=[w]) * S.step(
            1.0, 100, 0.5
        )

    values = []
    for w, peak, decay in [(100, 1.0, 900), (10, 3e-4, 50), (1, 0.5, 7), (500, 2.0, 10_000)]:
        values.append(float(lr_at(make(w, peak, decay), 321)))
        assert abs(values[-1] - make(w, peak, decay)(321)) <= 1e-5 * abs(values[-1]) + 1e-12
    assert len(traces) == 1
    # an int-valued float hyperparameter keeps its type, so it does not retrace either
    lr_at(make(100, 1, 900), 3)
    assert len(traces) == 1
    # a structural change (another mode) does retrace: a different treedef
    lr_at(S.cyclic(0.1, 1.0, 10, mode="triangular2"), 3)
    lr_at(S.cyclic(0.1, 1.0, 10, mode="triangular"), 3)
    assert len(traces) == 3


def test_grad_with_respect_to_hyperparameters():
    # d/d peak of the cosine value at t, and d/d end
    t = 250.0

    def value(peak, end):
        return S.cosine(peak, end, 1000)(jnp.float32(t))

    g_peak, g_end = jax.grad(value, argnums=(0, 1))(1.0, 0.1)
    c = 0.5 * (1 + np.cos(np.pi * t / 1000))
    assert abs(float(g_peak) - c) < 1e-6 and abs(float(g_end) - (1 - c)) < 1e-6
    # through a whole schedule pytree: only float leaves are differentiable
    s = S.warmup(S.cosine(2.0, 0.2, 900), 100)
    grads = jax.grad(lambda sc: sc(jnp.float32(50.0)), allow_int=True)(s)
    assert abs(float(grads.schedule.init) - 0.5) < 1e-6  # ramp at 50/100 towards init


def test_plugs_into_optax_as_learning_rate():
    s = S.join(S.linear(0.0, 0.1, 10), S.step(0.1, 5, 0.5), at=[10])
    opt = optax.sgd(learning_rate=s)
    params = {"w": jnp.zeros(3)}
    state = opt.init(params)
    grads = {"w": jnp.ones(3)}
    step = jax.jit(opt.update)
    for t in range(30):
        upd, state = step(grads, state, params)
        np.testing.assert_allclose(np.asarray(upd["w"]), -s(t) * np.ones(3), rtol=1e-6, atol=1e-9)


def test_inject_hyperparams_sees_the_schedule():
    s = S.cosine(1e-3, 1e-5, 50)
    opt = optax.inject_hyperparams(optax.adamw)(learning_rate=s)
    state = opt.init({"w": jnp.zeros(2)})
    for t in range(5):
        _, state = opt.update({"w": jnp.ones(2)}, state, {"w": jnp.zeros(2)})
        assert abs(float(state.hyperparams["learning_rate"]) - s(t)) < 1e-9
