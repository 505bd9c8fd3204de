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
  (:func:`pipe_schedule`): micro-batches enter in groups of N, each group circulates through all
  ``V`` rounds, then the next group enters. The forward takes ``m V + N - 1`` chunk steps per
  stage, of which ``m V`` are useful: the bubble fraction is ``(N - 1) / (m V + N - 1)``
  (GPipe's ``(N-1)/(m+N-1)`` for ``V = 1``; interleaving divides the idle time by ``V``);
* the backward pass is JAX's autodiff of the scan (the reverse schedule: all forwards, then all
  backwards, as GPipe), with the activation recompute of ``--recompute`` applied per chunk.

``--document-mask``: each micro-batch's segment ids ``[B, T]`` enter stage 0 with its
activations and rotate with them in a second buffer; each stage rebuilds the attention mask and
the per-document positions from the ids in its slot (``models.ModelParts.layer_args``).

The embeddings run before the pipeline, the final norm, head and loss after it, on the
``[m, B, T, C]`` output split over ``pipe`` x ``data`` (each stage takes ``m / N`` of the
micro-batches: the head is computed once, not on every stage); GPT-2's tied embedding
therefore gets the sum of its gradient as input embedding and as output head, by autodiff.

The mesh engine keeps the layers stage-sharded in its state (params and optimizer moments):
one ``{prefix}*`` subtree of ``[N, V, L/(NV), ...]`` arrays sharded over ``pipe``
(:func:`train.parallel.stack.stack_tree`), so each stage holds only its own chunks' layers.
Checkpoints hold the model's per-layer tree (``h_{i}``) whatever the layout: saving turns
each stage's slices into per-layer arrays on that stage's devices, restoring reads each layer
onto its stage and stacks it there (``train.engine.mesh``), device-local both ways; a checkpoint
written under any layout restores under any other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import models
from models.layers import remat_policy, remat_segments

from .shardings import DATA, PIPE
from .stack import stack_layers

__all__ = ["PipeSchedule", "bubble_fraction", "pipe_schedule", "pipeline_loss"]

@dataclass(frozen=True)
class PipeSchedule:
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


def pipe_schedule(micro: int, stages: int, virtual: int = 1) -> PipeSchedule:
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
    return PipeSchedule(N, V, micro, chunk, inject, emit)


def bubble_fraction(micro: int, stages: int, virtual: int = 1) -> float:
    """``(N - 1) / (m V + N - 1)``: the idle fraction of the circular pipeline (m a multiple of
    N; :attr:`PipeSchedule.bubble` counts it exactly for any m)."""
    return (stages - 1) / (micro * virtual + stages - 1)


