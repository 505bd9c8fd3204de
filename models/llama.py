"""LLaMA-3 in Flax (``flax.linen``), numerically matching HF ``LlamaForCausalLM``.

Architecture (Dubey et al. 2024): token embedding, ``n_layer`` pre-RMSNorm blocks
``x + attn(norm(x))``, ``x + mlp(norm(x))``, grouped-query attention (``n_kv_head`` key/value
heads shared by ``n_head / n_kv_head`` query heads each) with rotary position embeddings
(theta 500000, LLaMA-3.1 frequency scaling), SwiGLU MLP ``down(silu(gate(x)) * up(x))``, a final
RMSNorm and an output head, optionally tied to the embedding (LLaMA-3.2 1B/3B). No biases.

RoPE uses HF's "rotate_half" layout (the first half of each head's dims pairs with the second
half), so HF ``q_proj``/``k_proj`` weights load without any permutation; only the [out, in]
``nn.Linear`` weights are transposed into [in, out] Flax kernels.

Parameter tree (plain nested dicts of float32 arrays)::

    embed_tokens/embedding [V, C]
    layers_{i}/input_layernorm/scale [C]
    layers_{i}/self_attn/{q_proj [C, H·Q], k_proj [C, K·Q], v_proj [C, K·Q], o_proj [H·Q, C]}/kernel
    layers_{i}/post_attention_layernorm/scale [C]
    layers_{i}/mlp/{gate_proj [C, I], up_proj [C, I], down_proj [I, C]}/kernel
    norm/scale [C]
    lm_head/kernel [C, V]            (only when tie_embeddings=False)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .common import (
    PARAM_DTYPE,
    _fail,
    canonical_dtype,
    check_attn_impl,
    check_bool,
    check_divides,
    check_dropout,
    check_pos_float,
    check_pos_int,
    check_remat,
    padded_vocab_size,
    resize_vocab,
)
from .hf_io import (
    check_tied_head,
    convert_from_hf,
    convert_to_hf,
)
from .layers import (
    Dropout,
    KVCache,
    KVSlot,
    LMHead,
    attention_inputs,
    causal_attention,
    constrain,
    dense_dot_general,
    lm_logits,
    mask_padded_vocab,
    run_cached,
    run_layers,
    write_cache,
)

# --------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class RopeScaling:
    """LLaMA-3.1 RoPE frequency scaling (HF ``rope_type="llama3"``).

    Wavelengths shorter than ``original_max_position_embeddings / high_freq_factor`` are kept,
    those longer than ``original_max_position_embeddings / low_freq_factor`` are divided by
    ``factor`` and the band in between is interpolated smoothly.
    """

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self) -> None:
        cls = type(self).__name__
        check_pos_float(cls, "factor", self.factor)
        check_pos_float(cls, "low_freq_factor", self.low_freq_factor)
        check_pos_float(cls, "high_freq_factor", self.high_freq_factor)
        if self.high_freq_factor <= self.low_freq_factor:
            _fail(
                cls,
                "high_freq_factor",
                self.high_freq_factor,
                f"must be > low_freq_factor={self.low_freq_factor}",
            )
        check_pos_int(
            cls, "original_max_position_embeddings", self.original_max_position_embeddings
        )


@dataclass(frozen=True)
class LlamaConfig:
    """LLaMA-3 hyper-parameters (defaults: LLaMA-3.2 1B). Validated at construction.

    ``block_size`` is the maximum context (HF ``max_position_embeddings``). ``rope_scaling`` is
    None (plain RoPE) or a :class:`RopeScaling` (a dict is converted). ``dtype`` is the
    computation dtype (parameters always float32; logits float32). ``dropout`` applies to the
    attention probabilities (HF ``attention_dropout``) when ``deterministic=False``.
    """

    model_type: ClassVar[str] = "llama3"

    vocab_size: int = 128256
    block_size: int = 131072
    n_layer: int = 16
    n_head: int = 32
    n_kv_head: int = 8
    n_embd: int = 2048
    intermediate_size: int = 8192
    rope_theta: float = 500000.0
    rope_scaling: RopeScaling | None = RopeScaling(factor=32.0)
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    dropout: float = 0.0
    dtype: str = "float32"
    attn_implementation: str | None = None
    # activation recompute (models.layers.remat_segments): "none" | "full" | "selective"
    remat: str = "none"
    remat_method: str = "uniform"
    remat_num_layers: int = 1
    remat_chunks: int = 1  # model chunks (pipeline stages x virtual stages) for "block"
    # embedding/head rows rounded up to a multiple of this (padded_vocab_size); 1 = none
    vocab_pad_to: int = 1

    def __post_init__(self) -> None:
        cls = type(self).__name__
        for name in (
            "vocab_size",
            "vocab_pad_to",
            "block_size",
            "n_layer",
            "n_head",
            "n_kv_head",
            "n_embd",
            "intermediate_size",
        ):
            check_pos_int(cls, name, getattr(self, name))
        check_divides(cls, "n_head", self.n_head, "n_embd", self.n_embd)
        check_divides(cls, "n_kv_head", self.n_kv_head, "n_head", self.n_head)
        if self.head_dim % 2:
            _fail(cls, "n_embd", self.n_embd, "n_embd / n_head (head_dim) must be even for RoPE")
        check_pos_float(cls, "rope_theta", self.rope_theta)
        check_pos_float(cls, "rms_norm_eps", self.rms_norm_eps)
        check_bool(cls, "tie_embeddings", self.tie_embeddings)
        check_dropout(cls, self.dropout)
        check_attn_impl(cls, self.attn_implementation)
        check_remat(cls, self)
        rs = self.rope_scaling
        if isinstance(rs, Mapping):
            rs = RopeScaling(**{k: v for k, v in rs.items() if k != "rope_type"})
            object.__setattr__(self, "rope_scaling", rs)
        if rs is not None and not isinstance(rs, RopeScaling):
            _fail(cls, "rope_scaling", rs, "must be None, a RopeScaling or a dict of its fields")
        object.__setattr__(self, "dtype", canonical_dtype(cls, self.dtype))

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        """The embedding's and the head's rows (:func:`models.common.padded_vocab_size`)."""
        return padded_vocab_size(self.vocab_size, self.vocab_pad_to)

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)


LLAMA_CONFIGS: dict[str, LlamaConfig] = {
    # for tests: GQA 4:2, rope scaling with all three frequency bands active at this head_dim
    "tiny": LlamaConfig(
        vocab_size=256,
        block_size=128,
        n_layer=2,
        n_head=4,
        n_kv_head=2,
        n_embd=64,
        intermediate_size=160,
        rope_scaling=RopeScaling(original_max_position_embeddings=64),
        tie_embeddings=False,
    ),
    # the trainer's default run and CPU benchmarks (GPT-2 tokenizer vocabulary)
    "small": LlamaConfig(
        vocab_size=50257,
        block_size=256,
        n_layer=6,
        n_head=6,
        n_kv_head=2,
        n_embd=384,
        intermediate_size=1024,
        rope_scaling=None,
        tie_embeddings=True,
    ),
    # published shapes (meta-llama/Llama-3.2-1B, Llama-3.2-3B, Llama-3.1-8B)
    "1b": LlamaConfig(),
    "3b": LlamaConfig(n_layer=28, n_head=24, n_embd=3072),
    "8b": LlamaConfig(
        n_layer=32,
        n_head=32,
        n_embd=4096,
        intermediate_size=14336,
        rope_scaling=RopeScaling(factor=8.0),
        tie_embeddings=False,
    ),
}

# --------------------------------------------------------------------------------------
# rotary embeddings


def rope_inv_freq(config: LlamaConfig) -> np.ndarray:
    """Inverse frequencies [head_dim / 2] (float32), with LLaMA-3.1 scaling if configured.

    Same arithmetic as HF ``_compute_default_rope_parameters`` / ``_compute_llama3_parameters``.
    """
    dim = config.head_dim
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (1.0 / np.power(np.float32(config.rope_theta), exponent)).astype(np.float32)
    rs = config.rope_scaling
    if rs is None:
        return inv_freq
    old_len = rs.original_max_position_embeddings
    low_freq_wavelen = old_len / rs.low_freq_factor
    high_freq_wavelen = old_len / rs.high_freq_factor
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / rs.factor, inv_freq)
    smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor)
    smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_cos_sin(config: LlamaConfig, seq_len: int) -> tuple[jax.Array, jax.Array]:
    """cos, sin tables [T, head_dim] (float32 math, cast to the compute dtype)."""
    inv_freq = jnp.asarray(rope_inv_freq(config))
    freqs = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    dt = config.compute_dtype
    return jnp.cos(emb).astype(dt), jnp.sin(emb).astype(dt)


def rope_cos_sin_at(config: LlamaConfig, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin tables [B, T, head_dim] at int ``positions`` [B, T] (document masking, KV-cache
    decoding): the same float32 products as :func:`rope_cos_sin` at those positions."""
    inv_freq = jnp.asarray(rope_inv_freq(config))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    dt = config.compute_dtype
    return jnp.cos(emb).astype(dt), jnp.sin(emb).astype(dt)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, T, N, Q] rotated in the "rotate_half" layout: x·cos + rotate_half(x)·sin.

    Computed per half, ``[x1·c - x2·s, x2·c + x1·s]`` (``cos``/``sin`` repeat their first half):
    the same operations on the same values, so the same bits as HF's formula. Written this way
    because with ``rotate_half`` materialised as a concatenation XLA:CPU emitted the gradient
    of the recomputed rotation (activation recompute) with other code than without recompute,
    a few ULPs apart; per half, recompute is bit-identical (docs/parallelism.md, "Recompute").
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    if cos.ndim == 3:  # per-sequence positions [B, T, Q] (rope_cos_sin_at)
        c, s = cos[:, :, None, :half], sin[:, :, None, :half]
    else:
        c, s = cos[None, :, None, :half], sin[None, :, None, :half]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


