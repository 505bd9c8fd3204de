"""Sharding rules in one place: parameter paths -> logical axes -> mesh axes.

The mesh has two axes, ``data`` (data parallelism, and ZeRO's sharding axis) and ``tensor``
(Megatron tensor parallelism, and sequence parallelism's axis). Every array of the train step
gets its layout from two tables:

* :data:`PARAM_AXES`: a parameter path pattern -> the logical axis of each dimension
  (``c_attn/kernel: (embed, heads)``), for GPT-2 and LLaMA-3;
* :func:`logical_rules`: a logical axis -> a mesh axis for the chosen layout
  (``heads -> tensor`` under TP, ``batch -> data``, ``seq -> tensor`` under SP).

Megatron TP: the QKV projections and the MLP's first projection(s) are column-parallel (output
features over ``tensor``), the output projections row-parallel (input features over
``tensor``), the embedding and the LM head vocabulary-parallel (so the logits are sharded on
the vocabulary; the cross-entropy reduces across ``tensor`` and never gathers them). LLaMA-3's
KV heads are split across TP ranks (``kv_heads -> tensor``).

ZeRO is a second, orthogonal rule (:func:`zero_spec`): the largest dimension still divisible is
additionally sharded over ``data``. Stage 1 applies it to the optimizer state, stage 2 also to
the gradients (their all-reduce becomes a reduce-scatter), stage 3 also to the parameters (the
compiler all-gathers each weight where it is used). Small or indivisible tensors (biases, gains
of odd sizes) stay replicated.

Activations: the models call :func:`models.layers.constrain` (Flax logical constraints) at a few
points (residual stream, heads, MLP hidden, logits); these are no-ops unless the rules of
:func:`logical_rules` are active (``flax.linen.logical_axis_rules``, as in the mesh engine).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .optim import path_str

__all__ = ["DATA", "PARAM_AXES", "TENSOR", "Layout", "logical_rules", "param_axes",
           "named", "param_specs", "shard_bytes", "to_mesh_spec", "zero_spec"]

DATA, TENSOR = "data", "tensor"

#: parameter path (regular expression, searched) -> logical axis per dimension. First match
#: wins; a path matching no row is replicated (and sharded by ZeRO only).
PARAM_AXES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    # GPT-2
    (r"wte/embedding$", ("vocab", "embed")),
    (r"wpe/embedding$", (None, "embed")),
    (r"attn/c_attn/kernel$", ("embed", "heads")),
    (r"attn/c_attn/bias$", ("heads",)),
    (r"attn/c_proj/kernel$", ("heads", "embed")),
    (r"mlp/c_fc/kernel$", ("embed", "mlp")),
    (r"mlp/c_fc/bias$", ("mlp",)),
    (r"mlp/c_proj/kernel$", ("mlp", "embed")),
    # LLaMA-3
    (r"embed_tokens/embedding$", ("vocab", "embed")),
    (r"lm_head/kernel$", ("embed", "vocab")),
    (r"self_attn/q_proj/kernel$", ("embed", "heads")),
    (r"self_attn/(k|v)_proj/kernel$", ("embed", "kv_heads")),
    (r"self_attn/o_proj/kernel$", ("heads", "embed")),
    (r"mlp/(gate|up)_proj/kernel$", ("embed", "mlp")),
    (r"mlp/down_proj/kernel$", ("mlp", "embed")),
    # both: row-parallel biases, norms
    (r"(bias|scale)$", ("embed",)),
)


@dataclass(frozen=True)
class Layout:
    """A mesh layout: ``data`` x ``tensor`` devices, sequence parallelism, ZeRO stage."""

    data: int = 1
    tensor: int = 1
    sequence_parallel: bool = False
    zero_stage: int = 0
    pipe: int = 1  # pipeline stages (train/pipeline.py)
    virtual: int = 1  # virtual pipeline chunks per stage

    @property
    def size(self) -> int:
        return self.data * self.tensor * self.pipe

    def describe(self) -> str:
        parts = [f"DP={self.data}"]
        if self.tensor > 1:
            parts.append(f"TP={self.tensor}" + ("+SP" if self.sequence_parallel else ""))
        if self.zero_stage:
            parts.append(f"ZeRO-{self.zero_stage}")
        if self.pipe > 1:
            parts.append(f"PP={self.pipe}" + (f"+vPP={self.virtual}" if self.virtual > 1 else ""))
        return " x ".join(parts)


def logical_rules(layout: Layout) -> tuple[tuple[str, str | None], ...]:
    """Logical axis -> mesh axis for ``layout`` (Flax ``logical_axis_rules`` format).

    ``batch`` -> data; ``heads``/``kv_heads``/``mlp``/``vocab`` -> tensor (TP); ``seq`` (the
    residual stream's sequence dimension between TP regions) -> tensor under SP; ``embed`` and
    everything else replicated."""
    tp = TENSOR if layout.tensor > 1 else None
    return (("batch", DATA), ("heads", tp), ("kv_heads", tp), ("mlp", tp), ("vocab", tp),
            ("seq", tp if layout.sequence_parallel else None), ("embed", None))


def param_axes(path: str, ndim: int) -> tuple[str | None, ...]:
    """The logical axes of the parameter at ``path`` (a ``/``-joined path)."""
    for pat, axes in PARAM_AXES:
        if re.search(pat, path) and len(axes) == ndim:
            return axes
    return (None,) * ndim


def to_mesh_spec(axes: Sequence[str | None], rules: Sequence[tuple[str, str | None]]) -> P:
    table = dict(rules)
    return P(*(table.get(a) if a is not None else None for a in axes))


def zero_spec(spec: P, shape: Sequence[int], data: int, tensor: int = 1) -> P:
    """``spec`` with its largest dimension still divisible by ``data`` (times its ``tensor``
    sharding, if any) also sharded over ``data``; unchanged when none is (or ``data`` is 1)."""
    if data <= 1 or not shape:
        return spec
    parts = list(spec) + [None] * (len(shape) - len(spec))
    best = None
    for i, (n, cur) in enumerate(zip(shape, parts)):
        if cur not in (None, TENSOR):
            continue
        if n % (data * (tensor if cur == TENSOR else 1)) == 0 and (
                best is None or n > shape[best]):
            best = i
    if best is None:
        return spec
    parts[best] = DATA if parts[best] is None else (DATA, TENSOR)
    return P(*parts)


def param_specs(params: Any, layout: Layout, zero: bool) -> Any:
    """PartitionSpec per parameter (TP rules; plus ZeRO data sharding when ``zero``)."""
    rules = logical_rules(layout)

    def spec(path: tuple, x: Any) -> P:
        s = to_mesh_spec(param_axes(path_str(path), len(x.shape)), rules)
        return zero_spec(s, x.shape, layout.data, layout.tensor) if zero else s

    return jax.tree_util.tree_map_with_path(spec, params)


def shard_bytes(tree: Any, shardings: Any = None) -> int:
    """Bytes held by one device (the first): from ``addressable_shards`` of arrays, or from
    ``shardings`` (``NamedSharding`` per leaf) for abstract/host trees."""
    leaves = jax.tree.leaves(tree)
    if shardings is None:
        total = 0
        for x in leaves:
            dev = x.sharding._device_assignment[0]
            total += sum(s.data.nbytes for s in x.addressable_shards if s.device == dev)
        return total
    sh = jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, NamedSharding))
    return int(sum(np.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
                   for x, s in zip(leaves, sh)))


def named(mesh: Mesh, specs: Any) -> Any:
    """PartitionSpecs -> NamedShardings on ``mesh``."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                        is_leaf=lambda s: isinstance(s, P))
