"""The mesh engine: ``jax.jit`` over a ``data`` x ``tensor`` device mesh (GSPMD).

The same model, optimizer, schedule, data and checkpoints as the pmap engine
(:mod:`train.engine.pmap`); only the layout differs. The train state is one global array per
leaf, laid out by :mod:`train.parallel.shardings` (TP, SP, ZeRO 1/2/3); the compiler inserts
the collectives.

Data: ``--batch-size`` is per data-parallel replica. The :class:`~train.data.Batcher` is built
with ``local_devices`` = this process's data-parallel replicas, so the global batch of step t
is the pmap engine's with as many devices as replicas: DP x grad-accum x batch-size rows, the
rows of replica r first (same order). It becomes one ``[grad_accum, DP * batch_size, T + 1]``
array sharded on ``data``.

The step body (:func:`make_train_step`) is loss + accumulation + optimizer update, returning
metrics ``loss`` (mean over the global batch), ``grad_norm`` (before clipping) and ``lr`` (the
schedule at the optimizer's count before the update), each of shape ``[1]`` like one replica's
pmapped metrics.

Checkpoints: the engine hands orbax its sharded global arrays (:meth:`MeshEngine.checkpoint_view`;
every process writes its own shards) and restores through abstract target arrays with their
shardings (:meth:`MeshEngine.restore_target`, :meth:`MeshEngine.from_checkpoint`): each device
reads its own shard, any layout to any other, nothing gathered on one host. Under pipeline
parallelism the state holds the layers stacked and sharded over ``pipe``
(:func:`train.parallel.stack.stack_tree`); the checkpoint keeps the per-layer tree.

Dropout draws its masks from ``fold_in(key(seed), step)`` over the global batch
(partitionable threefry: the same masks whatever the layout), not per device as pmap does: with
dropout, mesh layouts agree with each other, not with pmap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import models

from .._paths import key_names, layer_of, layer_prefix
from ..optim import make_optimizer
from ..parallel.layout import Layout
from ..parallel.pipeline import pipeline_loss
from ..parallel.shardings import (
    DATA,
    PIPE,
    TENSOR,
    fmt_bytes,
    logical_rules,
    named,
    shard_bytes,
    state_specs,
)
from ..parallel.stack import stack_tree, unstack_tree
from ..schedule.build import applied_group_schedules, applied_schedule
from ..schedule.hparams import applied_hparams, build_hparams
from .base import compile_key
from .step import (
    Documents,
    LossScale,
    checked,
    document_segments,
    loss_scale_rule,
    model_loss,
    schedule_count,
    update,
)

__all__ = ["MeshEngine", "build", "describe_mesh", "make_mesh", "mesh_engine"]


def make_mesh(layout: Layout, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``(data, tensor)`` mesh: devices ordered by (process, id), tensor innermost (so TP
    groups are within a process and data replicas of a process are contiguous)."""
    devs = sorted(devices or jax.devices(), key=lambda d: (d.process_index, d.id))
    devs = devs[: layout.size]
    if layout.pipe > 1:  # (data, pipe, tensor): a stage's TP group stays together
        return Mesh(np.array(devs, dtype=object).reshape(layout.data, layout.pipe,
                                                         layout.tensor), (DATA, PIPE, TENSOR))
    return Mesh(np.array(devs, dtype=object).reshape(layout.data, layout.tensor), (DATA, TENSOR))


def describe_mesh(mesh: Mesh) -> str:
    ids = mesh.devices.reshape(-1, mesh.devices.shape[-1])  # (data[, pipe]) rows
    rows = ", ".join("[" + " ".join(str(d.id) for d in row) + "]" for row in ids)
    axes = " x ".join(f"{a}={n}" for a, n in mesh.shape.items())
    return f"mesh: {axes}; devices (data rows of tensor groups): {rows}"


