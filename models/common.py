"""Pieces shared by the GPT-2 and LLaMA-3 models: config validation helpers (``ValueError``
naming the field, the value and the rule), the precision policy (parameters float32, compute in
``config.dtype``, logits/loss float32), the loss and the weight-decay mask.

The layers live in :mod:`models.layers`, weight I/O (safetensors, HF state dicts) in
:mod:`models.hf_io`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PARAM_DTYPE = jnp.float32
DTYPES = ("float32", "bfloat16", "float16")
ATTN_IMPLEMENTATIONS = (None, "xla", "cudnn")

# --------------------------------------------------------------------------------------
# config validation


def _fail(cls: str, name: str, value: Any, rule: str) -> None:
    raise ValueError(f"{cls}.{name}={value!r} is invalid: {rule}")


def check_pos_int(cls: str, name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive ``int`` (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        _fail(cls, name, value, "must be a positive int")


def check_pos_float(cls: str, name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.floating | np.integer)
        or not math.isfinite(value)
        or value <= 0
    ):
        _fail(cls, name, value, "must be a finite number > 0")


def check_divides(cls: str, small: str, a: int, big: str, b: int) -> None:
    """Raise ``ValueError`` unless ``a`` divides ``b``."""
    if b % a != 0:
        _fail(cls, small, a, f"{small} must divide {big}={b}")


def check_dropout(cls: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        _fail(cls, "dropout", value, "must be a float in [0, 1)")


def padded_vocab_size(vocab_size: int, pad_to: int) -> int:
    """The rows of the embedding and the output head: ``vocab_size`` rounded up to a multiple of
    ``pad_to`` (1: no padding). The one formula; configs expose it as ``padded_vocab_size``.

    >>> padded_vocab_size(50257, 64), padded_vocab_size(256, 64), padded_vocab_size(50257, 1)
    (50304, 256, 50257)
    """
    return -(-vocab_size // pad_to) * pad_to


def check_bool(cls: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(cls, name, value, "must be a bool")


def canonical_dtype(cls: str, value: Any) -> str:
    """Normalise a dtype spec (``"bfloat16"``, ``jnp.bfloat16``, ...) to its name."""
    try:
        name = jnp.dtype(value).name
    except (TypeError, ValueError):
        name = None
    if name not in DTYPES:
        _fail(cls, "dtype", value, f"must be one of {DTYPES}")
    return name


def check_attn_impl(cls: str, value: Any) -> None:
    if value not in ATTN_IMPLEMENTATIONS:
        _fail(cls, "attn_implementation", value, f"must be one of {ATTN_IMPLEMENTATIONS}")


REMAT_MODES = ("none", "full", "selective")
REMAT_METHODS = ("uniform", "block")


def check_remat(cls: str, cfg: Any) -> None:
    """Validate a config's activation-recompute fields (``remat``, ``remat_method``,
    ``remat_num_layers``, ``remat_chunks``; see :func:`models.layers.remat_segments`)."""
    if cfg.remat not in REMAT_MODES:
        _fail(cls, "remat", cfg.remat, f"must be one of {REMAT_MODES}")
    if cfg.remat_method not in REMAT_METHODS:
        _fail(cls, "remat_method", cfg.remat_method, f"must be one of {REMAT_METHODS}")
    check_pos_int(cls, "remat_num_layers", cfg.remat_num_layers)
    check_pos_int(cls, "remat_chunks", cfg.remat_chunks)
    check_divides(cls, "remat_chunks", cfg.remat_chunks, "n_layer", cfg.n_layer)
    per_chunk = cfg.n_layer // cfg.remat_chunks
    limit = per_chunk if cfg.remat_method == "block" else cfg.n_layer
    if cfg.remat == "full" and cfg.remat_num_layers > limit:
        what = "layers per model chunk" if cfg.remat_method == "block" else "n_layer"
        _fail(cls, "remat_num_layers", cfg.remat_num_layers,
              f"must be <= the {what} ({limit}) with remat_method={cfg.remat_method!r}")


# --------------------------------------------------------------------------------------
# loss, weight-decay mask


def loss_fn(logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean token cross-entropy in float32.

    Convention: ``targets`` are explicit, aligned with ``logits`` ([B, T] for [B, T, V]);
    nothing is shifted here. (HF ``...ForCausalLM(labels=x)`` shifts inside the model; the
    equivalent is ``loss_fn(logits[:, :-1], x[:, 1:])``.) Optional ``mask`` ([B, T], 1 = count
    the token) gives the mean over the unmasked tokens.
    """
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    nll = logz - picked
    if mask is None:
        return jnp.mean(nll)
    m = mask.astype(jnp.float32)
    return jnp.sum(nll * m) / jnp.maximum(jnp.sum(m), 1.0)


def decay_mask(params: Any) -> Any:
    """Pytree of bools, True for matrices that get weight decay.

    True: 2-D ``kernel`` leaves (attention/MLP projections, an untied LM head).
    False: biases, LayerNorm/RMSNorm gains and embedding tables (``embedding`` leaves).
    """

    def is_decayed(path: tuple, leaf: Any) -> bool:
        name = getattr(path[-1], "key", str(path[-1]))
        return name == "kernel" and len(leaf.shape) >= 2

    return jax.tree_util.tree_map_with_path(is_decayed, params)



# --------------------------------------------------------------------------------------
# the vocabulary axis of a params tree


def lookup_axes(table: Any, path: str, ndim: int) -> tuple[str | None, ...]:
    """The logical axes of the parameter at ``path`` (``/``-joined) in a ``PARAM_AXES`` table:
    the first row whose pattern is found in the path and whose rank is ``ndim``."""
    for pat, axes in table:
        if re.search(pat, path) and len(axes) == ndim:
            return axes
    return (None,) * ndim


def resize_vocab(params: Any, table: Any, rows: int) -> Any:
    """``params`` with the ``"vocab"`` axis of each parameter (per ``table``, a ``PARAM_AXES``)
    cut to its first ``rows`` entries or padded with zeros up to ``rows``; other leaves as
    they are. Cutting is only meant to drop padding rows (the caller keeps ``rows`` >= the real
    vocabulary)."""

    def one(path: tuple, a: Any) -> Any:
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        axes = lookup_axes(table, name, np.ndim(a))
        if "vocab" not in axes:
            return a
        ax, n = axes.index("vocab"), a.shape[axes.index("vocab")]
        if n >= rows:
            return a[(slice(None),) * ax + (slice(0, rows),)]
        pad = [(0, 0)] * a.ndim
        pad[ax] = (0, rows - n)
        return (jnp if isinstance(a, jax.Array) else np).pad(a, pad)

    return jax.tree_util.tree_map_with_path(one, params)