# --------------------------------------------------------------------------------------
# model

_INIT_STD = 0.02


def _dense(cfg: LlamaConfig, features: int, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=False,
        dtype=cfg.compute_dtype,
        param_dtype=PARAM_DTYPE,
        kernel_init=nn.initializers.normal(_INIT_STD),
        dot_general=dense_dot_general,
        name=name,
    )


class RMSNorm(nn.Module):
    """RMSNorm with a learned gain ``scale``: statistics in float32, output in compute dtype."""

    eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), PARAM_DTYPE)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return scale.astype(self.dtype) * x32.astype(self.dtype)


class Attention(nn.Module):
    config: LlamaConfig

    @nn.compact
    def __call__(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, deterministic: bool,
        dropout_rate: Any = None, mask: jax.Array | None = None, kv: KVSlot | None = None,
    ) -> Any:
        """``mask``/``kv``: as in GPT-2's attention (document mask, KV cache slot; with ``kv``
        the result is ``(y, (k, v))``)."""
        cfg = self.config
        rate = cfg.dropout if dropout_rate is None else dropout_rate
        B, T, _ = x.shape
        Q = cfg.head_dim
        q = _dense(cfg, cfg.n_head * Q, "q_proj")(x).reshape(B, T, cfg.n_head, Q)
        k = _dense(cfg, cfg.n_kv_head * Q, "k_proj")(x).reshape(B, T, cfg.n_kv_head, Q)
        v = _dense(cfg, cfg.n_kv_head * Q, "v_proj")(x).reshape(B, T, cfg.n_kv_head, Q)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = constrain(q, "batch", None, "heads", None)
        k, v = (constrain(t, "batch", None, "kv_heads", None) for t in (k, v))
        if kv is not None:
            k, v = write_cache(kv, k, v)
        y = causal_attention(
            q,
            k,
            v,
            dropout=Dropout(rate) if dropout_rate is not None or rate > 0 else None,
            deterministic=deterministic,
            implementation=cfg.attn_implementation,
            mask=mask,
        )
        y = _dense(cfg, cfg.n_embd, "o_proj")(y.reshape(B, T, cfg.n_head * Q))
        return y if kv is None else (y, (k, v))