@dataclass
class MeshEngine:
    """Everything the loop needs from the mesh engine: the layout, the mesh, the shardings of
    the state, and the jitted steps (taking host batches as the Batcher makes them)."""

    layout: Layout
    mesh: Mesh
    tx: optax.GradientTransformation
    state_shardings: Any
    grad_shardings: Any
    train: Callable[[Any, np.ndarray], tuple[Any, dict]]
    eval: Callable[[Any, np.ndarray], jax.Array]
    log: Callable[[str], None] | None = None
    #: host batch -> :class:`~train.engine.step.Placed` (``train`` and ``eval`` take either)
    place_batch: Callable[[Any], Any] | None = None
    train_jit: Any = None  # the jitted step on global batches (trace under ``rules`` + mesh)
    rules: Any = None
    #: pipeline: (layer key prefix, n_layer) when the state holds the layers stacked over
    #: ``pipe`` (``{prefix}*``, :func:`train.parallel.stack.stack_tree`); None otherwise
    stacked: tuple[str, int] | None = None
    #: the checkpoint's (per-layer) state: a ``NamedSharding`` per leaf (pipeline: each
    #: layer's on its stage's devices), set by :meth:`checkpoint_shardings`
    _ckpt_sh: Any = None

    # -- host <-> mesh -------------------------------------------------------------------------
    def to_engine(self, tree: Any) -> Any:
        """The model's per-layer state -> the engine's (layers stacked over ``pipe`` under
        pipeline parallelism; unchanged otherwise). NumPy or abstract arrays."""
        if self.stacked is None:
            return tree
        prefix, n_layer = self.stacked
        lay = self.layout
        if all(isinstance(x, np.ndarray | np.generic) for x in jax.tree.leaves(tree)):
            return stack_tree(tree, prefix, n_layer, lay.pipe, lay.virtual)
        return jax.eval_shape(lambda t: stack_tree(t, prefix, n_layer, lay.pipe, lay.virtual),
                              tree)

    def abstract(self, tree: Any) -> Any:
        """``jax.ShapeDtypeStruct`` s of the engine's state (with its shardings) for the
        per-layer state ``tree`` (arrays or shapes): what the compiled step takes."""
        shapes = self.to_engine(jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree))
        return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                            shapes, self.state_shardings)

    def put_state(self, host: Any) -> Any:
        """Host (NumPy) per-layer state -> global arrays laid out per ``state_shardings``. A
        state of ``jax.Array`` s already in the engine's form (a restored checkpoint, see
        :meth:`from_checkpoint`) is placed as it is (no copy when already laid out)."""
        def put(x: Any, sh: NamedSharding) -> jax.Array:
            if isinstance(x, jax.Array):
                return x if x.sharding == sh else jax.device_put(x, sh)
            a = np.asarray(x)
            return jax.make_array_from_callback(a.shape, sh, lambda idx: np.asarray(a[idx]))

        leaves = jax.tree.leaves(host)
        if not (leaves and all(isinstance(x, jax.Array) for x in leaves)):
            host = self.to_engine(jax.tree.map(np.asarray, host))
        state = jax.tree.map(put, host, self.state_shardings)
        if self.log is not None:
            b = self.bytes_per_device(state)
            self.log(f"per-device bytes ({self.layout.describe()}, measured from "
                     "addressable_shards): " + ", ".join(f"{k} {fmt_bytes(v)}"
                                                       for k, v in b.items()))
        return state

    def get_state(self, state: Any) -> Any:
        """Global arrays -> full host NumPy copies of the per-layer state (gathered across
        processes if needed). For inspection and sampling; checkpoints use
        :meth:`checkpoint_view` (no gather)."""
        def get(x: jax.Array) -> np.ndarray:
            if x.is_fully_addressable:
                return np.asarray(jax.device_get(x))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))

        host = jax.tree.map(get, state)
        return host if self.stacked is None else unstack_tree(host, *self.stacked)

    # -- checkpoints: the per-layer global arrays, never gathered ---------------------------------
    def checkpoint_shardings(self, tree: Any) -> Any:
        """A ``NamedSharding`` per leaf of the per-layer state ``tree``: the engine's own
        (TP/ZeRO) layout; under pipeline parallelism layer ``i``'s arrays live on the devices
        of its stage only (a ``(data, tensor)`` sub-mesh), as the stacked state holds them."""
        if self._ckpt_sh is not None:
            return self._ckpt_sh
        eng_sh = self.state_shardings
        if self.stacked is None:
            self._ckpt_sh = eng_sh
            return eng_sh
        prefix = self.stacked[0]
        flat = {key_names(p): sh for p, sh in jax.tree_util.tree_leaves_with_path(
            eng_sh, is_leaf=lambda x: isinstance(x, NamedSharding))}
        subs = [Mesh(self.mesh.devices[:, st, :], (DATA, TENSOR)) for st in range(self.layout.pipe)]

        def shard(path: tuple, _: Any) -> NamedSharding:
            keys, hit = key_names(path), layer_of(key_names(path), prefix)
            if hit is None:
                return flat[keys]
            k, i = hit
            spec = flat[(*keys[:k], prefix + "*", *keys[k + 1:])].spec
            return NamedSharding(subs[self._where(i)[0]], P(*spec[3:]))

        self._ckpt_sh = jax.tree_util.tree_map_with_path(shard, tree)
        return self._ckpt_sh

    def _where(self, i: int) -> tuple[int, int, int]:
        """(stage, virtual chunk, index in the chunk) of layer ``i``."""
        n, v = self.layout.pipe, self.layout.virtual
        per = self.stacked[1] // (n * v)  # type: ignore[index]
        c = i // per
        return c % n, c // n, i % per

    def restore_target(self, tree: Any) -> Any:
        """Abstract arrays (shape, dtype, sharding) of the per-layer state ``tree``: the target
        orbax reads a checkpoint into (each device reads only its own shard)."""
        return jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sh),
                            tree, self.checkpoint_shardings(tree))

    def checkpoint_view(self, state: Any) -> Any:
        """The engine's state as the checkpoint's per-layer global arrays, without moving data
        between devices: the same arrays, or under pipeline parallelism each stage's
        ``[1, V, per, ...]`` shard sliced into its layers' arrays on that stage's devices."""
        if self.stacked is None:
            return state
        prefix, n_layer = self.stacked
        canon = unstack_tree(jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                          state), prefix, n_layer, abstract=True)
        shardings = self.checkpoint_shardings(canon)
        flat = {key_names(p): x for p, x in jax.tree_util.tree_leaves_with_path(state)}
        star = [k for k in flat if prefix + "*" in k]
        # one compiled call per device: its [1, V, per, ...] shard of every stacked leaf ->
        # the V x per layer slices
        mine = [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]
        parts = {d: _unbind([_on(flat[k], d) for k in star]) for d in mine}
        index = {k: n for n, k in enumerate(star)}
        per = n_layer // (self.layout.pipe * self.layout.virtual)

        def leaf(path: tuple, sh: NamedSharding) -> jax.Array:
            keys, hit = key_names(path), layer_of(key_names(path), prefix)
            if hit is None:
                return flat[keys]
            k, i = hit
            n = index[(*keys[:k], prefix + "*", *keys[k + 1:])]
            _, v, j = self._where(i)
            pieces = [parts[d][n][v * per + j] for d in sh.addressable_devices]
            return jax.make_array_from_single_device_arrays(flat[star[n]].shape[3:], sh, pieces)

        return jax.tree_util.tree_map_with_path(leaf, shardings,
                                                is_leaf=lambda x: isinstance(x, NamedSharding))

    def from_checkpoint(self, restored: Any) -> Any:
        """The inverse of :meth:`checkpoint_view`: restored per-layer arrays (laid out by
        :meth:`restore_target`) -> the engine's state, each stage stacking its own layers on
        its own devices."""
        if self.stacked is None:
            return restored
        prefix, n_layer = self.stacked
        n, v_n = self.layout.pipe, self.layout.virtual
        per = n_layer // (n * v_n)
        flat = {key_names(p): x for p, x in jax.tree_util.tree_leaves_with_path(restored)}
        stage_of = {d: st for (_, st, _), d in np.ndenumerate(self.mesh.devices)}
        eng = {key_names(p): sh for p, sh in jax.tree_util.tree_leaves_with_path(
            self.state_shardings, is_leaf=lambda x: isinstance(x, NamedSharding))}
        star = [k for k in eng if prefix + "*" in k]

        def layers(k: tuple) -> list[jax.Array]:
            at = k.index(prefix + "*")
            return [flat[(*k[:at], f"{prefix}{i}", *k[at + 1:])] for i in range(n_layer)]

        per_leaf = {k: layers(k) for k in star}
        mine = [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]
        built = {}
        for d in mine:  # one compiled call per device: stack its stage's layers
            st = stage_of[d]
            groups = [[_on(per_leaf[k][(v * n + st) * per + j], d) for v in range(v_n)
                       for j in range(per)] for k in star]
            built[d] = _bind(groups, v_n, per)
        out = {k: jax.make_array_from_single_device_arrays(
            (n, v_n, per, *per_leaf[k][0].shape), eng[k],
            [built[d][m] for d in eng[k].addressable_devices]) for m, k in enumerate(star)}

        def leaf(path: tuple, sh: NamedSharding) -> jax.Array:
            keys = key_names(path)
            return out[keys] if keys in out else flat[keys]

        return jax.tree_util.tree_map_with_path(leaf, self.state_shardings,
                                                is_leaf=lambda x: isinstance(x, NamedSharding))

    def put_batch(self, host_batch: np.ndarray) -> jax.Array:
        """Batcher layout ``[replicas, accum, B, T+1]`` (this process's) -> global
        ``[accum, DP * B, T+1]`` sharded on ``data``; replica r's rows stay together, in order."""
        r, a, b, t = host_batch.shape
        local = np.ascontiguousarray(host_batch.transpose(1, 0, 2, 3).reshape(a, r * b, t))
        sh = NamedSharding(self.mesh, P(None, DATA, None))
        return jax.make_array_from_process_local_data(sh, local, (a, self.layout.data * b, t))

    # -- memory --------------------------------------------------------------------------------
    def bytes_per_device(self, state: Any) -> dict[str, int]:
        """Per-device bytes of params, grads, optimizer state (from ``addressable_shards``;
        grads from their sharding, as they exist only inside the step)."""
        return {"params": shard_bytes(state["params"]),
                "grads": shard_bytes(state["params"], self.grad_shardings),
                "opt_state": shard_bytes(state["opt_state"])}


