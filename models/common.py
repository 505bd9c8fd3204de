"""Pieces shared by the GPT-2 and LLaMA-3 models.

* config validation helpers (``ValueError`` naming the field, the value and the rule),
* the precision policy (parameters float32, compute in ``config.dtype``, logits/loss float32),
* causal self-attention (:func:`jax.nn.dot_product_attention` on accelerators, a
  formulation with a hand-written backward on the CPU) and a LayerNorm,
* the loss, parameter counting, weight-decay mask,
* a dependency-free safetensors reader/writer (the ``safetensors`` package is only a
  test extra, so the models read and write the format themselves).
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
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
    ``remat_num_layers``, ``remat_chunks``; see :func:`remat_segments`)."""
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


def remat_segments(n_layer: int, remat: str = "none", method: str = "uniform",
                   num_layers: int = 1, chunks: int = 1) -> list[tuple[int, int, bool]]:
    """Activation recompute as contiguous layer segments ``(lo, hi, checkpointed)``.

    Megatron-LM's ``--recompute-granularity/--recompute-method/--recompute-num-layers``:

    * ``none``: one plain segment (every activation kept for the backward pass);
    * ``full`` + ``uniform``: groups of ``num_layers`` consecutive layers, each group one
      ``jax.checkpoint`` (only the group's input is kept; the last group may be shorter);
    * ``full`` + ``block``: in each of the ``chunks`` model chunks (pipeline stages x virtual
      stages; 1 without pipelining), the first ``num_layers`` layers are checkpointed one by one,
      the others keep their activations;
    * ``selective``: every layer checkpointed with :func:`remat_policy` (matmul outputs saved,
      attention's scores/softmax recomputed).
    """
    if remat == "none":
        return [(0, n_layer, False)]
    if remat == "selective":
        return [(i, i + 1, True) for i in range(n_layer)]
    if method == "uniform":
        return [(lo, min(lo + num_layers, n_layer), True) for lo in range(0, n_layer, num_layers)]
    per = n_layer // chunks
    out: list[tuple[int, int, bool]] = []
    for c in range(chunks):
        lo = c * per
        k = min(num_layers, per)
        out += [(lo + i, lo + i + 1, True) for i in range(k)]
        if k < per:
            out.append((lo + k, lo + per, False))
    return out


def remat_policy(remat: str) -> Any:
    """The ``jax.checkpoint`` policy: ``selective`` saves the outputs of matmuls without batch
    dimensions (the projections, as 2-D GEMMs) and recomputes the attention core (its
    batched einsums and softmax); ``full`` saves nothing inside a checkpointed segment."""
    if remat == "selective":
        return jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    return None


def run_layers(module: nn.Module, make_layer: Any, x: jax.Array, args: tuple, cfg: Any,
               segments: list[tuple[int, int, bool]] | None = None) -> jax.Array:
    """Apply layers ``make_layer(i)(x, *args)`` for every layer, checkpointing the segments of
    :func:`remat_segments` (Flax ``nn.remat`` of a function of ``module``: parameter names and
    the parameter tree are those of the plain loop). ``args`` are passed through; the last one
    (``deterministic``) is static."""
    if segments is None:
        segments = remat_segments(cfg.n_layer, cfg.remat, cfg.remat_method,
                                  cfg.remat_num_layers, cfg.remat_chunks)

    def seg(mdl: nn.Module, x: jax.Array, *a: Any) -> jax.Array:
        *dyn, lo, hi = a
        for i in range(lo, hi):
            x = make_layer(i)(x, *dyn)
        return x

    n = len(args)  # argnums: 0 module, 1 x, 2.. args; the last arg + lo, hi static
    ckpt = nn.remat(seg, static_argnums=(1 + n, 2 + n, 3 + n), policy=remat_policy(cfg.remat))
    for lo, hi, c in segments:
        x = (ckpt if c else seg)(module, x, *args, lo, hi)
    return x


# --------------------------------------------------------------------------------------
# layers


def _cpu_float16(x: jax.Array) -> bool:
    """True for float16 on XLA:CPU, which cannot lower float16 products accumulated in
    float32 (``F16_F16_F32``): those few products (attention scores, LM head) then run in
    float32; the Dense layers stay float16 (float16 x float16 -> float16 is supported)."""
    return x.dtype == jnp.float16 and jax.default_backend() == "cpu"


