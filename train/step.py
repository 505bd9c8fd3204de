"""The data-parallel train and eval steps (``jax.pmap`` over the local devices).

State is a dict ``{"step", "params", "opt_state"}`` replicated on every device (float32 master
weights and optimizer state; the model computes in its own dtype). A step takes the per-device
batch ``[grad_accum, batch_size, seq_len + 1]``, accumulates the gradients of the micro-batches
with ``lax.scan`` (the optimizer, hence the schedule, steps once per update), averages them across
all devices of all processes with ``lax.pmean`` and applies one optimizer update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import models

__all__ = ["AXIS", "make_eval_step", "make_train_step"]

AXIS = "batch"


def _loss(module: Any, params: Any, tokens: jax.Array, rng: jax.Array | None) -> jax.Array:
    x, y = tokens[:, :-1], tokens[:, 1:]
    if rng is None:
        logits = module.apply({"params": params}, x, deterministic=True)
    else:
        logits = module.apply({"params": params}, x, deterministic=False, rngs={"dropout": rng})
    return models.loss_fn(logits, y)


def make_train_step(model_cfg: Any, tx: optax.GradientTransformation, seed: int,
                    devices: list | None = None) -> Callable[[Any, Any], tuple[Any, dict]]:
    """A pmapped ``(state, batch) -> (state, metrics)``; ``state`` is donated.

    ``metrics``: ``loss`` (mean over the global batch, before the update) and ``grad_norm``
    (global norm of the averaged gradient, before clipping), identical on every device."""
    module = models.build(model_cfg)
    use_dropout = getattr(model_cfg, "dropout", 0.0) > 0

    def step(state: dict, batch: jax.Array) -> tuple[dict, dict]:
        params = state["params"]
        accum = batch.shape[0]
        if use_dropout:
            key = jax.random.fold_in(jax.random.key(seed), state["step"])
            key = jax.random.fold_in(key, jax.lax.axis_index(AXIS))
            keys = jax.random.split(key, accum)
        else:
            keys = None
        grad_fn = jax.value_and_grad(lambda p, t, k: _loss(module, p, t, k))

        if accum == 1:
            loss, grads = grad_fn(params, batch[0], None if keys is None else keys[0])
        else:
            def micro(carry: Any, xs: Any) -> tuple[Any, jax.Array]:
                tokens, k = xs
                loss, g = grad_fn(params, tokens, None if keys is None else k)
                return jax.tree.map(jnp.add, carry, g), loss

            zeros = jax.tree.map(jnp.zeros_like, params)
            xs = (batch, keys if keys is not None else jnp.zeros((accum,)))
            grads, losses = jax.lax.scan(micro, zeros, xs)
            grads = jax.tree.map(lambda g: g / accum, grads)
            loss = jnp.mean(losses)
        grads = jax.lax.pmean(grads, AXIS)
        loss = jax.lax.pmean(loss, AXIS)
        gnorm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new = {"step": state["step"] + 1, "params": optax.apply_updates(params, updates),
               "opt_state": opt_state}
        return new, {"loss": loss, "grad_norm": gnorm}

    return jax.pmap(step, axis_name=AXIS, donate_argnums=(0,), devices=devices)


def make_eval_step(model_cfg: Any, devices: list | None = None) -> Callable[[Any, Any], jax.Array]:
    """A pmapped ``(params, batch) -> mean loss`` over the global batch (all micro-batches)."""
    module = models.build(model_cfg)

    def step(params: Any, batch: jax.Array) -> jax.Array:
        flat = batch.reshape((-1, batch.shape[-1]))
        return jax.lax.pmean(_loss(module, params, flat, None), AXIS)

    return jax.pmap(step, axis_name=AXIS, devices=devices)
