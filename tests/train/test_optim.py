"""The optimizer: decay on matrices only, per-group lr multipliers, the parameter table."""

from __future__ import annotations

import jax
import numpy as np
import optax

import models
from train.config import TrainConfig
from train.lr import build_schedule
from train.optim import make_optimizer, param_table


def _params() -> dict:
    cfg = models.get_config("gpt2", "tiny", n_layer=1, block_size=16)
    return jax.device_get(models.init_params(cfg, jax.random.key(0)))


def test_weight_decay_on_matrices_only_and_groups() -> None:
    params = _params()
    cfg = TrainConfig.from_dict(dict(model_size="tiny", lr=0.1, weight_decay=0.5,
                                     lr_scheduler="constant", warmup_steps=0,
                                     lr_mults={"wpe": 0.0}))
    tx = make_optimizer(cfg, build_schedule(cfg), params)
    zeros = jax.tree.map(np.zeros_like, params)
    upd, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    new = jax.device_get(optax.apply_updates(params, upd))
    # zero gradients: only decay moves parameters, and only 2-D kernels decay
    k = params["h_0"]["attn"]["c_attn"]["kernel"]
    np.testing.assert_allclose(new["h_0"]["attn"]["c_attn"]["kernel"], k * (1 - 0.1 * 0.5),
                               rtol=1e-6)
    for path in (("h_0", "attn", "c_attn", "bias"), ("ln_f", "scale"), ("wte", "embedding")):
        a, b = params, new
        for p in path:
            a, b = a[p], b[p]
        np.testing.assert_array_equal(a, b)
    # gradient step: the wpe group has multiplier 0 and does not move
    ones = jax.tree.map(np.ones_like, params)
    upd, _ = jax.jit(tx.update)(ones, tx.init(params), params)
    new = jax.device_get(optax.apply_updates(params, upd))
    np.testing.assert_array_equal(new["wpe"]["embedding"], params["wpe"]["embedding"])
    assert not np.array_equal(new["wte"]["embedding"], params["wte"]["embedding"])


def test_param_table() -> None:
    t = param_table(_params(), {"wte": 0.1})
    assert "wte/embedding" in t and "group 'wte': lr x 0.1" in t
    line = next(x for x in t.splitlines() if x.startswith("h_0/attn/c_attn/kernel"))
    assert " yes " in line
    assert "total:" in t