def _head_major(a: jax.Array) -> jax.Array:
    """[B, T, N, D] <-> [B, N, T, D]."""
    return jnp.transpose(a, (0, 2, 1, 3))


def _causal_softmax(s: jax.Array) -> jax.Array:
    """Row softmax of float32 scores [..., T, S] with an additive causal bias (0 / -inf)."""
    T, S = s.shape[-2:]
    bias = jnp.where(jnp.tril(jnp.ones((T, S), dtype=bool)), 0.0, -jnp.inf).astype(jnp.float32)
    return jax.nn.softmax(s + bias, axis=-1)


@jax.custom_vjp
def _attention_core(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(causal(q k^T)) v on head-major [B, N, T, D] inputs; ``q`` is pre-scaled."""
    return _attention_fwd(q, k, v)[0]


def _attention_fwd(q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[jax.Array, tuple]:
    s = jnp.einsum("bntd,bnsd->bnts", q, k, preferred_element_type=jnp.float32)
    p = _causal_softmax(s)  # float32
    o = jnp.einsum("bnts,bnsd->bntd", p.astype(q.dtype), v)
    return o, (q, k, v, p, o)


def _attention_bwd(res: tuple, do: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    # the flash-attention backward: dS = P * (dP - rowsum(dO * O)); rowsum(dP * P) equals
    # rowsum(dO * O), a reduction over D instead of over the [T, S] matrix
    q, k, v, p, o = res
    dv = jnp.einsum("bnts,bntd->bnsd", p.astype(q.dtype), do)
    dp = jnp.einsum("bntd,bnsd->bnts", do, v, preferred_element_type=jnp.float32)
    delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1, keepdims=True)
    ds = (p * (dp - delta)).astype(q.dtype)
    dq = jnp.einsum("bnts,bnsd->bntd", ds, k)
    dk = jnp.einsum("bnts,bntd->bnsd", ds, q)
    return dq, dk, dv


_attention_core.defvjp(_attention_fwd, _attention_bwd)


class Dropout(nn.Dropout):
    """``flax.linen.Dropout`` whose ``rate`` may also be a traced scalar (a population sweeping
    the dropout rate passes one per member, see the models' ``dropout_rate`` argument).

    A Python-number rate is ``nn.Dropout`` itself (a rate of 0 does no work). A traced rate
    runs the same arithmetic: a Bernoulli keep mask with ``p = 1 - rate`` (float32) and the kept
    inputs scaled by ``1 / (1 - rate)``."""

    @nn.compact
    def __call__(self, inputs: jax.Array, deterministic: bool | None = None,
                 rng: jax.Array | None = None) -> jax.Array:
        if isinstance(self.rate, int | float):
            return super().__call__(inputs, deterministic, rng)
        if nn.merge_param("deterministic", self.deterministic, deterministic):
            return inputs
        keep_prob = 1.0 - jnp.asarray(self.rate, jnp.float32)
        if rng is None:
            rng = self.make_rng(self.rng_collection)
        shape = [1 if d in self.broadcast_dims else n for d, n in enumerate(inputs.shape)]
        mask = jnp.broadcast_to(jax.random.bernoulli(rng, p=keep_prob, shape=shape), inputs.shape)
        # Flax's ``inputs / keep_prob`` has a constant divisor (rounded to the inputs' dtype),
        # which XLA compiles to a float32 product with its reciprocal: the same here, so a
        # traced rate gives the static rate's values bit for bit (float32 and bfloat16, CPU)
        scale = 1.0 / keep_prob.astype(inputs.dtype).astype(jnp.float32)
        kept = (inputs.astype(jnp.float32) * scale).astype(inputs.dtype)
        return jax.lax.select(mask, kept, jnp.zeros_like(inputs))


def causal_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    dropout: nn.Dropout | None,
    deterministic: bool,
    implementation: str | None = None,
) -> jax.Array:
    """Causal (grouped-query) attention, softmax(q k^T / sqrt(d)) v.

    ``q``: [B, T, N, D], ``k``/``v``: [B, T, K, D] with K dividing N (GQA when K < N).

    * ``implementation="cudnn"``, or None on an accelerator: :func:`jax.nn.dot_product_attention`
      (a fused kernel where the platform has one).
    * ``"xla"``, or None on the CPU: an explicit formulation with a hand-written backward
      (head-major layout, ``q`` scaled before the product, causal mask as an additive bias,
      float32 softmax, the flash-attention gradient identity). Same values within float32
      rounding; on XLA:CPU the training step of the default model is about 1.15x faster than
      with ``jax.nn.dot_product_attention`` (see docs/benchmarks.md).

    With dropout active the probabilities must be materialised, so the plain formula is used.
    """
    if _cpu_float16(q):  # XLA:CPU has no float16 x float16 -> float32 dot: float32 there
        f32 = jnp.float32
        out = causal_attention(q.astype(f32), k.astype(f32), v.astype(f32), dropout=dropout,
                               deterministic=deterministic, implementation=implementation)
        return out.astype(q.dtype)
    T, N, D = q.shape[1:]
    K = k.shape[2]
    if dropout is None or deterministic or (isinstance(dropout.rate, int | float)
                                             and dropout.rate == 0.0):
        use_jax = implementation == "cudnn" or (
            implementation is None and jax.default_backend() != "cpu"
        )
        if use_jax:
            return jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                implementation=implementation)
        if K != N:
            k = jnp.repeat(k, N // K, axis=2)
            v = jnp.repeat(v, N // K, axis=2)
        q = q * jnp.asarray(1.0 / math.sqrt(D), q.dtype)
        o = _attention_core(_head_major(q), _head_major(k), _head_major(v))
        return _head_major(o)
    if K != N:
        k = jnp.repeat(k, N // K, axis=2)
        v = jnp.repeat(v, N // K, axis=2)
    att = jnp.einsum("btnd,bsnd->bnts", q, k, preferred_element_type=jnp.float32)
    att = att / math.sqrt(D)
    mask = jnp.tril(jnp.ones((T, T), dtype=bool))
    att = jnp.where(mask, att, jnp.finfo(jnp.float32).min)
    att = jax.nn.softmax(att, axis=-1)
    att = dropout(att, deterministic=False).astype(q.dtype)
    return jnp.einsum("bnts,bsnd->btnd", att, v)


def constrain(x: jax.Array, *axes: str | None) -> jax.Array:
    """Sharding hint: the logical axis of each dimension of ``x`` (``"batch"``, ``"seq"``,
    ``"embed"``, ``"heads"``, ``"kv_heads"``, ``"mlp"``, ``"vocab"`` or None). A no-op unless
    a trainer activates rules mapping them to mesh axes (``flax.linen.logical_axis_rules``;
    see train/sharding.py)."""
    return nn.with_logical_constraint(x, axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x: jax.Array, scale: jax.Array, bias: jax.Array,
                    eps: float) -> tuple[jax.Array, tuple]:
    x32 = x.astype(jnp.float32)
    xc = x32 - jnp.mean(x32, axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + eps)
    xhat = xc * rstd
    y = (xhat * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)
    return y, (xhat, rstd, scale)


def _layer_norm_bwd(eps: float, res: tuple, dy: jax.Array) -> tuple:
    xhat, rstd, scale = res
    dy32 = dy.astype(jnp.float32)
    g = dy32 * scale.astype(jnp.float32)
    dx = rstd * (g - jnp.mean(g, axis=-1, keepdims=True)
                 - xhat * jnp.mean(g * xhat, axis=-1, keepdims=True))
    lead = tuple(range(dy.ndim - 1))
    return (dx.astype(dy.dtype), jnp.sum(dy32 * xhat, axis=lead).astype(scale.dtype),
            jnp.sum(dy32, axis=lead).astype(scale.dtype))


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
    """LayerNorm with parameters ``scale`` (ones) and ``bias`` (zeros), as ``nn.LayerNorm``
    (statistics in float32, two-pass variance, output in ``dtype``), with a hand-written
    backward: XLA:CPU runs the training step of the default model about 1.07x faster than
    with ``nn.LayerNorm``'s autodiff (see docs/benchmarks.md)."""

    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        C = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (C,), PARAM_DTYPE)
        bias = self.param("bias", nn.initializers.zeros, (C,), PARAM_DTYPE)
        return _layer_norm(x, scale, bias, float(self.epsilon)).astype(self.dtype)


def dense_dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: Any,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """``lax.dot_general`` for ``x[..., C] @ W[C, F]`` computed as one 2-D matrix product.

    The ``dot_general`` of :class:`flax.linen.Dense` layers. Same values; the reason is speed:
    XLA:CPU runs the weight gradient of a contraction over two leading dimensions ([B, T])
    about twice as slowly as the same GEMM on [B*T, C] (measured in bench/bench_models.py).
    On GPU the reshapes are free. Any other contraction goes to ``lax.dot_general`` as is.
    """
    (lc, rc), (lb, rb) = dimension_numbers
    plain = (not lb and not rb and rhs.ndim == 2 and tuple(lc) == (lhs.ndim - 1,)
             and tuple(rc) == (0,))
    if not plain or lhs.ndim == 2:
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                                   preferred_element_type=preferred_element_type)
    out = jax.lax.dot_general(lhs.reshape(-1, lhs.shape[-1]), rhs, (((1,), (0,)), ((), ())),
                              precision=precision, preferred_element_type=preferred_element_type)
    return out.reshape(*lhs.shape[:-1], rhs.shape[1])


