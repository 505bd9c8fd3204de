"""Model-agnostic entry points: configs by name, build/init, counting, HF I/O, sampling."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import gpt2, llama
from .common import load_state_dict, save_state_dict
from .gpt2 import GPT2, GPT2_CONFIGS, GPT2Config
from .llama import LLAMA_CONFIGS, Llama, LlamaConfig

Config = GPT2Config | LlamaConfig

_TABLES: dict[str, dict[str, Any]] = {"gpt2": GPT2_CONFIGS, "llama3": LLAMA_CONFIGS}
_MODULES = {GPT2Config: gpt2, LlamaConfig: llama}

MODEL_SIZES: dict[str, tuple[str, ...]] = {m: tuple(t) for m, t in _TABLES.items()}


def _impl(config: Config) -> Any:
    try:
        return _MODULES[type(config)]
    except KeyError:
        name = type(config).__name__
        raise TypeError(f"expected a GPT2Config or LlamaConfig, got {name}") from None


def get_config(model: str, size: str = "tiny", **overrides: Any) -> Config:
    """A named configuration, with field overrides (validated).

    ``model`` in ``MODEL_SIZES`` ("gpt2", "llama3"); ``size`` in ``MODEL_SIZES[model]``;
    ``overrides`` are config fields, e.g. ``vocab_size=256, block_size=128, n_layer=2,
    dtype="bfloat16"``. Unknown names raise ``ValueError`` listing the allowed ones.
    """
    if model not in _TABLES:
        raise ValueError(f"unknown model {model!r}; allowed: {sorted(_TABLES)}")
    table = _TABLES[model]
    if size not in table:
        raise ValueError(f"unknown {model} size {size!r}; allowed: {list(table)}")
    base = table[size]
    fields = [f.name for f in dataclasses.fields(base)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown {type(base).__name__} field(s) {unknown}; allowed: {fields}")
    return dataclasses.replace(base, **overrides)


def build(config: Config) -> nn.Module:
    """The Flax module for ``config``: ``apply({"params": p}, tokens, deterministic=True,
    rngs={"dropout": key})`` maps int tokens [B, T] to float32 logits [B, T, vocab_size]."""
    if isinstance(config, GPT2Config):
        return GPT2(config)
    if isinstance(config, LlamaConfig):
        return Llama(config)
    raise TypeError(f"expected a GPT2Config or LlamaConfig, got {type(config).__name__}")


def init_params(config: Config, rng: jax.Array) -> dict:
    """Randomly initialised float32 parameters (a plain nested dict)."""
    return _init_params(config, rng)


@partial(jax.jit, static_argnames="config")
def _init_params(config: Config, rng: jax.Array) -> dict:
    tokens = jnp.zeros((1, min(config.block_size, 8)), jnp.int32)
    return build(config).init(rng, tokens)["params"]


def param_shapes(config: Config) -> dict:
    """The params pytree as ``jax.ShapeDtypeStruct`` leaves, without allocating."""
    tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    return jax.eval_shape(build(config).init, jax.random.key(0), tokens)["params"]


def count_params(config: Config) -> int:
    """Exact number of parameters for ``config``, computed without allocating."""
    return _impl(config).count_params(config)


def flops_per_token(config: Config, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token at context ``seq_len``:
    ``6·N + 12·L·H·Q·T`` (N = matmul weights incl. output head; see the model modules)."""
    return _impl(config).flops_per_token(config, seq_len)


# --------------------------------------------------------------------------------------
# HuggingFace interop


def from_hf(config: Config, path_or_state_dict: str | os.PathLike | Mapping[str, Any]) -> dict:
    """Params from HF weights: a ``.safetensors`` file, a directory of them (sharded
    checkpoints), or a state dict {name: numpy/torch array}. Values are converted to float32;
    missing/unexpected keys and shape mismatches raise ``ValueError``, and so does a tied config
    given an ``lm_head.weight`` that differs from the embedding. Nothing is downloaded."""
    return _impl(config).from_hf(config, load_state_dict(path_or_state_dict))


def to_hf(config: Config, params: Any) -> dict[str, np.ndarray]:
    """Params -> HF state dict {name: float32 numpy array} (transformers names and layouts)."""
    return _impl(config).to_hf(config, params)


def hf_config(config: Config) -> dict[str, Any]:
    """The transformers ``config.json`` dict equivalent to ``config``."""
    return _impl(config).hf_config(config)