class MLP(nn.Module):
    config: LlamaConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        gate = _dense(cfg, cfg.intermediate_size, "gate_proj")(x)
        up = _dense(cfg, cfg.intermediate_size, "up_proj")(x)
        h = constrain(jax.nn.silu(gate) * up, "batch", None, "mlp")
        return _dense(cfg, cfg.n_embd, "down_proj")(h)


class DecoderLayer(nn.Module):
    config: LlamaConfig

    @nn.compact
    def __call__(
        self, x: jax.Array, cos: jax.Array, sin: jax.Array, deterministic: bool,
        dropout_rate: Any = None, mask: jax.Array | None = None, kv: KVSlot | None = None,
    ) -> Any:
        """With ``kv`` (a KV cache slot), returns ``(x, (k, v))``."""
        cfg = self.config
        dt = cfg.compute_dtype
        h = RMSNorm(cfg.rms_norm_eps, dt, name="input_layernorm")(x)
        a = Attention(cfg, name="self_attn")(h, cos, sin, deterministic, dropout_rate, mask, kv)
        if kv is not None:
            a, kv = a
        x = x + a
        x = constrain(x, "batch", "seq", "embed")  # the residual stream (sequence-parallel)
        h = RMSNorm(cfg.rms_norm_eps, dt, name="post_attention_layernorm")(x)
        x = constrain(x + MLP(cfg, name="mlp")(h), "batch", "seq", "embed")
        return x if kv is None else (x, kv)


