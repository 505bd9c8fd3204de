"""Layers shared by the GPT-2 and LLaMA-3 models.

* causal self-attention (:func:`jax.nn.dot_product_attention` on accelerators, a formulation
  with a hand-written backward on the CPU), a LayerNorm with a hand-written backward,
* the Dense layers' ``dot_general`` and the output head (float32 logits),
* sharding hints (:func:`constrain`) and activation recompute (:func:`run_layers`).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from .common import PARAM_DTYPE


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
    with jax.named_scope("attention"):  # the backward's ops, for profiles
        return _attention_grads(res, do)


def _attention_grads(res: tuple, do: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
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
    mask: jax.Array | None = None,
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

    ``mask`` (bool [B, T, S], True = may attend; ``k``/``v`` then have S positions) replaces
    the causal mask: document masking (:func:`segment_mask`) and KV-cache decoding. It takes
    the plain formula (``implementation="cudnn"`` passes it to
    :func:`jax.nn.dot_product_attention`). None keeps the paths above unchanged.

    Its operations carry the name scope ``attention`` (profiles: bench/bench_train.py).
    """
    with jax.named_scope("attention"):
        return _causal_attention(q, k, v, dropout, deterministic, implementation, mask)


def _causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, dropout: nn.Dropout | None,
                      deterministic: bool, implementation: str | None,
                      mask: jax.Array | None) -> jax.Array:
    if _cpu_float16(q):  # XLA:CPU has no float16 x float16 -> float32 dot: float32 there
        f32 = jnp.float32
        out = _causal_attention(q.astype(f32), k.astype(f32), v.astype(f32), dropout,
                                deterministic, implementation, mask)
        return out.astype(q.dtype)
    if mask is not None:
        return _masked_attention(q, k, v, mask, dropout, deterministic, implementation)
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


