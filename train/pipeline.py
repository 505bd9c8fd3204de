"""Pipeline parallelism on the mesh engine: a circular (interleaved) pipeline, compiler-visible.

``--pipeline-parallel=N --virtual-pipeline-parallel=V``: the ``L`` transformer layers are split
into ``N x V`` contiguous chunks of ``L / (N V)`` layers; chunk ``c`` lives on stage ``c mod N``
of the ``pipe`` mesh axis (stage ``s`` holds chunks ``s, s + N, ..., s + (V-1) N``). The
``m = --grad-accum`` micro-batches flow through them:

* the layer weights are stacked into arrays ``[N, V, L/(NV), ...]`` whose first dimension is
  sharded over ``pipe`` (each stage computes with its own chunks only);
* a buffer ``[N, B, T, C]`` (one activation slot per stage, sharded over ``pipe``) is advanced
  by a ``lax.scan`` over time steps: every stage applies its current chunk to its slot (a
  ``vmap`` over the stage dimension with ``spmd_axis_name="pipe"``), then the buffer rotates by
  one stage (``jnp.roll``: a collective permute between neighbouring stages; stage N-1 wraps to
  stage 0 for the next virtual chunk);
* which micro-batch and which chunk each stage handles at each step is a static table
  (:func:`schedule`): micro-batches enter in groups of N, each group circulates through all
  ``V`` rounds, then the next group enters. The forward takes ``m V + N - 1`` chunk steps per
  stage, of which ``m V`` are useful: the bubble fraction is ``(N - 1) / (m V + N - 1)``
  (GPipe's ``(N-1)/(m+N-1)`` for ``V = 1``; interleaving divides the idle time by ``V``);
* the backward pass is JAX's autodiff of the scan (the reverse schedule: all forwards, then all
  backwards, as GPipe), with the activation recompute of ``--recompute`` applied per chunk.

The embeddings run before the pipeline, the final norm, head and loss after it, on the
``[m, B, T, C]`` output split over ``pipe`` x ``data`` (each stage takes ``m / N`` of the
micro-batches: the head is computed once, not on every stage); GPT-2's tied embedding
therefore gets the sum of its gradient as input embedding and as output head, by autodiff.

The mesh engine keeps the layers stage-sharded in its state (params and optimizer moments):
one ``{prefix}*`` subtree of ``[N, V, L/(NV), ...]`` arrays sharded over ``pipe``
(:func:`stack_tree`), so each stage holds only its own chunks' layers. Checkpoints hold the
model's per-layer tree (``h_{i}``) whatever the layout: saving turns each stage's slices into
per-layer arrays on that stage's devices, restoring reads each layer onto its stage and
stacks it there (``train.mesh``), device-local both ways; a checkpoint written under any
layout restores under any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import models
from models.common import PARAM_DTYPE
from models.layers import LMHead, constrain, lm_logits, remat_policy, remat_segments

__all__ = ["PIPE", "STACK_DIMS", "Schedule", "bubble_fraction", "check_pipeline", "layer_prefix",
           "pipeline_loss", "schedule", "stack_tree", "stacked_dims", "unstack_tree"]

PIPE = "pipe"
#: the leading dimensions ``[N, V, L/(NV)]`` of every leaf of a stacked ``{prefix}*`` subtree
STACK_DIMS = 3


def stacked_dims(path: tuple) -> int:
    """:data:`STACK_DIMS` for a leaf of a stacked ``{prefix}*`` subtree (:func:`stack_tree`,
    found by its key path: the params, gradients and optimizer moments alike), else 0."""
    return STACK_DIMS if any(str(getattr(k, "key", "")).endswith("*") for k in path) else 0


@dataclass(frozen=True)
class Schedule:
    """The static pipeline table. ``steps`` time steps; at step ``t`` stage ``s`` applies its
    virtual chunk ``chunk[t, s]`` (``-1``: idle) to its buffer slot; micro-batch ``inject[t]``
    (``-1``: none) enters stage 0 first; micro-batch ``emit[t]`` (``-1``: none) leaves the last
    stage after the step."""

    stages: int
    virtual: int
    micro: int
    chunk: np.ndarray  # [steps, N] int: virtual index v, or -1
    inject: np.ndarray  # [steps] int
    emit: np.ndarray  # [steps] int

    @property
    def steps(self) -> int:
        return int(self.chunk.shape[0])

    @property
    def bubble(self) -> float:
        """Idle fraction of the stages' chunk steps."""
        return float(np.mean(self.chunk < 0))


