"""The mesh engine: ``jax.jit`` over a ``data`` x ``tensor`` device mesh (GSPMD).

The same model, optimizer, schedule, data and checkpoints as the pmap engine
(:mod:`train.step`); only the layout differs. The train state is one global array per leaf,
laid out by :mod:`train.sharding` (TP, SP, ZeRO 1/2/3); the compiler inserts the collectives.

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
(:func:`train.pipeline.stack_tree`); the checkpoint keeps the per-layer tree.

Dropout draws its masks from ``fold_in(key(seed), step)`` over the global batch
(partitionable threefry: the same masks whatever the layout), not per device as pmap does: with
dropout, mesh layouts agree with each other, not with pmap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

from .pipeline import PIPE, layer_prefix, pipeline_loss, stack_tree, unstack_tree
from .sharding import DATA, TENSOR, Layout, logical_rules, named, param_specs, shard_bytes
from .step import LossScale, loss_scale_rule, update

__all__ = ["MeshEngine", "build", "compiled_engine", "describe_mesh", "make_layout", "make_mesh",
           "mesh_loss"]


def make_layout(cfg: Any, model_cfg: Any, n_devices: int, process_count: int = 1,
                local_devices: int | None = None) -> Layout:
    """The layout of ``cfg``'s flags on ``n_devices``; ``ValueError`` (naming the flag and the
    numbers) for an impossible one. Runs before anything compiles."""
    tp = cfg.tensor_parallel or 1
    if n_devices % tp:
        raise ValueError(f"--tensor-parallel={tp} is invalid: it must divide the device count "
                         f"{n_devices}")
    pp, vpp = getattr(cfg, "pipeline_parallel", None) or 1, (
        getattr(cfg, "virtual_pipeline_parallel", None) or 1)
    if pp > 1 or vpp > 1:  # pipeline parallelism (train/pipeline.py)
        from .pipeline import check_pipeline

        if n_devices % (tp * pp):
            raise ValueError(f"--pipeline-parallel={pp} x --tensor-parallel={tp} = {pp * tp} "
                             f"is invalid: it must divide the device count {n_devices}")
        check_pipeline(cfg, model_cfg)
        n_devices //= pp
    dp = cfg.data_parallel if cfg.data_parallel is not None else n_devices // tp
    if dp * tp != n_devices:
        raise ValueError(f"--data-parallel={dp} x --tensor-parallel={tp} = {dp * tp} is "
                         f"invalid: the product must equal the device count {n_devices}")
    checks = [("n_head", model_cfg.n_head)]
    if hasattr(model_cfg, "n_kv_head"):
        checks.append(("n_kv_head", model_cfg.n_kv_head))
    hidden = getattr(model_cfg, "intermediate_size", 4 * model_cfg.n_embd)
    checks += [("vocab size", model_cfg.vocab_size), ("MLP width", hidden)]
    for what, n in checks:
        if n % tp:
            raise ValueError(f"--tensor-parallel={tp} is invalid: it must divide the model's "
                             f"{what} ({n})")
    if cfg.sequence_parallel and cfg.seq_len % tp:
        raise ValueError(f"--sequence-parallel with --tensor-parallel={tp} is invalid: "
                         f"--seq-len={cfg.seq_len} is not divisible by {tp}")
    if dp % process_count:
        raise ValueError(f"--data-parallel={dp} is invalid: it must be a multiple of the "
                         f"process count {process_count} (tensor parallelism stays within a "
                         "process)")
    if local_devices is not None and local_devices % tp:
        raise ValueError(f"--tensor-parallel={tp} is invalid: it must divide the devices of "
                         f"one process ({local_devices})")
    return Layout(data=dp, tensor=tp, sequence_parallel=bool(cfg.sequence_parallel),
                  zero_stage=cfg.zero_stage or 0, pipe=pp, virtual=vpp)


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


def mesh_loss(module: Any, params: Any, tokens: jax.Array, rng: jax.Array | None) -> jax.Array:
    """``train.step._loss`` with a vocabulary-parallel cross-entropy: the target logit is
    picked by a masked sum over the (sharded) vocabulary instead of a gather, so the logits are
    never gathered on one device. The same value as ``models.loss_fn`` (the sum adds exact
    zeros)."""
    x, y = tokens[:, :-1], tokens[:, 1:]
    if rng is None:
        logits = module.apply({"params": params}, x, deterministic=True)
    else:
        logits = module.apply({"params": params}, x, deterministic=False, rngs={"dropout": rng})
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    picked = jnp.sum(jnp.where(vocab == y[..., None].astype(jnp.int32), logits, 0.0), axis=-1)
    return jnp.mean(logz - picked)


@dataclass
class MeshEngine:
    """Everything the loop needs from the mesh engine: the layout, the mesh, the shardings of
    the state, and the jitted steps (taking host batches as the Batcher makes them)."""

    layout: Layout
    mesh: Mesh
    state_shardings: Any
    grad_shardings: Any
    train: Callable[[Any, np.ndarray], tuple[Any, dict]]
    eval: Callable[[Any, np.ndarray], jax.Array]
    log: Callable[[str], None] | None = None
    train_jit: Any = None  # the jitted step on global batches (trace under ``rules`` + mesh)
    rules: Any = None
    #: pipeline: (layer key prefix, n_layer) when the state holds the layers stacked over
    #: ``pipe`` (``{prefix}*``, :func:`train.pipeline.stack_tree`); None otherwise
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
        flat = {_keys(p): sh for p, sh in jax.tree_util.tree_leaves_with_path(
            eng_sh, is_leaf=lambda x: isinstance(x, NamedSharding))}
        subs = [Mesh(self.mesh.devices[:, st, :], (DATA, TENSOR)) for st in range(self.layout.pipe)]

        def shard(path: tuple, _: Any) -> NamedSharding:
            keys, hit = _keys(path), _layer_of(_keys(path), prefix)
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
        flat = {_keys(p): x for p, x in jax.tree_util.tree_leaves_with_path(state)}
        star = [k for k in flat if prefix + "*" in k]
        # one compiled call per device: its [1, V, per, ...] shard of every stacked leaf ->
        # the V x per layer slices
        mine = [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]
        parts = {d: _unbind([_on(flat[k], d) for k in star]) for d in mine}
        index = {k: n for n, k in enumerate(star)}
        per = n_layer // (self.layout.pipe * self.layout.virtual)

        def leaf(path: tuple, sh: NamedSharding) -> jax.Array:
            keys, hit = _keys(path), _layer_of(_keys(path), prefix)
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
        flat = {_keys(p): x for p, x in jax.tree_util.tree_leaves_with_path(restored)}
        stage_of = {d: st for (_, st, _), d in np.ndenumerate(self.mesh.devices)}
        eng = {_keys(p): sh for p, sh in jax.tree_util.tree_leaves_with_path(
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
            keys = _keys(path)
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


def _keys(path: tuple) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _layer_of(keys: tuple[str, ...], prefix: str) -> tuple[int, int] | None:
    """(position in ``keys``, layer index) of a per-layer key ``{prefix}{i}``, if any."""
    for k, key in enumerate(keys):
        if key.startswith(prefix) and key[len(prefix):].isdigit():
            return k, int(key[len(prefix):])
    return None


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


def _stack_specs(specs: Any, prefix: str) -> Any:
    """Per-layer PartitionSpecs -> the stacked ``{prefix}*`` subtree's: ``pipe`` on the stage
    dimension, each layer's own spec on the rest (the same for every layer)."""
    is_layers = lambda d: isinstance(d, dict) and f"{prefix}0" in d  # noqa: E731

    def node(d: Any) -> Any:
        if not is_layers(d):
            return d
        out = {k: v for k, v in d.items() if _layer_of((k,), prefix) is None}
        out[prefix + "*"] = jax.tree.map(lambda s: P(PIPE, None, None, *s), d[f"{prefix}0"],
                                         is_leaf=lambda s: isinstance(s, P))
        return out

    return jax.tree.map(node, specs, is_leaf=is_layers)


