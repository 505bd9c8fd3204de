"""GPT-2 in Flax (``flax.linen``), numerically matching HF ``GPT2LMHeadModel``.

Architecture (Radford et al. 2019, as in HF/nanoGPT): learned token + position embeddings,
``n_layer`` pre-LayerNorm blocks ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))``, causal multi-head
self-attention, MLP ``c_proj(gelu_tanh(c_fc(x)))`` of width 4·C, a final LayerNorm, and an output
head tied to the token embedding (or, with ``tie_embeddings=False``, a separate ``lm_head``).
Biases everywhere, LayerNorm eps 1e-5.

Parameter tree (plain nested dicts of float32 arrays, names follow HF so the mapping is obvious)::

    wte/embedding [Vp, C]       wpe/embedding [block_size, C]
    h_{i}/ln_1/{scale,bias}     h_{i}/attn/c_attn/{kernel [C, 3C], bias}
    h_{i}/attn/c_proj/{kernel [C, C], bias}
    h_{i}/ln_2/{scale,bias}     h_{i}/mlp/c_fc/{kernel [C, 4C], bias}
    h_{i}/mlp/c_proj/{kernel [4C, C], bias}
    ln_f/{scale,bias}
    lm_head/kernel [C, Vp]      (only when tie_embeddings=False)

``Vp`` is ``config.padded_vocab_size``: ``vocab_size`` rounded up to a multiple of
``vocab_pad_to`` (1 by default: no padding). The padding ids' logits are -inf
(:func:`models.layers.mask_padded_vocab`), so the loss and samples are those of the real
vocabulary; the transformers conversion drops (``to_hf``) and adds (``from_hf``, zeros) the
padding rows.

HF's ``Conv1D`` stores weights as [in, out], the same layout as a Flax ``Dense`` kernel, so the
import/export is a pure renaming (``transformer.h.{i}.attn.c_attn.weight`` <->
``h_{i}/attn/c_attn/kernel``).
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
    LayerNorm,
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
class GPT2Config:
    """GPT-2 hyper-parameters (defaults: GPT-2 124M). Validated at construction.

    ``dtype`` is the computation dtype (parameters are always float32; logits float32).
    ``dropout`` is applied to the embeddings, the attention probabilities and both residual
    branches (HF's ``embd_pdrop = attn_pdrop = resid_pdrop``) when ``deterministic=False``.
    ``attn_implementation`` (None/"xla"/"cudnn") selects the attention path, see
    :func:`models.layers.causal_attention`.
    """

    model_type: ClassVar[str] = "gpt2"

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    dtype: str = "float32"
    layer_norm_eps: float = 1e-5
    # False: an output head of its own (HF tie_word_embeddings=False), ``lm_head/kernel`` [C, V]
    tie_embeddings: bool = True
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
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "vocab_pad_to"):
            check_pos_int(cls, name, getattr(self, name))
        check_divides(cls, "n_head", self.n_head, "n_embd", self.n_embd)
        check_dropout(cls, self.dropout)
        check_pos_float(cls, "layer_norm_eps", self.layer_norm_eps)
        check_bool(cls, "tie_embeddings", self.tie_embeddings)
        check_attn_impl(cls, self.attn_implementation)
        check_remat(cls, self)
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


GPT2_CONFIGS: dict[str, GPT2Config] = {
    # for tests: a few hundred thousand parameters
    "tiny": GPT2Config(vocab_size=256, block_size=64, n_layer=2, n_head=2, n_embd=64),
    # nanoGPT "baby GPT": the trainer's default run and the CPU benchmarks
    "small": GPT2Config(block_size=256, n_layer=6, n_head=6, n_embd=384),
    # published OpenAI GPT-2 shapes
    "124m": GPT2Config(n_layer=12, n_head=12, n_embd=768),
    "350m": GPT2Config(n_layer=24, n_head=16, n_embd=1024),
    "774m": GPT2Config(n_layer=36, n_head=20, n_embd=1280),
    "1.5b": GPT2Config(n_layer=48, n_head=25, n_embd=1600),
}

# --------------------------------------------------------------------------------------
# model

_INIT_STD = 0.02


def _dense(cfg: GPT2Config, features: int, name: str, std: float = _INIT_STD) -> nn.Dense:
    return nn.Dense(
        features,
        dtype=cfg.compute_dtype,
        param_dtype=PARAM_DTYPE,
        kernel_init=nn.initializers.normal(std),
        dot_general=dense_dot_general,
        name=name,
    )


def _layer_norm(cfg: GPT2Config, name: str) -> nn.LayerNorm:
    return LayerNorm(epsilon=cfg.layer_norm_eps, dtype=cfg.compute_dtype, name=name)


class CausalSelfAttention(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool, dropout_rate: Any = None,
                 mask: jax.Array | None = None, kv: KVSlot | None = None) -> Any:
        """``mask``: bool [B, T, S] (see :func:`models.layers.causal_attention`); ``kv``: this
        layer's KV cache ``(k, v, index)``, k/v [B, S, H, Q]: the new keys/values are written
        at ``index`` and attention reads the whole cache under ``mask``; then the result is
        ``(y, (k, v))``."""
        cfg = self.config
        rate = cfg.dropout if dropout_rate is None else dropout_rate
        B, T, C = x.shape
        qkv = _dense(cfg, 3 * C, "c_attn")(x)
        q, k, v = (t.reshape(B, T, cfg.n_head, cfg.head_dim) for t in jnp.split(qkv, 3, -1))
        q, k, v = (constrain(t, "batch", None, "heads", None) for t in (q, k, v))
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
        # GPT-2 paper / nanoGPT: scale residual projections by 1/sqrt(2 * n_layer) at init
        y = _dense(cfg, C, "c_proj", _INIT_STD / math.sqrt(2 * cfg.n_layer))(y.reshape(B, T, C))
        y = Dropout(rate)(y, deterministic=deterministic)
        return y if kv is None else (y, (k, v))


class MLP(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool, dropout_rate: Any = None) -> jax.Array:
        cfg = self.config
        h = _dense(cfg, 4 * cfg.n_embd, "c_fc")(x)
        h = constrain(jax.nn.gelu(h, approximate=True), "batch", None, "mlp")  # HF "gelu_new"
        h = _dense(cfg, cfg.n_embd, "c_proj", _INIT_STD / math.sqrt(2 * cfg.n_layer))(h)
        rate = cfg.dropout if dropout_rate is None else dropout_rate
        return Dropout(rate)(h, deterministic=deterministic)


class Block(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool, dropout_rate: Any = None,
                 mask: jax.Array | None = None, kv: KVSlot | None = None) -> Any:
        """With ``kv`` (a KV cache slot), returns ``(x, (k, v))``."""
        cfg = self.config
        a = CausalSelfAttention(cfg, name="attn")(_layer_norm(cfg, "ln_1")(x), deterministic,
                                                  dropout_rate, mask, kv)
        if kv is not None:
            a, kv = a
        x = x + a
        x = constrain(x, "batch", "seq", "embed")  # the residual stream (sequence-parallel)
        x = x + MLP(cfg, name="mlp")(_layer_norm(cfg, "ln_2")(x), deterministic, dropout_rate)
        x = constrain(x, "batch", "seq", "embed")
        return x if kv is None else (x, kv)


class GPT2(nn.Module):
    """GPT-2 language model: int tokens [B, T] -> float32 logits [B, T, padded_vocab_size]
    (the padding ids at -inf)."""

    config: GPT2Config

    @nn.compact
    def __call__(self, tokens: jax.Array, deterministic: bool = True,
                 dropout_rate: Any = None, *, segment_ids: jax.Array | None = None,
                 positions: jax.Array | None = None, cache: KVCache | None = None) -> Any:
        """``dropout_rate`` (a float or a traced scalar) overrides ``config.dropout``.

        ``segment_ids`` (int [B, T]): document masking, each token attends only to earlier
        tokens of its own segment, and positions restart at 0 in each segment (unless
        ``positions`` [B, T] is given). ``cache`` (:func:`models.decode.init_cache`): the
        tokens sit at ``cache.index``...; returns ``(logits, new_cache)``. All None: the plain
        causal model."""
        cfg = self.config
        seq_len = tokens.shape[1]
        if seq_len > cfg.block_size:
            raise ValueError(f"sequence length {seq_len} exceeds block_size={cfg.block_size}")
        embed = dict(
            dtype=cfg.compute_dtype,
            param_dtype=PARAM_DTYPE,
            embedding_init=nn.initializers.normal(_INIT_STD),
        )
        wte = nn.Embed(cfg.padded_vocab_size, cfg.n_embd, name="wte", **embed)
        wpe = nn.Embed(cfg.block_size, cfg.n_embd, name="wpe", **embed)
        positions, mask = attention_inputs(tokens, segment_ids, positions, cache)
        if positions is None:
            x = wte(tokens) + wpe(jnp.arange(seq_len))[None]
        else:
            x = wte(tokens) + wpe(positions)
        x = Dropout(cfg.dropout if dropout_rate is None else dropout_rate)(
            x, deterministic=deterministic)
        x = constrain(x, "batch", "seq", "embed")
        if cache is not None:
            x, cache = run_cached(cfg, lambda i: Block(cfg, name=f"h_{i}"), x, cache,
                                  lambda layer, x, kv: layer(x, True, None, mask, kv))
        else:
            x = run_layers(self, lambda i: functools.partial(Block(cfg, name=f"h_{i}"),
                                                             dropout_rate=dropout_rate,
                                                             mask=mask),
                           x, (deterministic,), cfg)
        x = _layer_norm(cfg, "ln_f")(x)
        if cfg.tie_embeddings:
            logits = lm_logits(x, wte.embedding, transposed=True)  # tied output embedding
        else:
            logits = LMHead(cfg.padded_vocab_size, _INIT_STD, name="lm_head")(x)
        logits = constrain(mask_padded_vocab(logits, cfg.vocab_size), "batch", None, "vocab")
        return logits if cache is None else (logits, cache)


# --------------------------------------------------------------------------------------
# FLOPs


def flops_per_token(config: GPT2Config, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), PaLM appendix B style::

        6·N + 12·L·H·Q·T

    N = weights that take part in matmuls = L·12·C² (c_attn 3C², attn c_proj C², c_fc 4C²,
    mlp c_proj 4C²) + V·C (tied output head, V the padded vocabulary: the rows multiplied);
    position embeddings, biases and LayerNorm gains are excluded (lookups / element-wise).
    L = n_layer, H = n_head, Q = head_dim, T = seq_len: the attention term counts QKᵀ and A·V
    (2·2·T·H·Q forward FLOPs per token and layer, ×3 for backward), without discounting the
    causal mask.
    """
    C, L = config.n_embd, config.n_layer
    n_matmul = L * 12 * C * C + config.padded_vocab_size * C
    return float(6 * n_matmul + 12 * L * config.n_head * config.head_dim * seq_len)


# --------------------------------------------------------------------------------------
# HuggingFace interop

_IGNORED_HF_KEYS = (".attn.bias", ".attn.masked_bias")


def hf_mapping(config: GPT2Config) -> list[tuple[str, tuple[str, ...], bool]]:
    """Rows (HF name, params path, transpose?) — GPT-2 needs no transposes (Conv1D [in, out])."""
    rows = [
        ("transformer.wte.weight", ("wte", "embedding"), False),
        ("transformer.wpe.weight", ("wpe", "embedding"), False),
    ]
    for i in range(config.n_layer):
        hf, fx = f"transformer.h.{i}.", f"h_{i}"
        for ln in ("ln_1", "ln_2"):
            rows.append((f"{hf}{ln}.weight", (fx, ln, "scale"), False))
            rows.append((f"{hf}{ln}.bias", (fx, ln, "bias"), False))
        linears = (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj"))
        for mod, lin in linears:
            rows.append((f"{hf}{mod}.{lin}.weight", (fx, mod, lin, "kernel"), False))
            rows.append((f"{hf}{mod}.{lin}.bias", (fx, mod, lin, "bias"), False))
    rows.append(("transformer.ln_f.weight", ("ln_f", "scale"), False))
    rows.append(("transformer.ln_f.bias", ("ln_f", "bias"), False))
    if not config.tie_embeddings:  # nn.Linear [V, C] -> kernel [C, V]
        rows.append(("lm_head.weight", ("lm_head", "kernel"), True))
    return rows


def from_hf(config: GPT2Config, state_dict: Mapping[str, Any]) -> dict:
    """HF GPT-2 state dict -> params. Accepts names with or without the ``transformer.``
    prefix (original OpenAI checkpoints have none); ignores the attention-mask buffers and an
    ``lm_head.weight`` equal to ``wte`` (tied); a different one raises ``ValueError``. The
    checkpoint has ``vocab_size`` rows; the padding rows are added as zeros."""
    sd = {
        (k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}"): v
        for k, v in state_dict.items()
    }
    ignore = _IGNORED_HF_KEYS
    if config.tie_embeddings:
        check_tied_head("GPT2", sd, "lm_head.weight", "transformer.wte.weight",
                        "load it with tie_embeddings=False (config_from_hf reads "
                        "tie_word_embeddings)")
        ignore += ("lm_head.weight",)
    real = dataclasses.replace(config, vocab_pad_to=1)
    expected = jax.eval_shape(GPT2(real).init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
    params = convert_from_hf("GPT2", hf_mapping(config), sd, expected["params"], ignore=ignore)
    return resize_vocab(params, PARAM_AXES, config.padded_vocab_size)


def to_hf(config: GPT2Config, params: Any) -> dict[str, np.ndarray]:
    """params -> HF ``GPT2LMHeadModel`` state dict (float32 numpy; no ``lm_head.weight``, as
    ``save_pretrained`` writes it for tied weights). The padding rows are dropped: the
    vocabulary is ``vocab_size``."""
    return convert_to_hf(hf_mapping(config), resize_vocab(params, PARAM_AXES, config.vocab_size))


def hf_config(config: GPT2Config) -> dict[str, Any]:
    """A transformers ``GPT2Config`` dict (``config.json``) for this config."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_range": _INIT_STD,
        "scale_attn_weights": True,
        "tie_word_embeddings": config.tie_embeddings,
        # GPT-2's <|endoftext|>, when the vocabulary has it
        "bos_token_id": 50256 if config.vocab_size > 50256 else None,
        "eos_token_id": 50256 if config.vocab_size > 50256 else None,
    }


def config_from_hf(d: Mapping[str, Any], **overrides: Any) -> GPT2Config:
    """GPT2Config from a transformers GPT-2 ``config.json`` dict (+ field overrides)."""
    act = d.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        raise ValueError(f"unsupported GPT-2 activation_function={act!r} (need tanh GELU)")
    n_inner = d.get("n_inner")
    if n_inner not in (None, 4 * d["n_embd"]):
        raise ValueError(f"unsupported GPT-2 n_inner={n_inner!r} (need 4 * n_embd)")
    if d.get("scale_attn_by_inverse_layer_idx") or d.get("scale_attn_weights") is False:
        raise ValueError("unsupported GPT-2 attention scaling variant")
    kw = dict(
        vocab_size=d["vocab_size"],
        block_size=d.get("n_positions", d.get("n_ctx", 1024)),
        n_layer=d["n_layer"],
        n_head=d["n_head"],
        n_embd=d["n_embd"],
        layer_norm_eps=d.get("layer_norm_epsilon", 1e-5),
        tie_embeddings=bool(d.get("tie_word_embeddings", True)),
    )
    kw.update(overrides)
    return GPT2Config(**kw)


#: parameter path (regular expression, searched in the ``/``-joined path) -> the logical axis
#: of each dimension, read by the trainer's sharding table (``train.parallel.shardings``):
#: Megatron's column-parallel QKV and MLP-in, row-parallel projections, vocabulary-parallel
#: embedding. First match wins; a path matching no row has no named axis (replicated).
PARAM_AXES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"wte/embedding$", ("vocab", "embed")),
    (r"wpe/embedding$", (None, "embed")),
    (r"lm_head/kernel$", ("embed", "vocab")),
    (r"attn/c_attn/kernel$", ("embed", "heads")),
    (r"attn/c_attn/bias$", ("heads",)),
    (r"attn/c_proj/kernel$", ("heads", "embed")),
    (r"mlp/c_fc/kernel$", ("embed", "mlp")),
    (r"mlp/c_fc/bias$", ("mlp",)),
    (r"mlp/c_proj/kernel$", ("mlp", "embed")),
    (r"(bias|scale)$", ("embed",)),
)