def schedule(micro: int, stages: int, virtual: int = 1) -> Schedule:
    """The circular schedule: micro-batch ``i`` enters at ``(i // N) N V + i % N`` and then moves
    one stage per step for ``N V`` steps (stage ``k mod N``, virtual chunk ``k // N`` after
    ``k`` steps). No two micro-batches meet on a stage (checked)."""
    N, V = stages, virtual
    enter = [(i // N) * N * V + i % N for i in range(micro)]
    steps = enter[-1] + N * V
    chunk = -np.ones((steps, N), np.int32)
    inject = -np.ones(steps, np.int32)
    emit = -np.ones(steps, np.int32)
    for i, e in enumerate(enter):
        inject[e] = i
        emit[e + N * V - 1] = i
        for k in range(N * V):
            t, s = e + k, k % N
            if chunk[t, s] >= 0:
                raise AssertionError(f"stage {s} has two micro-batches at step {t}")
            chunk[t, s] = k // N
    return Schedule(N, V, micro, chunk, inject, emit)


def bubble_fraction(micro: int, stages: int, virtual: int = 1) -> float:
    """``(N - 1) / (m V + N - 1)``: the idle fraction of the circular pipeline (m a multiple of
    N; :attr:`Schedule.bubble` counts it exactly for any m)."""
    return (stages - 1) / (micro * virtual + stages - 1)


def check_pipeline(cfg: Any, model_cfg: Any) -> None:
    """``ValueError`` (naming the flags and the numbers) for an impossible pipeline layout;
    runs before anything compiles."""
    pp, vpp = cfg.pipeline_parallel or 1, cfg.virtual_pipeline_parallel or 1
    if pp == 1 and vpp == 1:
        return
    L = model_cfg.n_layer
    if L % (pp * vpp):
        raise ValueError(f"--pipeline-parallel={pp} x --virtual-pipeline-parallel={vpp} = "
                         f"{pp * vpp} is invalid: it must divide the model's layers "
                         f"(n_layer={L})")
    if cfg.grad_accum < pp:
        raise ValueError(f"--grad-accum={cfg.grad_accum} is invalid with --pipeline-parallel="
                         f"{pp}: the pipeline needs at least {pp} micro-batches")
    lr_mults = getattr(cfg, "lr_mults", None) or {}
    if lr_mults:  # the engine stacks the layers: a group must take all of them or none
        params = jax.eval_shape(lambda: models.init_params(model_cfg, jax.random.key(0)))
        prefix = layer_prefix(params)
        from .optim import path_str

        rel = [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params[prefix + "0"])]
        for pat in lr_mults:
            for r in rel:
                hits = {pat in f"{prefix}{i}/{r}" for i in range(L)} | {pat in f"{prefix}*/{r}"}
                if len(hits) > 1:
                    raise ValueError(
                        f"--lr-mults pattern {pat!r} is invalid with --pipeline-parallel={pp}: "
                        f"it selects some layers' {r} and not others (the pipeline stores the "
                        f"layers stacked as {prefix}*); use a pattern that selects all layers "
                        "or none")
    if getattr(model_cfg, "dropout", 0.0) > 0:
        raise ValueError(f"--dropout={model_cfg.dropout} is invalid with --pipeline-parallel="
                         f"{pp}: pipelined training is deterministic (dropout 0)")


# --------------------------------------------------------------------------------------
# the model in three parts: embeddings, one layer, head


@dataclass(frozen=True)
class _Parts:
    prefix: str
    embed: Callable[[Any, jax.Array], tuple[jax.Array, tuple]]  # -> x [B, T, C], layer args
    layer: Callable[[Any, jax.Array, tuple], jax.Array]
    head: Callable[[Any, jax.Array], jax.Array]  # -> float32 logits


def _embed_module(cfg: Any, n: int) -> nn.Embed:
    return nn.Embed(n, cfg.n_embd, dtype=cfg.compute_dtype, param_dtype=PARAM_DTYPE)


def _parts(cfg: Any) -> _Parts:
    """The model's forward as embeddings / layer / head, with the models' own modules (the same
    arithmetic as ``models.build(cfg)``)."""
    if isinstance(cfg, models.GPT2Config):
        from models.gpt2 import Block, _layer_norm

        def embed(p: Any, tokens: jax.Array) -> tuple[jax.Array, tuple]:
            T = tokens.shape[-1]
            x = _embed_module(cfg, cfg.vocab_size).apply({"params": p["wte"]}, tokens)
            x = x + _embed_module(cfg, cfg.block_size).apply({"params": p["wpe"]},
                                                             jnp.arange(T))[None]
            return constrain(x, "batch", "seq", "embed"), ()

        def layer(p: Any, x: jax.Array, args: tuple) -> jax.Array:
            return Block(cfg).apply({"params": p}, x, True)

        def head(p: Any, x: jax.Array) -> jax.Array:
            x = _layer_norm(cfg, "ln_f").apply({"params": p["ln_f"]}, x)
            logits = lm_logits(x, p["wte"]["embedding"], transposed=True)
            return constrain(logits, "batch", None, "vocab")

        return _Parts("h_", embed, layer, head)

    from models.llama import DecoderLayer, RMSNorm, rope_cos_sin

    def embed_l(p: Any, tokens: jax.Array) -> tuple[jax.Array, tuple]:
        x = _embed_module(cfg, cfg.vocab_size).apply({"params": p["embed_tokens"]}, tokens)
        return constrain(x, "batch", "seq", "embed"), rope_cos_sin(cfg, tokens.shape[-1])

    def layer_l(p: Any, x: jax.Array, args: tuple) -> jax.Array:
        return DecoderLayer(cfg).apply({"params": p}, x, *args, True)

    def head_l(p: Any, x: jax.Array) -> jax.Array:
        x = RMSNorm(cfg.rms_norm_eps, cfg.compute_dtype).apply({"params": p["norm"]}, x)
        if cfg.tie_embeddings:
            logits = lm_logits(x, p["embed_tokens"]["embedding"], transposed=True)
        else:
            logits = LMHead(cfg.vocab_size).apply({"params": p["lm_head"]}, x)
        return constrain(logits, "batch", None, "vocab")

    return _Parts("layers_", embed_l, layer_l, head_l)


def _xent(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean cross-entropy with the vocabulary-parallel target pick of ``train.mesh.mesh_loss``."""
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    picked = jnp.sum(jnp.where(vocab == y[..., None].astype(jnp.int32), logits, 0.0), axis=-1)
    return jnp.mean(logz - picked)


def layer_prefix(tree: Any) -> str:
    """``"h_"`` (GPT-2) or ``"layers_"`` (LLaMA-3): the per-layer keys of the model's params."""
    return "h_" if "h_0" in tree else "layers_"


def _is_layers(prefix: str) -> Callable[[Any], bool]:
    return lambda node: isinstance(node, dict) and f"{prefix}0" in node


def stack_tree(tree: Any, prefix: str, n_layer: int, stages: int, virtual: int) -> Any:
    """Every dict holding the per-layer subtrees ``{prefix}0 .. {prefix}{L-1}`` (the params, and
    the optimizer's moments that mirror them, masked groups included) with those replaced by
    one subtree ``{prefix}*`` of ``[N, V, L/(NV), ...]`` arrays: layer ``(v N + s) L/(NV) + j``
    at ``[s, v, j]`` (chunk ``v N + s`` on stage ``s``). NumPy in, NumPy out; ``jax`` arrays or
    ``ShapeDtypeStruct`` s through ``jax.numpy`` (under ``jax.eval_shape``)."""
    per = n_layer // (stages * virtual)
    keys = [f"{prefix}{i}" for i in range(n_layer)]

    def stack(*xs: Any) -> Any:
        xp = np if all(isinstance(x, np.ndarray | np.generic) for x in xs) else jnp
        a = xp.stack(xs)
        return a.reshape(virtual, stages, per, *a.shape[1:]).swapaxes(0, 1)

    def node(d: Any) -> Any:
        if not _is_layers(prefix)(d):
            return d
        out = {k: v for k, v in d.items() if k not in keys}
        out[prefix + "*"] = jax.tree.map(stack, *[d[k] for k in keys])
        return out

    return jax.tree.map(node, tree, is_leaf=_is_layers(prefix))


def unstack_tree(tree: Any, prefix: str, n_layer: int, abstract: bool = False) -> Any:
    """The inverse of :func:`stack_tree` (host NumPy arrays; with ``abstract``, shapes)."""
    star = prefix + "*"
    is_stacked = lambda d: isinstance(d, dict) and star in d  # noqa: E731

    def node(d: Any) -> Any:
        if not is_stacked(d):
            return d
        out = {k: v for k, v in d.items() if k != star}

        def layer(i: int) -> Any:
            def pick(a: Any) -> Any:
                if abstract:
                    return jax.ShapeDtypeStruct(a.shape[3:], a.dtype)
                a = np.asarray(a)
                return a.swapaxes(0, 1).reshape(n_layer, *a.shape[3:])[i]
            return jax.tree.map(pick, d[star])

        out.update({f"{prefix}{i}": layer(i) for i in range(n_layer)})
        return out

    return jax.tree.map(node, tree, is_leaf=is_stacked)


def stack_layers(params: Any, prefix: str, n_layer: int, stages: int, virtual: int) -> Any:
    """Per-layer parameters -> one tree of ``[N, V, L/(NV), ...]`` arrays: layer
    ``(v N + s) L/(NV) + j`` at ``[s, v, j]`` (chunk ``v N + s`` on stage ``s``)."""
    per = n_layer // (stages * virtual)
    layers = [params[f"{prefix}{i}"] for i in range(n_layer)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)  # [L, ...]
    return jax.tree.map(
        lambda a: a.reshape(virtual, stages, per, *a.shape[1:]).swapaxes(0, 1), stacked)


def pipeline_loss(model_cfg: Any, params: Any, batch: jax.Array, stages: int, virtual: int,
                  layer_sharding: Callable[[Any], Any] | None = None) -> jax.Array:
    """Mean loss over the ``[m, B, T + 1]`` micro-batches, through the circular pipeline
    (module doc). ``layer_sharding`` constrains the stacked ``[N, V, per, ...]`` weights."""
    parts = _parts(model_cfg)
    m = batch.shape[0]
    sched = schedule(m, stages, virtual)
    N, L = stages, model_cfg.n_layer
    per = L // (N * virtual)
    x_tok, y_tok = batch[..., :-1], batch[..., 1:]
    x_in, args = jax.vmap(lambda t: parts.embed(params, t), out_axes=(0, None))(x_tok)
    w = (params[parts.prefix + "*"] if parts.prefix + "*" in params   # the engine's state
         else stack_layers(params, parts.prefix, L, N, virtual))
    if layer_sharding is not None:
        w = layer_sharding(w)
    segs = remat_segments(per, model_cfg.remat, model_cfg.remat_method,
                          model_cfg.remat_num_layers, 1)
    policy = remat_policy(model_cfg.remat)

    def chunk(w_s: Any, v: jax.Array, x: jax.Array) -> jax.Array:
        w_v = jax.tree.map(lambda a: a[jnp.maximum(v, 0)], w_s)  # [per, ...]
        for lo, hi, ckpt in segs:
            def seg(w_v: Any, x: jax.Array, lo: int = lo, hi: int = hi) -> jax.Array:
                for j in range(lo, hi):
                    x = parts.layer(jax.tree.map(lambda a, j=j: a[j], w_v), x, args)
                return x
            x = (jax.checkpoint(seg, policy=policy) if ckpt else seg)(w_v, x)
        return x

    run = jax.vmap(chunk, spmd_axis_name=PIPE)
    # [N or m, B, ...] over pipe x data: the stage buffer, and the micro-batches for the head
    buf_spec = lambda b: jax.lax.with_sharding_constraint(  # noqa: E731
        b, jax.sharding.PartitionSpec(PIPE, "data"))

    def step(carry: tuple, xs: tuple) -> tuple:
        buf, out = carry
        v, inj, emt = xs
        new = jnp.where(inj >= 0, x_in[jnp.maximum(inj, 0)], buf[0])
        buf = buf_spec(buf.at[0].set(new))
        y = buf_spec(run(w, v, buf))
        last = y[N - 1]
        out = out.at[jnp.maximum(emt, 0)].set(
            jnp.where(emt >= 0, last, out[jnp.maximum(emt, 0)]))
        return (buf_spec(jnp.roll(y, 1, axis=0)), out), None

    buf0 = buf_spec(jnp.zeros((N, *x_in.shape[1:]), x_in.dtype))
    xs = (jnp.asarray(sched.chunk), jnp.asarray(sched.inject), jnp.asarray(sched.emit))
    (_, out), _ = jax.lax.scan(step, (buf0, jnp.zeros_like(x_in)), xs)
    # the final norm, head and loss split the micro-batches over the stages (m/N each) rather
    # than every stage computing all of them: the head is the largest single matmul of a
    # small model (GPT-2 124M: a third of the forward FLOPs), N-fold redundant otherwise
    losses = jax.vmap(lambda h, y: _xent(parts.head(params, h), y),
                      spmd_axis_name=PIPE)(buf_spec(out), buf_spec(y_tok))
    return jnp.mean(losses)
