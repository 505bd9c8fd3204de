"""A model as embeddings / one layer / head (the pipeline's view), and the vocabulary-parallel
cross-entropy: public building blocks on the models' own modules, so the trainer's pipeline
never reaches into a model's private functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from . import gpt2, llama
from .common import PARAM_DTYPE, lookup_axes
from .gpt2 import Block, GPT2Config, _layer_norm
from .layers import LMHead, attention_inputs, constrain, lm_logits, mask_padded_vocab
from .llama import DecoderLayer, RMSNorm, rope_cos_sin, rope_cos_sin_at

__all__ = ["ModelParts", "model_parts", "param_axes", "vocab_parallel_xent"]


@dataclass(frozen=True)
class ModelParts:
    """A model's forward in pure functions of its parameters, for the pipeline (which runs the
    layers stage by stage): ``embed(params, tokens, segment_ids=None) -> (x, layer_args)``,
    ``layer(layer_params, x, layer_args) -> x``, ``head(params, x) -> float32 logits``;
    ``layer_args(seq_len, segment_ids=None)``: the layers' arguments alone (the rotary tables,
    and with ``segment_ids`` [B, T] the document mask, positions restarting per document), so
    that a pipeline stage can rebuild them from the segment ids of the micro-batch it holds;
    ``prefix`` names the per-layer parameter subtrees (``h_`` / ``layers_``)."""

    prefix: str
    embed: Callable[..., tuple[jax.Array, tuple]]  # -> x [B, T, C], layer args
    layer: Callable[[Any, jax.Array, tuple], jax.Array]
    head: Callable[[Any, jax.Array], jax.Array]  # -> float32 logits
    layer_args: Callable[..., tuple]


def _embed_module(cfg: Any, n: int) -> nn.Embed:
    return nn.Embed(n, cfg.n_embd, dtype=cfg.compute_dtype, param_dtype=PARAM_DTYPE)


def _segments(seq_len: int, segment_ids: jax.Array | None) -> tuple[Any, Any]:
    """(positions, mask) of the model call with ``segment_ids`` (both None without): the
    models' own :func:`models.layers.attention_inputs`."""
    if segment_ids is None:
        return None, None
    return attention_inputs(jnp.zeros((segment_ids.shape[0], seq_len), jnp.int32),
                            segment_ids, None, None)


def model_parts(cfg: Any) -> ModelParts:
    """The model's forward as embeddings / layer / head, with the models' own modules (the same
    arithmetic as ``models.build(cfg)``; with ``segment_ids``, as its ``segment_ids=``)."""
    if isinstance(cfg, GPT2Config):

        def args(seq_len: int, segment_ids: jax.Array | None = None) -> tuple:
            _, mask = _segments(seq_len, segment_ids)
            return () if mask is None else (mask,)

        def embed(p: Any, tokens: jax.Array,
                  segment_ids: jax.Array | None = None) -> tuple[jax.Array, tuple]:
            T = tokens.shape[-1]
            positions, _ = _segments(T, segment_ids)
            wpe = _embed_module(cfg, cfg.block_size)
            x = _embed_module(cfg, cfg.padded_vocab_size).apply({"params": p["wte"]}, tokens)
            if positions is None:
                x = x + wpe.apply({"params": p["wpe"]}, jnp.arange(T))[None]
            else:
                x = x + wpe.apply({"params": p["wpe"]}, positions)
            return constrain(x, "batch", "seq", "embed"), args(T, segment_ids)

        def layer(p: Any, x: jax.Array, args: tuple) -> jax.Array:
            return Block(cfg).apply({"params": p}, x, True, None, *args)  # args: (mask,) or ()

        def head(p: Any, x: jax.Array) -> jax.Array:
            x = _layer_norm(cfg, "ln_f").apply({"params": p["ln_f"]}, x)
            logits = lm_logits(x, p["wte"]["embedding"], transposed=True)
            return constrain(mask_padded_vocab(logits, cfg.vocab_size), "batch", None, "vocab")

        return ModelParts("h_", embed, layer, head, args)

    def args_l(seq_len: int, segment_ids: jax.Array | None = None) -> tuple:
        positions, mask = _segments(seq_len, segment_ids)
        if positions is None:
            return rope_cos_sin(cfg, seq_len)
        return (*rope_cos_sin_at(cfg, positions), mask)

    def embed_l(p: Any, tokens: jax.Array,
                segment_ids: jax.Array | None = None) -> tuple[jax.Array, tuple]:
        x = _embed_module(cfg, cfg.padded_vocab_size).apply({"params": p["embed_tokens"]},
                                                            tokens)
        return constrain(x, "batch", "seq", "embed"), args_l(tokens.shape[-1], segment_ids)

    def layer_l(p: Any, x: jax.Array, args: tuple) -> jax.Array:
        # args: (cos, sin) or (cos, sin, mask)
        return DecoderLayer(cfg).apply({"params": p}, x, *args[:2], True, None, *args[2:])

    def head_l(p: Any, x: jax.Array) -> jax.Array:
        x = RMSNorm(cfg.rms_norm_eps, cfg.compute_dtype).apply({"params": p["norm"]}, x)
        if cfg.tie_embeddings:
            logits = lm_logits(x, p["embed_tokens"]["embedding"], transposed=True)
        else:
            logits = LMHead(cfg.padded_vocab_size).apply({"params": p["lm_head"]}, x)
        return constrain(mask_padded_vocab(logits, cfg.vocab_size), "batch", None, "vocab")

    return ModelParts("layers_", embed_l, layer_l, head_l, args_l)


def vocab_parallel_xent(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean token cross-entropy in float32 whose target logit is picked by a masked sum over
    the vocabulary instead of a gather, so that logits sharded on the vocabulary (tensor
    parallelism) are never gathered on one device. The same value as :func:`loss_fn` bit for
    bit (the sum adds exact zeros). A padded vocabulary's logits come -inf from the model
    (:func:`models.layers.mask_padded_vocab`): they add exact zeros to the normaliser and are
    never picked (targets are real ids)."""
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    picked = jnp.sum(jnp.where(vocab == y[..., None].astype(jnp.int32), logits, 0.0), axis=-1)
    return jnp.mean(logz - picked)


def param_axes(path: str, ndim: int) -> tuple[str | None, ...]:
    """The logical axes of the parameter at ``path`` (``/``-joined), from the ``PARAM_AXES``
    each model declares (GPT-2's and LLaMA-3's parameter names do not overlap)."""
    return lookup_axes((*gpt2.PARAM_AXES, *llama.PARAM_AXES), path, ndim)