def save_hf(config: Config, params: Any, path: str | os.PathLike) -> str:
    """Write params in HF format. ``path`` ending in ``.safetensors`` -> that file; otherwise
    a directory with ``model.safetensors`` + ``config.json`` (loadable by transformers'
    ``from_pretrained``). Returns the safetensors file path."""
    return save_state_dict(path, to_hf(config, params), hf_config(config))


def config_from_hf(path_or_dict: str | os.PathLike | Mapping[str, Any], **overrides: Any) -> Config:
    """Our config from a transformers ``config.json`` (dict, file, or checkpoint directory)."""
    if isinstance(path_or_dict, Mapping):
        d = dict(path_or_dict)
    else:
        path = os.fspath(path_or_dict)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        with open(path) as f:
            d = json.load(f)
    model_type = d.get("model_type")
    if model_type == "gpt2":
        return gpt2.config_from_hf(d, **overrides)
    if model_type == "llama":
        return llama.config_from_hf(d, **overrides)
    raise ValueError(f"unsupported model_type={model_type!r}; allowed: ['gpt2', 'llama']")


# --------------------------------------------------------------------------------------
# sampling


def generate(
    config: Config,
    params: Any,
    prompt_tokens: Any,
    max_new_tokens: int,
    rng: jax.Array,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> jax.Array:
    """Autoregressive sampling (no KV cache: the model is re-run on the window each step).

    ``prompt_tokens``: int [B, T0] (or [T0]); returns the prompt followed by ``max_new_tokens``
    sampled tokens, [B, T0 + max_new_tokens] (or 1-D). The context is cropped to the last
    ``block_size`` tokens (positions restart at 0 in the window, as in nanoGPT).
    ``temperature=0`` is greedy decoding; ``top_k`` keeps the k most likely tokens.
    One jit-compiled loop with static shapes: the window is padded on the right, which causal
    attention makes invisible to the position that is read.
    """
    prompt = jnp.asarray(prompt_tokens, dtype=jnp.int32)
    squeeze = prompt.ndim == 1
    if squeeze:
        prompt = prompt[None]
    if prompt.ndim != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt_tokens must be [B, T0] with T0 >= 1, got {prompt.shape}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int | np.integer):
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an int >= 0")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an int >= 0")
    if temperature < 0:
        raise ValueError(f"temperature={temperature!r} must be >= 0 (0 = greedy)")
    if top_k is not None and not 1 <= top_k <= config.vocab_size:
        raise ValueError(f"top_k={top_k!r} must be None or in [1, vocab_size]")
    if max_new_tokens == 0:
        out = prompt
    else:
        out = _generate(
            config,
            params,
            prompt,
            int(max_new_tokens),
            rng,
            jnp.float32(temperature),
            jnp.int32(config.vocab_size if top_k is None else top_k),
        )
    return out[0] if squeeze else out


@partial(jax.jit, static_argnames=("config", "max_new_tokens"))
def _generate(
    config: Config,
    params: Any,
    prompt: jax.Array,
    max_new_tokens: int,
    rng: jax.Array,
    temperature: jax.Array,
    top_k: jax.Array,
) -> jax.Array:
    # temperature and top_k are traced: changing them does not recompile
    model = build(config)
    B, T0 = prompt.shape
    total = T0 + max_new_tokens
    W = min(config.block_size, total)
    buf = jnp.zeros((B, total), jnp.int32).at[:, :T0].set(prompt)

    def step(i: jax.Array, buf: jax.Array) -> jax.Array:
        cur = T0 + i  # number of valid tokens; the next one goes at index cur
        start = jnp.maximum(cur - W, 0)
        window = jax.lax.dynamic_slice(buf, (0, start), (B, W))
        logits = model.apply({"params": params}, window, deterministic=True)
        logits = jax.lax.dynamic_index_in_dim(logits, cur - 1 - start, axis=1, keepdims=False)
        # top-k: keep logits >= the k-th largest
        kth = jnp.take(jnp.sort(logits, axis=-1), config.vocab_size - top_k, axis=-1)
        filtered = jnp.where(logits < kth[:, None], -jnp.inf, logits)
        scaled = filtered / jnp.where(temperature > 0, temperature, 1.0)
        sampled = jax.random.categorical(jax.random.fold_in(rng, i), scaled, axis=-1)
        nxt = jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1))
        return jax.lax.dynamic_update_slice(buf, nxt.astype(jnp.int32)[:, None], (0, cur))

    return jax.lax.fori_loop(0, max_new_tokens, step, buf)