def lm_logits(x: jax.Array, weight: jax.Array, *, transposed: bool) -> jax.Array:
    """Output projection in the compute dtype with float32 accumulation and result.

    ``weight`` is [V, C] (tied embedding, ``transposed=True``) or [C, V] (untied kernel).
    Computed on [B*T, C] as one GEMM (see :func:`dense_dot_general`).
    """
    if _cpu_float16(x):
        x = x.astype(jnp.float32)  # XLA:CPU has no float16 x float16 -> float32 dot
    w = weight.astype(x.dtype)
    flat = x.reshape(-1, x.shape[-1])
    dims = (((1,), (1,)), ((), ())) if transposed else (((1,), (0,)), ((), ()))
    out = jax.lax.dot_general(flat, w, dims, preferred_element_type=jnp.float32)
    return out.reshape(*x.shape[:-1], out.shape[-1])


# --------------------------------------------------------------------------------------
# loss, counting, decay mask


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


def num_params(params: Any) -> int:
    """Total number of scalars in a parameter pytree (works on ShapeDtypeStructs too)."""
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def decay_mask(params: Any) -> Any:
    """Pytree of bools, True for matrices that get weight decay.

    True: 2-D ``kernel`` leaves (attention/MLP projections, an untied LM head).
    False: biases, LayerNorm/RMSNorm gains and embedding tables (``embedding`` leaves).
    """

    def is_decayed(path: tuple, leaf: Any) -> bool:
        name = getattr(path[-1], "key", str(path[-1]))
        return name == "kernel" and len(leaf.shape) >= 2

    return jax.tree_util.tree_map_with_path(is_decayed, params)