class Llama(nn.Module):
    """LLaMA-3 language model: int tokens [B, T] -> float32 logits [B, T, padded_vocab_size]
    (the padding ids at -inf, :func:`models.layers.mask_padded_vocab`)."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = True,
                 dropout_rate: Any = None, *, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None, cache: KVCache | None = None) -> Any:
        """``dropout_rate`` (a float or a traced scalar) overrides ``config.dropout``.

        ``segment_ids`` (int [B, T]): document masking, each token attends only to earlier
        tokens of its own segment, and the rotary positions restart at 0 in each segment
        (unless ``positions`` [B, T] is given). ``cache`` (:func:`models.decode.init_cache`):
        returns ``(logits, new_cache)``. All None: the plain causal model."""
        cfg = self.config
        seq_len = tokens.shape[1]
        if seq_len > cfg.block_size:
            raise ValueError(f"sequence length {seq_len} exceeds block_size={cfg.block_size}")
        embed = nn.Embed(
            cfg.padded_vocab_size,
            cfg.n_embd,
            dtype=cfg.compute_dtype,
            param_dtype=PARAM_DTYPE,
            embedding_init=nn.initializers.normal(_INIT_STD),
            name="embed_tokens",
        )
        x = constrain(embed(tokens), "batch", "seq", "embed")
        positions, mask = attention_inputs(tokens, segment_ids, positions, cache)
        if positions is None:
            cos, sin = rope_cos_sin(cfg, seq_len)
        else:
            cos, sin = rope_cos_sin_at(cfg, positions)
        if cache is not None:
            x, cache = run_cached(cfg, lambda i: DecoderLayer(cfg, name=f"layers_{i}"), x, cache,
                                  lambda layer, x, kv: layer(x, cos, sin, True, None, mask, kv))
        else:
            x = run_layers(self, lambda i: functools.partial(
                DecoderLayer(cfg, name=f"layers_{i}"), dropout_rate=dropout_rate, mask=mask),
                x, (cos, sin, deterministic), cfg)
        x = RMSNorm(cfg.rms_norm_eps, cfg.compute_dtype, name="norm")(x)
        if cfg.tie_embeddings:
            logits = lm_logits(x, embed.embedding, transposed=True)
        else:
            logits = LMHead(cfg.padded_vocab_size, _INIT_STD, name="lm_head")(x)
        logits = constrain(mask_padded_vocab(logits, cfg.vocab_size), "batch", None, "vocab")
        return logits if cache is None else (logits, cache)


# --------------------------------------------------------------------------------------
# FLOPs


def flops_per_token(config: LlamaConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), PaLM appendix B style::

        6·N + 12·L·H·Q·T

    N = weights that take part in matmuls = L·(2·C·H·Q + 2·C·K·Q + 3·C·I) (q/o, k/v with K kv
    heads, gate/up/down) + V·C (output head, tied or not; V the padded vocabulary); the
    embedding lookup and RMSNorm gains are excluded. L = n_layer, H = n_head, Q = head_dim,
    T = seq_len: the attention term counts QKᵀ and A·V (2·2·T·H·Q forward FLOPs per token and
    layer, ×3 for backward), GQA does not change it, the causal mask is not discounted.
    RoPE/softmax/norm element-wise work is ignored.
    """
    C, L, Q = config.n_embd, config.n_layer, config.head_dim
    per_layer = 2 * C * config.n_head * Q + 2 * C * config.n_kv_head * Q
    per_layer += 3 * C * config.intermediate_size
    n_matmul = L * per_layer + config.padded_vocab_size * C
    return float(6 * n_matmul + 12 * L * config.n_head * Q * seq_len)


