"""The train step: one engine-agnostic :func:`update` that every engine compiles.

State is a dict ``{"step", "params", "opt_state"}`` (plus ``"loss_scale"`` for float16, see
below): float32 master weights and optimizer state; the model computes in its own dtype.
:func:`update` takes the batch ``[grad_accum, batch_size, seq_len + 1]`` of one device (or the
global batch under ``jit``), accumulates the gradients of the micro-batches with ``lax.scan``
(the optimizer, hence the schedule, steps once per update), averages them with ``reduce`` (the
cross-device mean: ``lax.pmean`` under ``pmap``, the identity under ``jit``/GSPMD) and applies
one optimizer update. The engines (:mod:`train.engine.pmap`, :mod:`train.engine.mesh`,
:mod:`train.engine.population`) wrap it; :func:`model_loss` is the one loss they all use.

Metrics (identical on every device):

* ``loss``: mean over the global batch, before the update;
* ``grad_norm``: global norm of the averaged (unscaled) gradient, before clipping;
* ``lr``: the learning rate this update applied, ``schedule(count)`` with ``count`` read from
  the optimizer state itself (optax's step count before the update; with parameter groups,
  the ``default`` group's). The log prints this value, so it cannot drift from the optimizer;
* each scheduled hyperparameter (``weight_decay``, ``beta1``, ``beta2``, ``momentum``,
  ``clip_norm``, ``dropout``; ``hparams``): its value at the same count, the value the update
  applied (the optimizer reads the same table at its own, equal, count);
* ``finite``: whether the NEW state (every parameter and optimizer-state leaf) is finite. The
  loop never saves a state whose ``finite`` is false.

float16 uses dynamic loss scaling (PyTorch ``GradScaler``'s rule, :class:`LossScale`): the
loss is multiplied by ``S`` before differentiation and the gradients divided by ``S``; if any
gradient is not finite the update is skipped (params and optimizer state unchanged, so
optax's count, hence the schedule, does not advance) and ``S`` is multiplied by ``backoff``;
after ``growth_interval`` consecutive finite steps ``S`` is multiplied by ``growth``. The scale
lives in the state (``state["loss_scale"] = {"scale", "good_steps"}``), so it is checkpointed
and a resume is exact. Metrics gain ``loss_scale`` (the ``S`` of this step) and ``skipped``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

import models

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = ["AXIS", "Documents", "LossScale", "Placed", "checked", "document_segments",
           "dropout_keys", "init_state", "loss_scale_rule", "model_loss", "schedule_count",
           "tree_all_finite", "update"]

AXIS = "batch"

#: ``loss_fn(params, tokens, dropout_key_or_None) -> scalar loss``
LossFn = Callable[[Any, jax.Array, "jax.Array | None"], jax.Array]


@dataclasses.dataclass(frozen=True)
class LossScale:
    """Dynamic loss scaling for float16 (the defaults are ``torch.amp.GradScaler``'s)."""

    init: float = 2.0**16
    growth_interval: int = 2000
    growth: float = 2.0
    backoff: float = 0.5

    def init_state(self) -> dict[str, np.ndarray]:
        """The scaler's part of the train state (host arrays)."""
        return {"scale": np.asarray(self.init, np.float32), "good_steps": np.zeros((), np.int32)}


def loss_scale_rule(cfg: TrainConfig) -> LossScale | None:
    """The dynamic loss scaling rule of a config: ``--dtype=float16`` only (None otherwise)."""
    if cfg.dtype != "float16":
        return None
    return LossScale(init=float(cfg.loss_scale_init),
                     growth_interval=int(cfg.loss_scale_growth_interval))


#: ``--document-mask``: the (BOS id, EOS id) that delimit documents in a packed row (None:
#: that token is not placed); hashable, part of an engine's compile key
Documents = tuple[int | None, int | None]


def document_segments(x: jax.Array, documents: Documents) -> jax.Array:
    """Segment ids int32 [B, T] of packed inputs ``x`` [B, T]: a document starts at a BOS and
    right after an EOS (``train.data.segment_ids``, traceable)."""
    bos, eos = documents
    start = jnp.zeros(x.shape, bool)
    if bos is not None:
        start = start | (x == bos)
    if eos is not None:
        start = start.at[:, 1:].set(start[:, 1:] | (x[:, :-1] == eos))
    start = start.at[:, 0].set(False)
    return jnp.cumsum(start, axis=1, dtype=jnp.int32)


def model_loss(module: Any, dropout_rate: Any = None, vocab_parallel: bool = False,
               documents: Documents | None = None) -> LossFn:
    """The next-token loss of a Flax LM ``module`` on ``tokens`` [B, T + 1] (dropout when a
    key is given; ``dropout_rate``, possibly traced, overrides the model config's rate).
    ``vocab_parallel``: pick the target logit by a masked sum over the vocabulary
    (:func:`models.vocab_parallel_xent`, the same value) so logits sharded on the vocabulary
    are never gathered (the mesh engine). ``documents``: attention within documents only
    (:func:`document_segments`; the models restart positions per document)."""
    kw = {} if dropout_rate is None else {"dropout_rate": dropout_rate}
    xent = models.vocab_parallel_xent if vocab_parallel else models.loss_fn

    def loss(params: Any, tokens: jax.Array, rng: jax.Array | None) -> jax.Array:
        x, y = tokens[:, :-1], tokens[:, 1:]
        seg = {} if documents is None else {"segment_ids": document_segments(x, documents)}
        if rng is None:
            logits = module.apply({"params": params}, x, deterministic=True, **seg)
        else:
            logits = module.apply({"params": params}, x, deterministic=False,
                                  rngs={"dropout": rng}, **kw, **seg)
        return xent(logits, y)

    return loss


def dropout_keys(seed: Any, step: jax.Array, n: int) -> jax.Array:
    """The ``n`` micro-batches' dropout keys of update ``step`` on this device (under ``pmap``
    over :data:`AXIS`): ``key(seed)`` folded with the step and the device index, split ``n``
    ways. ``seed`` may be traced (a population's members)."""
    key = jax.random.fold_in(jax.random.key(seed), step)
    return jax.random.split(jax.random.fold_in(key, jax.lax.axis_index(AXIS)), n)


def _is_state(node: Any, name: str) -> bool:
    return type(node).__name__ == name and hasattr(node, "_fields")


def schedule_count(opt_state: Any) -> jax.Array:
    """The step count the optimizer feeds its learning-rate schedule (before the update).

    Found in the optimizer state itself: the count of the first ``ScaleByScheduleState`` (what
    ``optax.scale_by_learning_rate(schedule)`` evaluates the schedule at); within
    ``optax.multi_transform`` the ``default`` group's. Without one, the first ``count`` field
    (e.g. ``ScaleByAdamState``). Raises ``ValueError`` if the state has no step count."""

    def find(node: Any, want: str | None) -> Any:
        if _is_state(node, "MultiTransformState"):
            inner = node.inner_states
            order = (["default"] if "default" in inner else []) + sorted(
                k for k in inner if k != "default")
            for k in order:
                r = find(inner[k], want)
                if r is not None:
                    return r
            return None
        if want is None and hasattr(node, "_fields") and "count" in node._fields:
            return node.count
        if want is not None and _is_state(node, want):
            return node.count
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list | tuple):
            children = list(node)
        else:
            return None
        for c in children:
            r = find(c, want)
            if r is not None:
                return r
        return None

    count = find(opt_state, "ScaleByScheduleState")
    if count is None:
        count = find(opt_state, None)
    if count is None:
        raise ValueError("the optimizer state has no step count (optax `count`): cannot tell "
                         "which learning rate an update applies")
    return count