def _masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                      dropout: nn.Dropout | None, deterministic: bool,
                      implementation: str | None) -> jax.Array:
    N, D = q.shape[2:]
    K = k.shape[2]
    drop = dropout is not None and not deterministic and not (
        isinstance(dropout.rate, int | float) and dropout.rate == 0.0)
    if implementation == "cudnn" and not drop:
        return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="cudnn")
    if K != N:
        k = jnp.repeat(k, N // K, axis=2)
        v = jnp.repeat(v, N // K, axis=2)
    q = q * jnp.asarray(1.0 / math.sqrt(D), q.dtype)
    s = jnp.einsum("btnd,bsnd->bnts", q, k, preferred_element_type=jnp.float32)
    # a finite floor, not -inf: a fully masked row (a padding query) gives a uniform row, not NaN;
    # exp(floor - max) is exactly 0 wherever a row has one allowed entry
    s = jnp.where(mask[:, None], s, jnp.finfo(jnp.float32).min)
    p = jax.nn.softmax(s, axis=-1)
    if drop:
        p = dropout(p, deterministic=False)
    return jnp.einsum("bnts,bsnd->btnd", p.astype(q.dtype), v)


def segment_mask(segment_ids: jax.Array) -> jax.Array:
    """Document masking: bool [B, T, T], True where query t may attend key s (s <= t and both
    in the same segment). ``segment_ids``: int [B, T], one id per document (packed sequences)."""
    T = segment_ids.shape[1]
    causal = jnp.tril(jnp.ones((T, T), dtype=bool))
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return same & causal[None]


def segment_positions(segment_ids: jax.Array) -> jax.Array:
    """Positions restarting at 0 where the segment id changes: int32 [B, T]
    (``[7, 7, 7, 2, 2, 9] -> [0, 1, 2, 0, 1, 0]``)."""
    B, T = segment_ids.shape
    idx = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    start = jnp.concatenate([jnp.ones((B, 1), bool),
                             segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    return idx - jax.lax.cummax(jnp.where(start, idx, 0), axis=1)


def cache_mask(positions: jax.Array, cache_len: int) -> jax.Array:
    """KV-cache decoding: bool [B, T, S], query at ``positions[b, t]`` attends the cache slots
    ``s <= positions[b, t]`` (slot s holds position s; later slots are stale or empty)."""
    return jnp.arange(cache_len)[None, None, :] <= positions[:, :, None]


class KVCache(NamedTuple):
    """A KV cache for decoding (:mod:`models.decode`): per layer ``(k, v)``, each
    [B, S, kv_heads, head_dim] in the compute dtype, slot s holding position s; ``index``
    (int32 scalar) is the number of filled slots, where the next tokens are written."""

    layers: tuple[tuple[jax.Array, jax.Array], ...]
    index: jax.Array


#: one layer's view of a :class:`KVCache`: ``(k, v, index)``
KVSlot = tuple[jax.Array, jax.Array, jax.Array]


def write_cache(kv: KVSlot, k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The cache slot's k/v with the new [B, T, K, D] keys/values written at its index."""
    ck, cv, index = kv
    at = (0, index, 0, 0)
    return (jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), at),
            jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), at))


def attention_inputs(tokens: jax.Array, segment_ids: jax.Array | None,
                     positions: jax.Array | None,
                     cache: KVCache | None) -> tuple[jax.Array | None, jax.Array | None]:
    """``(positions, mask)`` for a model call: both None for the plain causal model (its
    code path unchanged); with ``segment_ids`` the document mask and positions restarting per
    segment (unless ``positions`` is given); with a ``cache`` the positions from its index and
    the mask over its slots."""
    B, T = tokens.shape
    if cache is not None:
        if segment_ids is not None:
            raise ValueError("segment_ids cannot be combined with a KV cache")
        if positions is None:
            positions = cache.index + jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
        return positions, cache_mask(positions, cache.layers[0][0].shape[1])
    if segment_ids is not None:
        if segment_ids.shape != (B, T):
            raise ValueError(f"segment_ids must have the tokens' shape {(B, T)}, "
                             f"got {segment_ids.shape}")
        if positions is None:
            positions = segment_positions(segment_ids)
        return positions, segment_mask(segment_ids)
    if positions is not None and positions.shape != (B, T):
        raise ValueError(f"positions must have the tokens' shape {(B, T)}, got {positions.shape}")
    return positions, None


def run_cached(cfg: Any, make_layer: Any, x: jax.Array, cache: KVCache,
               call: Any) -> tuple[jax.Array, KVCache]:
    """Run the layers over a KV cache (no recompute: inference): ``call(make_layer(i), x,
    (k_i, v_i, index))`` returns ``(x, (k_i, v_i))``; the cache's index advances by T."""
    new = []
    for i in range(cfg.n_layer):
        k, v = cache.layers[i]
        x, kv = call(make_layer(i), x, (k, v, cache.index))
        new.append(kv)
    return x, KVCache(tuple(new), cache.index + x.shape[1])


def constrain(x: jax.Array, *axes: str | None) -> jax.Array:
    """Sharding hint: the logical axis of each dimension of ``x`` (``"batch"``, ``"seq"``,
    ``"embed"``, ``"heads"``, ``"kv_heads"``, ``"mlp"``, ``"vocab"`` or None). A no-op unless
    a trainer activates rules mapping them to mesh axes (``flax.linen.logical_axis_rules``;
    see train/parallel/shardings.py)."""
    return nn.with_logical_constraint(x, axes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x: jax.Array, scale: jax.Array, bias: jax.Array,
                    eps: float) -> tuple[jax.Array, tuple]:
    # the row means as matrix-vector products, not reductions: XLA:CPU emits a reduction with
    # other code when its input is computed in the same fusion (as under activation recompute,
    # where the residual sum is not stored) than when it is read from memory, a few ULPs apart;
    # a product's operand is always materialised, so recompute stays bit-identical (and the
    # training step is no slower: docs/parallelism.md, "Recompute"); full float32 precision
    # (no TF32 / bfloat16 passes on accelerators)
    inv_c = jnp.full((x.shape[-1], 1), 1.0 / x.shape[-1], jnp.float32)
    mean = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
    x32 = x.astype(jnp.float32)
    xc = x32 - mean(x32, inv_c)
    rstd = jax.lax.rsqrt(mean(xc * xc, inv_c) + eps)
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
    (statistics in float32, two-pass variance, the means as products with ``1/C``, output in
    ``dtype``), with a hand-written
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


def mask_padded_vocab(logits: jax.Array, vocab_size: int) -> jax.Array:
    """``logits`` [..., V_padded] with the padding ids (>= ``vocab_size``) at -inf, so that the
    softmax, the loss and sampling are exactly those of the real vocabulary (exp(-inf) = 0;
    the padding rows get zero gradient). Element-wise, so vocabulary-sharded logits stay
    sharded. Unpadded logits are returned as they are."""
    if logits.shape[-1] == vocab_size:
        return logits
    ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    return jnp.where(ids < vocab_size, logits, -jnp.inf)


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