# --------------------------------------------------------------------------------------
# HuggingFace interop

_IGNORED_HF_KEYS = ("rotary_emb.inv_freq",)


def hf_mapping(config: LlamaConfig) -> list[tuple[str, tuple[str, ...], bool]]:
    """Rows (HF name, params path, transpose?); ``nn.Linear`` [out, in] weights are transposed."""
    rows = [("model.embed_tokens.weight", ("embed_tokens", "embedding"), False)]
    for i in range(config.n_layer):
        hf, fx = f"model.layers.{i}.", f"layers_{i}"
        rows.append((f"{hf}input_layernorm.weight", (fx, "input_layernorm", "scale"), False))
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            rows.append((f"{hf}self_attn.{p}.weight", (fx, "self_attn", p, "kernel"), True))
        post = "post_attention_layernorm"
        rows.append((f"{hf}{post}.weight", (fx, post, "scale"), False))
        for p in ("gate_proj", "up_proj", "down_proj"):
            rows.append((f"{hf}mlp.{p}.weight", (fx, "mlp", p, "kernel"), True))
    rows.append(("model.norm.weight", ("norm", "scale"), False))
    if not config.tie_embeddings:
        rows.append(("lm_head.weight", ("lm_head", "kernel"), True))
    return rows


def from_hf(config: LlamaConfig, state_dict: Mapping[str, Any]) -> dict:
    """HF LLaMA state dict -> params. With tied embeddings an ``lm_head.weight`` equal to the
    embedding is ignored; a different one raises ``ValueError`` (use ``tie_embeddings=False``)."""
    if config.tie_embeddings:
        check_tied_head("Llama", state_dict, "lm_head.weight", "model.embed_tokens.weight",
                        "load it with tie_embeddings=False (config_from_hf reads "
                        "tie_word_embeddings)")
    ignore = _IGNORED_HF_KEYS + (("lm_head.weight",) if config.tie_embeddings else ())
    real = dataclasses.replace(config, vocab_pad_to=1)  # the checkpoint's rows; padding added
    expected = jax.eval_shape(Llama(real).init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
    params = convert_from_hf("Llama", hf_mapping(config), state_dict, expected["params"], ignore)
    return resize_vocab(params, PARAM_AXES, config.padded_vocab_size)


def to_hf(config: LlamaConfig, params: Any) -> dict[str, np.ndarray]:
    """params -> HF ``LlamaForCausalLM`` state dict (float32 numpy; no ``lm_head.weight``
    when tied, as ``save_pretrained`` writes it); the padding rows dropped."""
    return convert_to_hf(hf_mapping(config), resize_vocab(params, PARAM_AXES, config.vocab_size))


def hf_config(config: LlamaConfig) -> dict[str, Any]:
    """A transformers ``LlamaConfig`` dict (``config.json``) for this config."""
    rs = config.rope_scaling
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None
        if rs is None
        else {
            "rope_type": "llama3",
            "factor": rs.factor,
            "low_freq_factor": rs.low_freq_factor,
            "high_freq_factor": rs.high_freq_factor,
            "original_max_position_embeddings": rs.original_max_position_embeddings,
        },
        "tie_word_embeddings": config.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": config.dropout,
        "initializer_range": _INIT_STD,
    }