def pipeline_loss(model_cfg: Any, params: Any, batch: jax.Array, stages: int, virtual: int,
                  layer_sharding: Callable[[Any], Any] | None = None,
                  segment_ids: jax.Array | None = None) -> jax.Array:
    """Mean loss over the ``[m, B, T + 1]`` micro-batches, through the circular pipeline
    (module doc). ``layer_sharding`` constrains the stacked ``[N, V, per, ...]`` weights.
    ``segment_ids`` (int ``[m, B, T]``, the inputs' documents): attention within documents,
    positions restarting per document; each micro-batch's ids travel with its activations
    from stage to stage (a second ``[N, B, T]`` buffer, rotated with the first) and every
    stage rebuilds the mask and positions from them (``models.ModelParts.layer_args``)."""
    parts = models.model_parts(model_cfg)
    m = batch.shape[0]
    sched = pipe_schedule(m, stages, virtual)
    N, L = stages, model_cfg.n_layer
    per = L // (N * virtual)
    x_tok, y_tok = batch[..., :-1], batch[..., 1:]
    T = x_tok.shape[-1]
    if segment_ids is None:
        x_in, args = jax.vmap(lambda t: parts.embed(params, t), out_axes=(0, None))(x_tok)
    else:
        if segment_ids.shape != x_tok.shape:
            raise ValueError(f"segment_ids must have the inputs' shape {x_tok.shape}, got "
                             f"{segment_ids.shape}")
        x_in = jax.vmap(lambda t, s: parts.embed(params, t, s)[0])(x_tok, segment_ids)
        args = None
    w = (params[parts.prefix + "*"] if parts.prefix + "*" in params   # the engine's state
         else stack_layers(params, parts.prefix, L, N, virtual))
    if layer_sharding is not None:
        w = layer_sharding(w)
    segs = remat_segments(per, model_cfg.remat, model_cfg.remat_method,
                          model_cfg.remat_num_layers, 1)
    policy = remat_policy(model_cfg.remat)

    def chunk(w_s: Any, v: jax.Array, x: jax.Array, seg: jax.Array | None) -> jax.Array:
        w_v = jax.tree.map(lambda a: a[jnp.maximum(v, 0)], w_s)  # [per, ...]
        # an idle stage's slot holds zeros or a departed micro-batch's ids: any ids give
        # every query its own key, so the idle computation stays finite
        a = args if seg is None else parts.layer_args(T, seg)
        for lo, hi, ckpt in segs:
            def run_seg(w_v: Any, x: jax.Array, a: tuple, lo: int = lo, hi: int = hi
                        ) -> jax.Array:
                for j in range(lo, hi):
                    x = parts.layer(jax.tree.map(lambda t, j=j: t[j], w_v), x, a)
                return x
            x = (jax.checkpoint(run_seg, policy=policy) if ckpt else run_seg)(w_v, x, a)
        return x

    run = jax.vmap(chunk, spmd_axis_name=PIPE)
    # [N or m, B, ...] over pipe x data: the stage buffer, and the micro-batches for the head
    buf_spec = lambda b: jax.lax.with_sharding_constraint(  # noqa: E731
        b, jax.sharding.PartitionSpec(PIPE, DATA))

    def enter(inj: jax.Array, src: jax.Array, buf: jax.Array) -> jax.Array:
        """Micro-batch ``inj`` (if any) into stage 0's slot."""
        return buf_spec(buf.at[0].set(jnp.where(inj >= 0, src[jnp.maximum(inj, 0)], buf[0])))

    def step(carry: tuple, xs: tuple) -> tuple:
        buf, sbuf, out = carry
        v, inj, emt = xs
        buf = enter(inj, x_in, buf)
        if sbuf is not None:
            sbuf = enter(inj, segment_ids, sbuf)
        y = buf_spec(run(w, v, buf, sbuf))
        last = y[N - 1]
        out = out.at[jnp.maximum(emt, 0)].set(
            jnp.where(emt >= 0, last, out[jnp.maximum(emt, 0)]))
        if sbuf is not None:
            sbuf = buf_spec(jnp.roll(sbuf, 1, axis=0))
        return (buf_spec(jnp.roll(y, 1, axis=0)), sbuf, out), None

    buf0 = buf_spec(jnp.zeros((N, *x_in.shape[1:]), x_in.dtype))
    sbuf0 = (None if segment_ids is None else
             buf_spec(jnp.zeros((N, *segment_ids.shape[1:]), segment_ids.dtype)))
    xs = (jnp.asarray(sched.chunk), jnp.asarray(sched.inject), jnp.asarray(sched.emit))
    (_, _, out), _ = jax.lax.scan(step, (buf0, sbuf0, jnp.zeros_like(x_in)), xs)
    # the final norm, head and loss split the micro-batches over the stages (m/N each) rather
    # than every stage computing all of them: the head is the largest single matmul of a
    # small model (GPT-2 124M: a third of the forward FLOPs), N-fold redundant otherwise
    losses = jax.vmap(lambda h, y: models.vocab_parallel_xent(parts.head(params, h), y),
                      spmd_axis_name=PIPE)(buf_spec(out), buf_spec(y_tok))
    return jnp.mean(losses)