def tree_all_finite(tree: Any) -> jax.Array:
    """Scalar bool: every inexact (floating) leaf of ``tree`` is finite (one global reduction)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    if not leaves:
        return jnp.array(True)
    ok = jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]).astype(jnp.float32)
    # the count of finite leaves as a dot, not all(stack(...)): XLA rewrites that into a chain
    # of ands which, where the result feeds many ops (a population's per-leaf selects,
    # train/run/sweep.py), it fuses into each of them: the step's compile time tripled
    return jnp.dot(ok, jnp.ones_like(ok)) == len(leaves)


def init_state(params: Any, tx: optax.GradientTransformation,
               loss_scale: LossScale | None = None) -> dict[str, Any]:
    """The initial train state on the host: step 0, ``params``, ``tx.init(params)`` and, for
    float16 (``loss_scale`` given), the loss scaler's state."""
    state = {"step": np.zeros((), np.int32), "params": params,
             "opt_state": jax.device_get(tx.init(params))}
    if loss_scale is not None:
        state["loss_scale"] = loss_scale.init_state()
    return state


def update(state: dict, batch: jax.Array, keys: jax.Array | None, *,
           tx: optax.GradientTransformation, reduce: Callable[[Any], Any],
           schedule: Callable[[Any], Any] | None = None, module: Any = None,
           loss_fn: LossFn | None = None, loss_scale: LossScale | None = None,
           group_schedules: Mapping[str, Callable[[Any], Any]] | None = None,
           documents: Documents | None = None,
           hparams: dict[str, Callable[[Any], Any]] | None = None,
           ) -> tuple[dict, dict]:
    """One optimizer update: ``(state, batch, keys) -> (new_state, metrics)`` (traceable).

    ``batch``: int tokens ``[grad_accum, B, T + 1]``; ``keys``: ``[grad_accum]`` dropout keys or
    None; ``reduce``: the cross-device mean of a pytree (identity on one device or under GSPMD);
    ``schedule``: the default group's learning-rate schedule (for the ``lr`` metric; omitted:
    no ``lr`` metric); ``group_schedules``: ``--group`` s' schedules (metrics
    ``lr_<pattern>``, each read at the same count); the loss is ``loss_fn`` or, given
    ``module``, :func:`model_loss` (with ``hparams["dropout"]``'s rate at this update where
    scheduled, and ``documents``' mask); ``hparams``: the scheduled hyperparameters the
    optimizer ``tx`` applies (``step -> value``), logged.
    Loss scaling is on when ``state`` has a ``"loss_scale"`` entry (``loss_scale`` gives its
    growth/backoff rule; default :class:`LossScale`); ``documents``: :func:`model_loss`'s
    document mask (with ``module``). See the module docstring for metrics."""
    if (module is None) == (loss_fn is None):
        raise ValueError("update: pass exactly one of module= or loss_fn=")
    hparams = hparams or {}
    group_schedules = group_schedules or {}
    count = (schedule_count(state["opt_state"])
             if (schedule is not None or hparams or group_schedules) else None)
    if loss_fn is not None:
        lf = loss_fn
    elif "dropout" in hparams:
        lf = model_loss(module, hparams["dropout"](count), documents=documents)
    else:
        lf = model_loss(module, documents=documents)
    params = state["params"]
    accum = batch.shape[0]
    scaled = "loss_scale" in state
    rule = loss_scale or LossScale()
    scale = state["loss_scale"]["scale"] if scaled else None

    def objective(p: Any, tokens: jax.Array, k: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        loss = lf(p, tokens, k)
        return (loss * scale if scaled else loss), loss

    grad_fn = jax.value_and_grad(objective, has_aux=True)
    if accum == 1:
        (_, loss), grads = grad_fn(params, batch[0], None if keys is None else keys[0])
    else:
        def micro(carry: Any, xs: Any) -> tuple[Any, jax.Array]:
            tokens, k = xs
            (_, loss), g = grad_fn(params, tokens, None if keys is None else k)
            return jax.tree.map(jnp.add, carry, g), loss

        zeros = jax.tree.map(jnp.zeros_like, params)
        xs = (batch, keys if keys is not None else jnp.zeros((accum,)))
        grads, losses = jax.lax.scan(micro, zeros, xs)
        grads = jax.tree.map(lambda g: g / accum, grads)
        loss = jnp.mean(losses)
    grads, loss = reduce((grads, loss))
    if scaled:
        grads = jax.tree.map(lambda g: g / scale, grads)
    gnorm = optax.tree.norm(grads)
    metrics: dict[str, jax.Array] = {"loss": loss, "grad_norm": gnorm}
    if schedule is not None:
        metrics["lr"] = jnp.asarray(schedule(count), jnp.float32)
    for name, g in group_schedules.items():
        metrics[f"lr_{name}"] = jnp.asarray(g(count), jnp.float32)
    for name, s in hparams.items():
        metrics[name] = jnp.asarray(s(count), jnp.float32)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    new = {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}
    if scaled:
        ok = tree_all_finite(grads)
        keep = lambda n, o: jnp.where(ok, n, o)  # noqa: E731
        new["params"] = jax.tree.map(keep, new_params, params)
        new["opt_state"] = jax.tree.map(keep, opt_state, state["opt_state"])
        good = jnp.where(ok, state["loss_scale"]["good_steps"] + 1, 0)
        grow = good >= rule.growth_interval
        new_scale = jnp.where(ok, jnp.where(grow, scale * rule.growth, scale),
                              scale * rule.backoff)
        new["loss_scale"] = {"scale": new_scale.astype(jnp.float32),
                             "good_steps": jnp.where(grow, 0, good).astype(jnp.int32)}
        metrics["loss_scale"] = scale
        metrics["skipped"] = jnp.logical_not(ok)
    metrics["finite"] = tree_all_finite((new["params"], new["opt_state"]))
    return new, metrics


@dataclasses.dataclass(frozen=True)
class Placed:
    """A batch already on the devices in its engine's layout (``Engine.place_batch``, called
    by the loop's prefetch thread ahead of the step); ``shape``: the host batch's."""

    array: Any
    shape: tuple[int, ...]


def checked(train: Callable[[Any, Any], Any], evaluate: Callable[[Any, Any], Any], *,
            place: Callable[[np.ndarray], Any], replicas: int, max_len: int,
            step_shape: tuple[int, ...],
            ) -> tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any],
                       Callable[[Any], Placed]]:
    """An engine's ``train(state, batch)``, ``eval(params, batch)`` and
    ``place_batch(host_batch)`` from its compiled steps (which take placed batches) and its
    ``place`` (host batch -> device array), the host batch checked (chex) outside the compiled
    step, once per batch shape: int tokens ``[replicas, grad_accum, B, T + 1]`` with
    ``T <= max_len`` (the model's context); the state's ``step`` is an int of shape
    ``step_shape`` (``()`` on the mesh, one per local device under pmap). ``train`` and
    ``eval`` take a host batch or a :class:`Placed` one (checked when placed). A wrong batch
    fails here, naming the shapes, instead of deep inside a trace (or, worse, compiling a
    second step for it)."""
    seen: set[tuple] = set()

    def check_batch(batch: Any) -> None:
        what = "the engine's batch [replicas, grad_accum, B, T+1]"
        chex.assert_rank(batch, 4, custom_message=what)
        chex.assert_type(batch, int, custom_message=what)
        chex.assert_shape(batch, (replicas, None, None, None), custom_message=what)
        for axis in (1, 2):  # at least one micro-batch of one row
            chex.assert_axis_dimension_gteq(batch, axis, 1, custom_message=what)
        chex.assert_axis_dimension_lteq(batch, 3, max_len + 1, custom_message=what)

    def place_(batch: Any) -> Placed:
        if isinstance(batch, Placed):
            return batch
        key = ("batch", np.shape(batch))
        if key not in seen:
            check_batch(batch)
            seen.add(key)
        return Placed(place(batch), tuple(np.shape(batch)))

    def train_(state: Any, batch: Any) -> Any:
        batch = place_(batch)
        key = ("state", batch.shape)
        if key not in seen:
            msg = "the train state's step"
            chex.assert_shape(state["step"], step_shape, custom_message=msg)
            chex.assert_type(state["step"], int, custom_message=msg)
            seen.add(key)
        return train(state, batch.array)

    def eval_(params: Any, batch: Any) -> Any:
        return evaluate(params, place_(batch).array)

    return train_, eval_, place_