def _on(x: jax.Array, dev: Any) -> jax.Array:
    """``x``'s shard on device ``dev`` (a local array)."""
    return next(s.data for s in x.addressable_shards if s.device == dev)


@jax.jit
def _unbind(xs: list[jax.Array]) -> list[list[jax.Array]]:
    """Per array ``[1, V, per, ...]`` (one device's shard of a stacked leaf): its ``V x per``
    layers, v-major."""
    return [[x[0, v, j] for v in range(x.shape[1]) for j in range(x.shape[2])] for x in xs]


@partial(jax.jit, static_argnums=(1, 2))
def _bind(groups: list[list[jax.Array]], virtual: int, per: int) -> list[jax.Array]:
    """The inverse of :func:`_unbind`: per group of ``V x per`` layers, ``[1, V, per, ...]``."""
    return [jnp.stack(g).reshape(1, virtual, per, *g[0].shape) for g in groups]


def build(model_cfg: Any, tx: optax.GradientTransformation, schedule: Callable, seed: int,
          layout: Layout, params: Any, devices: Sequence[Any] | None = None,
          loss_scale: LossScale | None = None,
          group_schedules: Mapping[str, Callable] | None = None,
          documents: Documents | None = None,
          hparams: dict[str, Callable] | None = None) -> MeshEngine:
    """The mesh, the state's shardings and the jitted steps (compiled at their first call).

    The step is :func:`train.engine.step.update` (the pmap engine's body) with the
    vocabulary-parallel
    loss and, as its cross-device "reduce", the gradients' sharding constraint (under GSPMD the
    compiler inserts the all-reduce or, for ZeRO-2/3, the reduce-scatter)."""
    mesh = make_mesh(layout, devices)
    opt_shapes = jax.eval_shape(tx.init, params)
    pipelined = layout.pipe > 1 or layout.virtual > 1
    stacked = (layer_prefix(params), model_cfg.n_layer) if pipelined else None
    specs, g_specs = state_specs(params, opt_shapes, tx, layout, stacked)
    if loss_scale is not None:  # float16: the scaler's two scalars, replicated
        specs["loss_scale"] = {"scale": P(), "good_steps": P()}
    state_sh = named(mesh, specs)
    grad_sh = named(mesh, g_specs)
    rules = logical_rules(layout)
    module = models.build(model_cfg)
    hparams = hparams or {}
    use_dropout = getattr(model_cfg, "dropout", 0.0) > 0 or "dropout" in hparams
    repl = NamedSharding(mesh, P())
    batch_sh = NamedSharding(mesh, P(None, DATA, None))
    stage_sh = _stage_sharding(mesh, specs["params"], layout)

    loss_fn = model_loss(module, vocab_parallel=True, documents=documents)

    def pp_segments(tokens: jax.Array) -> jax.Array | None:
        """The pipeline's ``[m, B, T]`` segment ids of ``[m, B, T + 1]`` micro-batches."""
        if documents is None:
            return None
        return jax.vmap(lambda t: document_segments(t[:, :-1], documents))(tokens)

    def reduce(grads_loss: Any) -> Any:
        grads, loss = grads_loss
        return jax.lax.with_sharding_constraint(grads, grad_sh), loss

    def step(state: dict, batch: jax.Array) -> tuple[dict, dict]:
        accum = batch.shape[0]
        keys = (jax.random.split(jax.random.fold_in(jax.random.key(seed), state["step"]), accum)
                if use_dropout else None)
        if pipelined:
            # micro-batches through the pipeline: one loss over the whole [accum, B, T+1] batch
            def pp_loss(p: Any, tokens: jax.Array, k: jax.Array | None) -> jax.Array:
                return pipeline_loss(model_cfg, p, tokens, layout.pipe, layout.virtual,
                                     stage_sh, pp_segments(tokens))

            new, metrics = update(state, batch[None], None, tx=tx, reduce=reduce,
                                  schedule=schedule, loss_fn=pp_loss, loss_scale=loss_scale,
                                  group_schedules=group_schedules, hparams=hparams)
        else:
            lf = loss_fn
            if "dropout" in hparams:  # this update's scheduled rate
                rate = hparams["dropout"](schedule_count(state["opt_state"]))
                lf = model_loss(module, rate, vocab_parallel=True, documents=documents)
            new, metrics = update(state, batch, keys, tx=tx, reduce=reduce, schedule=schedule,
                                  loss_fn=lf, loss_scale=loss_scale,
                                  group_schedules=group_schedules, hparams=hparams)
        return new, jax.tree.map(lambda x: x[None], metrics)  # [1]: one replica's, as pmap's

    def eval_step(params: Any, batch: jax.Array) -> jax.Array:
        if pipelined:  # the stacked layers: through the pipeline (equal micro-batches: the
            # mean of their means is the mean)
            return pipeline_loss(model_cfg, params, batch, layout.pipe, layout.virtual,
                                 stage_sh, pp_segments(batch))[None]
        flat = batch.reshape((-1, batch.shape[-1]))
        return loss_fn(params, flat, None)[None]

    train_jit = jax.jit(step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, repl),
                        donate_argnums=(0,))
    eval_jit = jax.jit(eval_step, in_shardings=(state_sh["params"], batch_sh),
                       out_shardings=repl)

    def in_mesh(fn: Callable) -> Callable:
        def call(*args: Any) -> Any:
            with nn.logical_axis_rules(rules), jax.set_mesh(mesh):
                return fn(*args)
        return call

    eng = MeshEngine(layout, mesh, tx, state_sh, grad_sh, train=None, eval=None,  # type: ignore
                     train_jit=train_jit, rules=rules, stacked=stacked)
    train_c, eval_c = in_mesh(train_jit), in_mesh(eval_jit)
    eng.train, eng.eval, eng.place_batch = checked(
        train_c, eval_c, place=eng.put_batch, replicas=layout.data // jax.process_count(),
        max_len=model_cfg.block_size, step_shape=())
    return eng


