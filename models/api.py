"""Model-agnostic entry points: configs by name, build/init, counting, HF I/O, sampling."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Mapping
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import decode, gpt2, llama
from .common import resize_vocab as _resize_vocab
from .gpt2 import GPT2Config
from .hf_io import load_state_dict, save_state_dict
from .llama import LlamaConfig

Config = GPT2Config | LlamaConfig


@dataclasses.dataclass(frozen=True)
class Family:
    """A registered model family: everything the model-agnostic entry points dispatch on.

    ``impl`` is the family's module, which defines ``flops_per_token``, ``from_hf``, ``to_hf``,
    ``hf_config`` and ``config_from_hf`` for its config class."""

    name: str  # --model / get_config name
    config_cls: type  # the frozen config dataclass
    module_cls: type  # the flax.linen.Module built from a config
    sizes: Mapping[str, Any]  # named configurations
    hf_model_type: str  # transformers' config.json "model_type"
    impl: Any


#: The model families, by name: the one table ``get_config``, ``build``, ``config_from_hf`` and
#: the HF/FLOP functions dispatch on (by name, by config class, by HF ``model_type``).
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("gpt2", GPT2Config, gpt2.GPT2, gpt2.GPT2_CONFIGS, "gpt2", gpt2),
        Family("llama3", LlamaConfig, llama.Llama, llama.LLAMA_CONFIGS, "llama", llama),
    )
}

MODEL_SIZES: dict[str, tuple[str, ...]] = {n: tuple(f.sizes) for n, f in FAMILIES.items()}


def family(config: Config) -> Family:
    """The registered :class:`Family` of a config (``TypeError`` for anything else)."""
    for f in FAMILIES.values():
        if type(config) is f.config_cls:
            return f
    allowed = " or ".join(f.config_cls.__name__ for f in FAMILIES.values())
    raise TypeError(f"expected a {allowed}, got {type(config).__name__}")


def get_config(model: str, size: str = "tiny", **overrides: Any) -> Config:
    """A named configuration, with field overrides (validated).

    ``model`` in ``MODEL_SIZES`` ("gpt2", "llama3"); ``size`` in ``MODEL_SIZES[model]``;
    ``overrides`` are config fields, e.g. ``vocab_size=256, block_size=128, n_layer=2,
    dtype="bfloat16"``. Unknown names raise ``ValueError`` listing the allowed ones.
    """
    if model not in FAMILIES:
        raise ValueError(f"unknown model {model!r}; allowed: {sorted(FAMILIES)}")
    table = FAMILIES[model].sizes
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
    rngs={"dropout": key})`` maps int tokens [B, T] to float32 logits [B, T,
    padded_vocab_size] (the padding ids at -inf; ``vocab_size`` when ``vocab_pad_to=1``)."""
    return family(config).module_cls(config)


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


def num_params(params_or_config: Any) -> int:
    """Number of parameters: of a params pytree (arrays or ``jax.ShapeDtypeStruct`` leaves), or
    of a model config, exactly and without allocating (its :func:`param_shapes`).

    For a config this is HF's ``num_parameters()`` (a tied head counted once) of the padded
    vocabulary (``V`` = ``padded_vocab_size``; the exported model has ``vocab_size`` rows): GPT-2
    ``V·C + S·C + L·(12·C² + 13·C) + 2·C`` (S = block_size), LLaMA-3
    ``V·C·(1 if tied else 2) + L·(2·C·H·Q + 2·C·K·Q + 3·C·I + 2·C) + C``.
    """
    if any(type(params_or_config) is f.config_cls for f in FAMILIES.values()):
        return _count_config(params_or_config)
    leaves = jax.tree_util.tree_leaves(params_or_config)
    return int(sum(math.prod(x.shape) for x in leaves))


@functools.lru_cache(maxsize=64)
def _count_config(config: Config) -> int:
    return num_params(param_shapes(config))


#: Alias of :func:`num_params` (the name bench/bench_gpu.py and older code use for configs).
count_params = num_params


def pad_vocab(config: Config, params: Any) -> Any:
    """``params`` of a model with ``config``'s vocabulary but another padding (e.g. another
    run's ``vocab_pad_to``), laid out for ``config``: the embedding's and the head's rows cut or
    zero-padded to ``config.padded_vocab_size`` (the rows past ``vocab_size`` are padding, never
    read: their logits are -inf). Other parameters are returned as they are."""
    return _resize_vocab(params, family(config).impl.PARAM_AXES, config.padded_vocab_size)


