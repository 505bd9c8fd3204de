"""Activation recompute (``remat*`` config fields): the same parameters, the same arithmetic.

Recompute changes what is kept for the backward pass, not what is computed: the forward loss,
the parameter tree and every float32 gradient are bit-identical (more batch sizes in
tests/train/test_parallel.py; how: docs/parallelism.md, "Recompute"). The memory saving is
measured from the compiled step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models.layers import remat_segments

VARIANTS = {
    "gpt2": [dict(remat="full", remat_num_layers=3),
             dict(remat="full", remat_method="block", remat_num_layers=1, remat_chunks=2)],
    "llama3": [dict(remat="full"), dict(remat="selective")],
}


def _loss_grad(cfg, params, tokens):
    mod = models.build(cfg)
    f = lambda p: models.loss_fn(mod.apply({"params": p}, tokens[:, :-1]), tokens[:, 1:])  # noqa: E731
    return jax.jit(jax.value_and_grad(f))(params)


@pytest.mark.parametrize("model", ["gpt2", "llama3"])
def test_recompute_same_loss_same_tree_same_gradients(model) -> None:
    base = models.get_config(model, "tiny", n_layer=4)
    params = models.init_params(base, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 17), 0, base.vocab_size)
    l0, g0 = _loss_grad(base, params, tokens)
    for kw in VARIANTS[model]:
        cfg = models.get_config(model, "tiny", n_layer=4, **kw)
        shapes = jax.eval_shape(lambda c=cfg: models.init_params(c, jax.random.key(0)))
        assert jax.tree.structure(shapes) == jax.tree.structure(params), kw
        l, g = _loss_grad(cfg, params, tokens)
        assert float(l) == float(l0), kw  # bit-identical forward
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g0)):
            np.testing.assert_array_equal(a, b, err_msg=str(kw))  # bit-identical backward


def test_segments_follow_megatron() -> None:
    """uniform: groups of K (the last shorter); block: the first K layers of each chunk one by
    one, the rest plain; selective: every layer; none: one plain segment."""
    assert remat_segments(8) == [(0, 8, False)]
    assert remat_segments(8, "full", "uniform", 3) == [(0, 3, True), (3, 6, True), (6, 8, True)]
    assert remat_segments(8, "full", "block", 2, chunks=2) == [
        (0, 1, True), (1, 2, True), (2, 4, False), (4, 5, True), (5, 6, True), (6, 8, False)]
    assert remat_segments(3, "selective") == [(0, 1, True), (1, 2, True), (2, 3, True)]
    covered = [i for lo, hi, _ in remat_segments(12, "full", "block", 1, 4) for i in range(lo, hi)]
    assert covered == list(range(12))


@pytest.mark.parametrize("kw,match", [
    (dict(remat="some"), r"GPT2Config.remat='some' is invalid"),
    (dict(remat="full", remat_method="blocks"), r"remat_method='blocks' is invalid"),
    (dict(remat="full", remat_num_layers=5), r"remat_num_layers=5 is invalid: .*n_layer \(4\)"),
    (dict(remat="full", remat_method="block", remat_chunks=2, remat_num_layers=3),
     r"remat_num_layers=3 is invalid: .*per model chunk \(2\)"),
    (dict(remat_chunks=3), r"remat_chunks=3 is invalid: remat_chunks must divide n_layer=4"),
])
def test_bad_recompute_settings_rejected(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        models.get_config("gpt2", "tiny", n_layer=4, **kw)


def residual_bytes(cfg, batch: int = 8) -> int:
    """Bytes the forward pass keeps for the backward pass: the leaves of ``jax.vjp``'s
    closure (the residuals), less the parameters themselves."""
    params = models.init_params(cfg, jax.random.key(0))
    t = jnp.zeros((batch, cfg.block_size + 1), jnp.int32)
    mod = models.build(cfg)
    _, vjp = jax.vjp(lambda p: models.loss_fn(mod.apply({"params": p}, t[:, :-1]), t[:, 1:]),
                     params)
    ids = {id(x) for x in jax.tree.leaves(params)}
    return sum(x.nbytes for x in jax.tree.leaves(vjp) if id(x) not in ids)


def test_recompute_lowers_activation_memory() -> None:
    """The activations kept for the backward pass shrink: full (uniform 1 or 2) < selective <
    block (2 of 4 layers recomputed) < none; full keeps little more than the layer inputs."""
    kw = dict(n_layer=4, block_size=64)
    b = {name: residual_bytes(models.get_config("gpt2", "tiny", **kw, **extra))
         for name, extra in [("none", {}), ("selective", dict(remat="selective")),
                             ("full", dict(remat="full")),
                             ("full2", dict(remat="full", remat_num_layers=2)),
                             ("block", dict(remat="full", remat_method="block",
                                            remat_num_layers=2))]}
    assert b["full2"] < b["full"] < b["selective"] < b["block"] < b["none"], b
    layer_inputs = 4 * 8 * 64 * 64 * 4  # [B, T, C] float32 per layer
    assert b["full"] < layer_inputs + b["none"] / 4, b
