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

Dropout draws its masks from ``fold_in(key(seed), step)`` over the global batch
(partitionable threefry: the same masks whatever the layout), not per device as pmap does: with
dropout, mesh layouts agree with each other, not with pmap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

from .pipeline import PIPE, pipeline_loss
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

    # -- host <-> mesh -------------------------------------------------------------------------
    def put_state(self, host: Any) -> Any:
        """Host (NumPy) state -> global arrays laid out per ``state_shardings``."""
        def put(x: Any, sh: NamedSharding) -> jax.Array:
            a = np.asarray(x)
            return jax.make_array_from_callback(a.shape, sh, lambda idx: np.asarray(a[idx]))

        state = jax.tree.map(put, host, self.state_shardings)
        if self.log is not None:
            b = self.bytes_per_device(state)
            self.log(f"per-device bytes ({self.layout.describe()}, measured from "
                     "addressable_shards): " + ", ".join(f"{k} {fmt_bytes(v)}"
                                                       for k, v in b.items()))
        return state

    @staticmethod
    def get_state(state: Any) -> Any:
        """Global arrays -> full host NumPy copies (gathered across processes if needed)."""
        def get(x: jax.Array) -> np.ndarray:
            if x.is_fully_addressable:
                return np.asarray(jax.device_get(x))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))

        return jax.tree.map(get, state)

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


def state_specs(params: Any, opt_state: Any, tx: optax.GradientTransformation,
                layout: Layout) -> tuple[Any, Any]:
    """(PartitionSpecs of the state ``{step, params, opt_state}``, of the gradients)."""
    tp_specs = param_specs(params, layout, zero=False)
    zero_specs = param_specs(params, layout, zero=True)
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
    specs, g_specs = state_specs(params, opt_shapes, tx, layout)
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
        if layout.pipe > 1 or layout.virtual > 1:
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
                     train_jit=train_jit, rules=rules)
    train_c, eval_c = in_mesh(train_jit), in_mesh(eval_jit)
    eng.train = lambda state, batch: train_c(state, eng.put_batch(batch))
    eng.eval = lambda params, batch: eval_c(params, eng.put_batch(batch))
    return eng


def _stage_sharding(mesh: Mesh, p_specs: Any, layout: Layout) -> Callable[[Any], Any] | None:
    """Pipeline: the stacked ``[N, V, per, ...]`` layer weights sharded over ``pipe`` on their
    first dimension, each layer's own (TP/ZeRO) spec on the rest."""
    if layout.pipe == 1:
        return None
    first = next(k for k in ("h_0", "layers_0") if k in p_specs)

    def constrain(w: Any) -> Any:
        sh = jax.tree.map(lambda s: NamedSharding(mesh, P(PIPE, None, None, *s)), p_specs[first],
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