def flops_per_token(config: Config, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token at context ``seq_len``:
    ``6·N + 12·L·H·Q·T`` (N = matmul weights incl. output head; see the model modules)."""
    return family(config).impl.flops_per_token(config, seq_len)


# --------------------------------------------------------------------------------------
# HuggingFace interop


def from_hf(config: Config, path_or_state_dict: str | os.PathLike | Mapping[str, Any]) -> dict:
    """Params from HF weights: a ``.safetensors`` file, a directory of them (sharded
    checkpoints), or a state dict {name: numpy/torch array}. Values are converted to float32;
    missing/unexpected keys and shape mismatches raise ``ValueError``, and so does a tied config
    given an ``lm_head.weight`` that differs from the embedding. Nothing is downloaded."""
    return family(config).impl.from_hf(config, load_state_dict(path_or_state_dict))


def to_hf(config: Config, params: Any) -> dict[str, np.ndarray]:
    """Params -> HF state dict {name: float32 numpy array} (transformers names and layouts)."""
    return family(config).impl.to_hf(config, params)


def hf_config(config: Config) -> dict[str, Any]:
    """The transformers ``config.json`` dict equivalent to ``config``."""
    return family(config).impl.hf_config(config)


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
    for f in FAMILIES.values():
        if model_type == f.hf_model_type:
            return f.impl.config_from_hf(d, **overrides)
    allowed = [f.hf_model_type for f in FAMILIES.values()]
    raise ValueError(f"unsupported model_type={model_type!r}; allowed: {allowed}")


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
    top_p: float | None = None,
    use_cache: bool | None = None,
) -> jax.Array:
    """Autoregressive sampling.

    ``prompt_tokens``: int [B, T0] (or [T0]); returns the prompt followed by ``max_new_tokens``
    sampled tokens, [B, T0 + max_new_tokens] (or 1-D). ``temperature=0`` is greedy decoding;
    otherwise the logits are divided by ``temperature``, ``top_k`` keeps the k most likely
    tokens, ``top_p`` the smallest most likely set of probability >= top_p (nucleus), and the
    token is drawn with ``jax.random.fold_in(rng, i)`` for the i-th new token: the same ``rng``
    gives the same tokens.

    ``use_cache=True``: KV-cache decoding (:func:`models.decode.generate_cached`): one forward
    over the prompt, then one token of work per new token; needs ``T0 + max_new_tokens <=
    block_size``. ``use_cache=False``: the cache-free loop, which re-runs the model on the last
    ``block_size`` tokens for every new token (positions restart at 0 in the window, as in
    nanoGPT), so it also continues past ``block_size``. None (default): the cache when it fits,
    else the window. Both compile once per (prompt bucket, ``max_new_tokens``), for any
    temperature / top-k / top-p, and give the same greedy tokens (the same logits, computed by
    different operations: equal up to float rounding).
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
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature!r} must be >= 0 (0 = greedy)")
    if top_k is not None and not 1 <= top_k <= config.vocab_size:
        raise ValueError(f"top_k={top_k!r} must be None or in [1, vocab_size]")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p!r} must be None or in (0, 1]")
    T0, n = prompt.shape[1], int(max_new_tokens)
    fits = T0 + n <= config.block_size
    if use_cache and not fits:
        raise ValueError(f"use_cache=True needs prompt length + max_new_tokens <= block_size="
                         f"{config.block_size}, got {T0} + {n}")
    if n == 0:
        return prompt[0] if squeeze else prompt
    knobs = (jnp.float32(temperature), jnp.int32(config.vocab_size if top_k is None else top_k),
             jnp.float32(1.0 if top_p is None else top_p))
    if fits and use_cache is not False:
        tb = decode.prompt_bucket(T0, config.block_size)
        padded = jnp.pad(prompt, ((0, 0), (0, tb - T0)))
        new = decode.generate_cached(config, params, padded, jnp.int32(T0), n, rng, *knobs)
        out = jnp.concatenate([prompt, new], axis=1)
    else:
        out = decode.generate_windowed(config, params, prompt, n, rng, *knobs)
    return out[0] if squeeze else out