def matmul_params(params: Any) -> int:
    """Number of weights that take part in matmuls (2-D ``kernel`` leaves + a tied head)."""
    n = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if getattr(path[-1], "key", None) == "kernel" and len(leaf.shape) >= 2:
            n += math.prod(leaf.shape)
    return n


# --------------------------------------------------------------------------------------
# HF state-dict helpers and a minimal safetensors implementation

_ST_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": jnp.bfloat16,  # ml_dtypes.bfloat16
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file into numpy arrays (memory-mapped, no copy)."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    (n,) = struct.unpack("<Q", bytes(raw[:8]))
    header = json.loads(bytes(raw[8 : 8 + n]).decode("utf-8"))
    header.pop("__metadata__", None)
    base = 8 + n
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = np.dtype(_ST_DTYPES[info["dtype"]])
        out[name] = raw[base + begin : base + end].view(dtype).reshape(info["shape"])
    return out


def write_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: dict | None = None
) -> None:
    """Write numpy arrays as a ``.safetensors`` file (readable by ``safetensors``/HF)."""
    header: dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    arrays, offset = [], 0
    for name, value in tensors.items():
        a = np.asarray(value)
        if a.dtype.byteorder == ">":
            a = a.byteswap().view(a.dtype.newbyteorder("<"))
        a = np.require(a, requirements="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        header[name] = {
            "dtype": _ST_NAMES[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        arrays.append(a)
        offset += a.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for a in arrays:
            f.write(a.tobytes())


def to_numpy_f32(x: Any) -> np.ndarray:
    """numpy / torch / jax array -> float32 numpy array (torch is duck-typed, not imported)."""
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def load_state_dict(path_or_state_dict: Any) -> dict[str, Any]:
    """A state dict from a mapping, a ``.safetensors`` file or a directory of them."""
    if isinstance(path_or_state_dict, Mapping):
        return dict(path_or_state_dict)
    path = os.fspath(path_or_state_dict)
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise FileNotFoundError(f"no .safetensors files in directory {path!r}")
        sd: dict[str, Any] = {}
        for f in files:
            sd.update(read_safetensors(os.path.join(path, f)))
        return sd
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return read_safetensors(path)


def check_tied_head(cls: str, state_dict: Mapping[str, Any], head: str, embedding: str,
                    hint: str) -> None:
    """For a config whose output head is tied to the embedding: a ``head`` present in the state
    dict must equal ``embedding`` (what tied checkpoints hold), else ``ValueError`` (loading
    would silently replace the checkpoint's head by the embedding)."""
    if head not in state_dict or embedding not in state_dict:
        return
    h, e = to_numpy_f32(state_dict[head]), to_numpy_f32(state_dict[embedding])
    if h.shape == e.shape and np.array_equal(h, e):
        return
    what = (f"max |difference| {float(np.max(np.abs(h - e))):.3g}" if h.shape == e.shape
            else f"shape {h.shape} vs {e.shape}")
    raise ValueError(f"{cls}: {head} differs from {embedding} ({what}) but this config ties the "
                     f"output head to the embedding, so the checkpoint's head would be dropped; "
                     f"{hint}")


def convert_from_hf(
    cls: str,
    mapping: list[tuple[str, tuple[str, ...], bool]],
    state_dict: Mapping[str, Any],
    expected: Any,
    ignore: tuple[str, ...] = (),
) -> dict:
    """Build a params pytree from an HF state dict.

    ``mapping`` rows are (hf_name, params_path, transpose). ``expected`` is the params pytree
    of shapes (from ``jax.eval_shape``). Unknown keys (except those ending in ``ignore``),
    missing keys and shape mismatches raise ``ValueError``.
    """
    shapes = {
        tuple(p.key for p in path): leaf.shape
        for path, leaf in jax.tree_util.tree_leaves_with_path(expected)
    }
    known = {hf for hf, _, _ in mapping}
    extra = [k for k in state_dict if k not in known and not k.endswith(ignore)]
    if extra:
        raise ValueError(f"{cls}: unexpected keys in state dict: {sorted(extra)[:10]}")
    missing = [hf for hf, _, _ in mapping if hf not in state_dict]
    if missing:
        raise ValueError(f"{cls}: missing keys in state dict: {missing[:10]}")
    params: dict = {}
    for hf, path, transpose in mapping:
        a = to_numpy_f32(state_dict[hf])
        if transpose:
            a = a.T
        if a.shape != tuple(shapes[path]):
            raise ValueError(
                f"{cls}: {hf} has shape {a.shape} (after layout change), expected "
                f"{tuple(shapes[path])} for config"
            )
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(a, dtype=PARAM_DTYPE)
    return params


def convert_to_hf(
    mapping: list[tuple[str, tuple[str, ...], bool]], params: Any
) -> dict[str, np.ndarray]:
    """Inverse of :func:`convert_from_hf`: params pytree -> {hf_name: float32 ndarray}."""
    out = {}
    for hf, path, transpose in mapping:
        node = params
        for key in path:
            node = node[key]
        a = np.asarray(node, dtype=np.float32)
        out[hf] = np.ascontiguousarray(a.T if transpose else a)
    return out


def save_state_dict(path: str | os.PathLike, sd: dict[str, np.ndarray], hf_cfg: dict) -> str:
    """Write ``sd`` as safetensors. A ``*.safetensors`` path is written as that file;
    any other path is a directory receiving ``model.safetensors`` and ``config.json``
    (so ``transformers`` ``from_pretrained(path)`` can load it). Returns the file written."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        write_safetensors(path, sd)
        return path
    os.makedirs(path, exist_ok=True)
    file = os.path.join(path, "model.safetensors")
    write_safetensors(file, sd)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2)
    return file


class LMHead(nn.Module):
    """Untied output projection: parameter ``kernel`` [C, V] (float32), float32 logits."""

    vocab_size: int
    init_std: float = 0.02

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel",
            nn.initializers.normal(self.init_std),
            (x.shape[-1], self.vocab_size),
            PARAM_DTYPE,
        )
        return lm_logits(x, kernel, transposed=False)