def _stage_sharding(mesh: Mesh, p_specs: Any, layout: Layout) -> Callable[[Any], Any] | None:
    """Pipeline: the stacked ``[N, V, per, ...]`` layer weights sharded over ``pipe`` on their
    first dimension, each layer's own (TP/ZeRO) spec on the rest."""
    if layout.pipe == 1:
        return None
    first = next(k for k in ("h_*", "layers_*") if k in p_specs)

    def constrain(w: Any) -> Any:
        sh = jax.tree.map(lambda s: NamedSharding(mesh, s), p_specs[first],
                          is_leaf=lambda s: isinstance(s, P))
        return jax.lax.with_sharding_constraint(w, sh)

    return constrain


_ENGINE_CACHE: dict[Any, MeshEngine] = {}


def mesh_engine(model_cfg: Any, cfg: Any, schedule: Any, params: Any, layout: Layout,
                devices: Sequence[Any] | None = None,
                log: Callable[[str], None] | None = None, documents: Documents | None = None
                ) -> MeshEngine:
    """The mesh engine of a run (optimizer and compiled steps), cached per process under
    :func:`train.engine.base.compile_key`. Prints the mesh. ``documents``: the document mask
    (``--document-mask``)."""
    horizon = max(cfg.steps, cfg.schedule_steps)
    key = compile_key(model_cfg, cfg, schedule, layout, horizon,
                      None if devices is None else tuple(d.id for d in devices), documents)
    if key not in _ENGINE_CACHE:
        schedule = applied_schedule(schedule, horizon)  # the same bits on every engine
        hp = applied_hparams(build_hparams(cfg), horizon)
        tx = make_optimizer(cfg, schedule, params, hp)
        _ENGINE_CACHE[key] = build(model_cfg, tx, schedule, cfg.seed, layout, params,
                                   devices, loss_scale=loss_scale_rule(cfg),
                                   group_schedules=applied_group_schedules(cfg),
                                   documents=documents, hparams=hp)
    eng = _ENGINE_CACHE[key]
    eng.log = log
    if log is not None:
        log(f"engine: mesh ({layout.describe()}); {describe_mesh(eng.mesh)}")
    return eng