def state_specs(params: Any, opt_state: Any, tx: optax.GradientTransformation,
                layout: Layout, stacked: tuple[str, int] | None = None) -> tuple[Any, Any]:
    """(PartitionSpecs of the state ``{step, params, opt_state}``, of the gradients), for the
    per-layer ``params``/``opt_state`` (shapes); with ``stacked`` (pipeline), of the engine's
    stacked form."""
    tp_specs = param_specs(params, layout, zero=False)
    zero_specs = param_specs(params, layout, zero=True)
    if stacked is not None:  # pipeline: the engine's state holds the layers stacked
        prefix, n_layer = stacked
        tp_specs, zero_specs = _stack_specs(tp_specs, prefix), _stack_specs(zero_specs, prefix)
        params = jax.eval_shape(
            lambda p: stack_tree(p, prefix, n_layer, layout.pipe, layout.virtual), params)
        opt_state = jax.eval_shape(
            lambda o: stack_tree(o, prefix, n_layer, layout.pipe, layout.virtual), opt_state)
    stage = layout.zero_stage
    p_specs = zero_specs if stage >= 3 else tp_specs
    g_specs = zero_specs if stage >= 2 else tp_specs
    o_param = zero_specs if stage >= 1 else tp_specs
    o_specs = _like_params(opt_state, params, o_param)
    return {"step": P(), "params": p_specs, "opt_state": o_specs}, g_specs


