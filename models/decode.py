"""Autoregressive decoding: a KV-cache generator (prefill once, then one token of work per new
token), the cache-free windowed generator it replaces, and the token sampler they share
(temperature, top-k, top-p).

Both generators are one jit-compiled loop with static shapes. The cached one pads the prompt on
the right to a length bucket (:func:`prompt_bucket`) and keeps the true length traced, so one
compile serves every prompt length of a bucket for a given ``max_new_tokens`` (and any
temperature / top-k / top-p, which are traced too).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from .gpt2 import GPT2, GPT2Config
from .layers import KVCache
from .llama import Llama

#: the smallest prompt bucket (shorter prompts are padded to it)
MIN_BUCKET = 16



def _module(config: Any) -> Any:
    """The Flax module of ``config`` (``models.build``'s dispatch, from below ``api``)."""
    return GPT2(config) if isinstance(config, GPT2Config) else Llama(config)

def prompt_bucket(length: int, block_size: int) -> int:
    """The padded prompt length: the next power of two >= ``length`` (at least
    :data:`MIN_BUCKET`), capped at ``block_size``."""
    b = MIN_BUCKET
    while b < length:
        b *= 2
    return min(b, block_size)


def kv_heads(config: Any) -> int:
    """Number of key/value heads (GPT-2: every head; LLaMA-3: ``n_kv_head``)."""
    return getattr(config, "n_kv_head", config.n_head)


def init_cache(config: Any, batch: int, length: int) -> KVCache:
    """An empty :class:`~models.layers.KVCache` of ``length`` slots per layer, index 0."""
    shape = (batch, length, kv_heads(config), config.head_dim)
    z = jnp.zeros(shape, config.compute_dtype)
    return KVCache(tuple((z, z) for _ in range(config.n_layer)), jnp.int32(0))


def sample_logits(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_k: jax.Array,
                  top_p: jax.Array) -> jax.Array:
    """Next tokens int32 [B] from float32 logits [B, V].

    ``temperature == 0``: argmax (greedy). Otherwise, in HF's order: logits / temperature, keep
    the ``top_k`` largest, keep the smallest set of most likely tokens whose probability
    reaches ``top_p`` (the token that crosses it included; at least one token), then sample.
    All three are traced scalars (changing them does not recompile). The generators pass the
    real vocabulary's logits (a padded model's padding ids cut off), so the samples are those
    of the unpadded model, key for key."""
    V = logits.shape[-1]

    def sample(logits: jax.Array) -> jax.Array:
        scaled = logits / temperature

        def nucleus(scaled: jax.Array) -> jax.Array:
            srt = jnp.sort(scaled, axis=-1)  # ascending
            kth = jnp.take(srt, V - top_k, axis=-1)[:, None]
            srt = jnp.where(srt < kth, -jnp.inf, srt)
            cum = jnp.cumsum(jax.nn.softmax(srt, axis=-1), axis=-1)
            # HF TopPLogitsWarper: drop the sorted prefix whose mass is <= 1 - top_p, keep the
            # largest token always; ``keep`` is monotone, so the kept set is a suffix
            drop = (cum <= 1.0 - top_p).at[:, -1].set(False)
            first = jnp.argmin(drop, axis=-1)  # index of the first kept entry
            floor = jnp.maximum(jnp.take_along_axis(srt, first[:, None], axis=-1), kth)
            return jnp.where(scaled < floor, -jnp.inf, scaled)

        filtered = jax.lax.cond((top_k < V) | (top_p < 1.0), nucleus, lambda s: s, scaled)
        return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)

    def greedy(logits: jax.Array) -> jax.Array:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    return jax.lax.cond(temperature > 0, sample, greedy, logits)


@partial(jax.jit, static_argnames=("config", "max_new_tokens"))
def generate_cached(config: Any, params: Any, prompt: jax.Array, length: jax.Array,
                    max_new_tokens: int, rng: jax.Array, temperature: jax.Array,
                    top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """The ``max_new_tokens`` tokens [B, N] after the first ``length`` tokens of ``prompt``
    [B, Tb] (padded on the right to its bucket); needs ``length + N <= block_size``.

    Prefill: one forward over the padded prompt fills the cache (the padding's keys land in
    slots >= ``length``, which the decode steps overwrite before any query may see them: a
    query at position p attends slots <= p). Then each step runs the model on one token."""
    model = _module(config)
    B, Tb = prompt.shape
    N = max_new_tokens
    cache = init_cache(config, B, min(Tb + N, config.block_size))
    logits, cache = model.apply({"params": params}, prompt, cache=cache)
    V = config.vocab_size  # the real vocabulary: padding ids are never sampled
    last = jax.lax.dynamic_index_in_dim(logits, length - 1, axis=1, keepdims=False)[:, :V]
    cache = cache._replace(index=jnp.asarray(length, jnp.int32))

    def pick(i: jax.Array, logits: jax.Array) -> jax.Array:
        return sample_logits(logits, jax.random.fold_in(rng, i), temperature, top_k, top_p)

    def step(i: jax.Array, carry: tuple) -> tuple:
        cache, last, out = carry
        tok = pick(i, last)
        logits, cache = model.apply({"params": params}, tok[:, None], cache=cache)
        return cache, logits[:, 0, :V], out.at[:, i].set(tok)

    out = jnp.zeros((B, N), jnp.int32)
    _, last, out = jax.lax.fori_loop(0, N - 1, step, (cache, last, out))
    return out.at[:, N - 1].set(pick(jnp.int32(N - 1), last))


@partial(jax.jit, static_argnames=("config", "max_new_tokens"))
def generate_windowed(config: Any, params: Any, prompt: jax.Array, max_new_tokens: int,
                      rng: jax.Array, temperature: jax.Array, top_k: jax.Array,
                      top_p: jax.Array) -> jax.Array:
    """Cache-free sampling: the model is re-run on the last ``block_size`` tokens for every
    new token (positions restart at 0 in the window, as in nanoGPT). Returns the prompt and
    the new tokens [B, T0 + N]. The window is padded on the right, which causal attention makes
    invisible to the position that is read."""
    model = _module(config)
    B, T0 = prompt.shape
    total = T0 + max_new_tokens
    W = min(config.block_size, total)
    buf = jnp.zeros((B, total), jnp.int32).at[:, :T0].set(prompt)

    def step(i: jax.Array, buf: jax.Array) -> jax.Array:
        cur = T0 + i  # number of valid tokens; the next one goes at index cur
        start = jnp.maximum(cur - W, 0)
        window = jax.lax.dynamic_slice(buf, (0, start), (B, W))
        logits = model.apply({"params": params}, window, deterministic=True)
        logits = jax.lax.dynamic_index_in_dim(logits, cur - 1 - start, axis=1,
                                              keepdims=False)[:, :config.vocab_size]
        nxt = sample_logits(logits, jax.random.fold_in(rng, i), temperature, top_k, top_p)
        return jax.lax.dynamic_update_slice(buf, nxt[:, None], (0, cur))

    return jax.lax.fori_loop(0, max_new_tokens, step, buf)