def config_from_hf(d: Mapping[str, Any], **overrides: Any) -> LlamaConfig:
    """LlamaConfig from a transformers LLaMA ``config.json`` dict (+ field overrides).

    Understands both the transformers 4.x (``rope_theta`` + ``rope_scaling``) and 5.x
    (``rope_parameters``) spellings.
    """
    if d.get("hidden_act", "silu") != "silu" or d.get("attention_bias") or d.get("mlp_bias"):
        raise ValueError("unsupported LLaMA variant (need silu, no attention/mlp bias)")
    n_embd, n_head = d["hidden_size"], d["num_attention_heads"]
    if d.get("head_dim") not in (None, n_embd // n_head):
        raise ValueError(f"unsupported LLaMA head_dim={d['head_dim']} != hidden/heads")
    rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
    theta = d.get("rope_theta", rope.get("rope_theta", 10000.0))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "llama3":
        scaling = RopeScaling(
            factor=rope["factor"],
            low_freq_factor=rope["low_freq_factor"],
            high_freq_factor=rope["high_freq_factor"],
            original_max_position_embeddings=rope["original_max_position_embeddings"],
        )
    elif rope_type == "default":
        scaling = None
    else:
        raise ValueError(f"unsupported rope_type={rope_type!r} (need 'default' or 'llama3')")
    kw = dict(
        vocab_size=d["vocab_size"],
        block_size=d.get("max_position_embeddings", 2048),
        n_layer=d["num_hidden_layers"],
        n_head=n_head,
        n_kv_head=d.get("num_key_value_heads") or n_head,
        n_embd=n_embd,
        intermediate_size=d["intermediate_size"],
        rope_theta=float(theta),
        rope_scaling=scaling,
        rms_norm_eps=d.get("rms_norm_eps", 1e-6),
        tie_embeddings=d.get("tie_word_embeddings", False),
    )
    kw.update(overrides)
    return LlamaConfig(**kw)


#: parameter path (regular expression, searched in the ``/``-joined path) -> the logical axis
#: of each dimension, read by the trainer's sharding table (``train.parallel.shardings``):
#: Megatron's column-parallel QKV and MLP-in, row-parallel projections, vocabulary-parallel
#: embedding. First match wins; a path matching no row has no named axis (replicated).
PARAM_AXES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"embed_tokens/embedding$", ("vocab", "embed")),
    (r"lm_head/kernel$", ("embed", "vocab")),
    (r"self_attn/q_proj/kernel$", ("embed", "heads")),
    (r"self_attn/(k|v)_proj/kernel$", ("embed", "kv_heads")),
    (r"self_attn/o_proj/kernel$", ("heads", "embed")),
    (r"mlp/(gate|up)_proj/kernel$", ("embed", "mlp")),
    (r"mlp/down_proj/kernel$", ("mlp", "embed")),
    (r"(bias|scale)$", ("embed",)),
)