def _like_params(opt_state: Any, params: Any, specs: Any) -> Any:
    """A spec per optimizer-state leaf: the spec of the parameter whose path ends its path
    (AdamW's ``mu``/``nu`` mirror the parameters, also inside ``multi_transform`` groups);
    replicated for everything else (counts, masked groups' placeholders have no leaves)."""
    name = lambda path: tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)  # noqa: E731
    index = {name(path): (x.shape, s) for (path, x), s in zip(
        jax.tree_util.tree_leaves_with_path(params),
        jax.tree.leaves(specs, is_leaf=lambda v: isinstance(v, P)))}

    def spec(path: tuple, leaf: Any) -> P:
        keys = name(path)
        for i in range(len(keys)):
            hit = index.get(keys[i:])
            if hit is not None and tuple(hit[0]) == tuple(leaf.shape):
                return hit[1]
        return P()

    return jax.tree_util.tree_map_with_path(spec, opt_state)


def build(model_cfg: Any, tx: optax.GradientTransformation, schedule: Callable, seed: int,
          layout: Layout, params: Any, devices: Sequence[Any] | None = None,
          loss_scale: LossScale | None = None) -> MeshEngine:
    """The mesh, the state's shardings and the jitted steps (compiled at their first call).

    The step is :func:`train.step.update` (the pmap engine's body) with the vocabulary-parallel
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
    use_dropout = getattr(model_cfg, "dropout", 0.0) > 0
    repl = NamedSharding(mesh, P())
    batch_sh = NamedSharding(mesh, P(None, DATA, None))
    stage_sh = _stage_sharding(mesh, specs["params"], layout)

    def loss_fn(p: Any, tokens: jax.Array, k: jax.Array | None) -> jax.Array:
        return mesh_loss(module, p, tokens, k)

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
                                     stage_sh)

            new, metrics = update(state, batch[None], None, tx=tx, reduce=reduce,
                                  schedule=schedule, loss_fn=pp_loss, loss_scale=loss_scale)
        else:
            new, metrics = update(state, batch, keys, tx=tx, reduce=reduce, schedule=schedule,
                                  loss_fn=loss_fn, loss_scale=loss_scale)
        return new, jax.tree.map(lambda x: x[None], metrics)  # [1]: one replica's, as pmap's

    def eval_step(params: Any, batch: jax.Array) -> jax.Array:
        if pipelined:  # the stacked layers: through the pipeline (equal micro-batches: the
            # mean of their means is the mean)
            return pipeline_loss(model_cfg, params, batch, layout.pipe, layout.virtual,
                                 stage_sh)[None]
        flat = batch.reshape((-1, batch.shape[-1]))
        return mesh_loss(module, params, flat, None)[None]

    train_jit = jax.jit(step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, repl),
                        donate_argnums=(0,))
    eval_jit = jax.jit(eval_step, in_shardings=(state_sh["params"], batch_sh),
                       out_shardings=repl)

    def in_mesh(fn: Callable) -> Callable:
        def call(*args: Any) -> Any:
            with nn.logical_axis_rules(rules), jax.set_mesh(mesh):
                return fn(*args)
        return call

    eng = MeshEngine(layout, mesh, state_sh, grad_sh, train=None, eval=None,  # type: ignore
                     train_jit=train_jit, rules=rules, stacked=stacked)
    train_c, eval_c = in_mesh(train_jit), in_mesh(eval_jit)
    eng.train = lambda state, batch: train_c(state, eng.put_batch(batch))
    eng.eval = lambda params, batch: eval_c(params, eng.put_batch(batch))
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


_ENGINE_CACHE: dict[Any, tuple[Any, MeshEngine]] = {}


def compiled_engine(model_cfg: Any, cfg: Any, schedule: Any, params: Any, layout: Layout,
                    log: Callable[[str], None] | None = None
                    ) -> tuple[optax.GradientTransformation, MeshEngine]:
    """(optimizer, engine), cached per process like ``train.loop._STEP_CACHE`` so repeated runs
    with the same settings reuse the compiled steps. Prints the mesh."""
    from .optim import make_optimizer

    ls = loss_scale_rule(cfg)
    key = (model_cfg, repr(schedule), cfg.clip_norm, cfg.beta1, cfg.beta2, cfg.eps,
           cfg.weight_decay, tuple(sorted(cfg.lr_mults.items())), cfg.seed, cfg.optimizer,
           cfg.momentum, cfg.nesterov, cfg.dampening, ls, layout)
    if key not in _ENGINE_CACHE:
        tx = make_optimizer(cfg, schedule, params)
        _ENGINE_CACHE[key] = (tx, build(model_cfg, tx, schedule, cfg.seed, layout, params,
                                        loss_scale=ls))
    tx, eng = _ENGINE_CACHE[key]
    eng.log = log
    if log is not None:
        log(f"engine: mesh ({layout.describe()}); {describe_mesh(eng.mesh)}")
    return tx, eng


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)
