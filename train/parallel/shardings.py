"""Sharding rules in one place: parameter paths -> logical axes -> mesh axes.

The mesh has two axes, ``data`` (data parallelism, and ZeRO's sharding axis) and ``tensor``
(Megatron tensor parallelism, and sequence parallelism's axis). Every array of the train step
gets its layout from two tables:

* each model's ``PARAM_AXES`` (declared in ``models/gpt2.py`` and ``models/llama.py``, read
  through :func:`models.param_axes`): a parameter path pattern -> the logical axis of each
  dimension (``c_attn/kernel: (embed, heads)``);
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

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import models

from .._paths import key_names, layer_of, path_str
from .layout import Layout
from .stack import stack_tree

__all__ = ["DATA", "PIPE", "TENSOR", "ZERO_SHARDS", "fmt_bytes", "logical_rules", "named",
           "param_specs", "shard_bytes", "stack_specs", "state_specs", "to_mesh_spec",
           "zero_spec"]

DATA, TENSOR, PIPE = "data", "tensor", "pipe"

#: ZeRO stage -> the trees of the train step it shards over ``data`` (:func:`zero_spec`): the
#: one place ``--zero-stage`` takes effect (flag -> ``TrainConfig.zero_stage`` ->
#: ``Layout.zero_stage`` -> this table, read by :func:`state_specs` -> the mesh engine's
#: compiled step)
ZERO_SHARDS: dict[int, frozenset[str]] = {
    0: frozenset(),
    1: frozenset({"opt_state"}),
    2: frozenset({"opt_state", "grads"}),
    3: frozenset({"opt_state", "grads", "params"}),  # FSDP
}


def logical_rules(layout: Layout) -> tuple[tuple[str, str | None], ...]:
    """Logical axis -> mesh axis for ``layout`` (Flax ``logical_axis_rules`` format).

    ``batch`` -> data; ``heads``/``kv_heads``/``mlp``/``vocab`` -> tensor (TP); ``seq`` (the
    residual stream's sequence dimension between TP regions) -> tensor under SP; ``embed`` and
    everything else replicated."""
    tp = TENSOR if layout.tensor > 1 else None
    return (("batch", DATA), ("heads", tp), ("kv_heads", tp), ("mlp", tp), ("vocab", tp),
            ("seq", tp if layout.sequence_parallel else None), ("embed", None))


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
        s = to_mesh_spec(models.param_axes(path_str(path), len(x.shape)), rules)
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


def stack_specs(specs: Any, prefix: str) -> Any:
    """Per-layer PartitionSpecs -> the stacked ``{prefix}*`` subtree's: ``pipe`` on the stage
    dimension, each layer's own spec on the rest (the same for every layer)."""
    is_layers = lambda d: isinstance(d, dict) and f"{prefix}0" in d  # noqa: E731

    def node(d: Any) -> Any:
        if not is_layers(d):
            return d
        out = {k: v for k, v in d.items() if layer_of((k,), prefix) is None}
        out[prefix + "*"] = jax.tree.map(lambda s: P(PIPE, None, None, *s), d[f"{prefix}0"],
                                         is_leaf=lambda s: isinstance(s, P))
        return out

    return jax.tree.map(node, specs, is_leaf=is_layers)


def state_specs(params: Any, opt_state: Any, tx: optax.GradientTransformation,
                layout: Layout, stacked: tuple[str, int] | None = None) -> tuple[Any, Any]:
    """(PartitionSpecs of the state ``{step, params, opt_state}``, of the gradients), for the
    per-layer ``params``/``opt_state`` (shapes); with ``stacked`` (pipeline), of the engine's
    stacked form."""
    tp_specs = param_specs(params, layout, zero=False)
    zero_specs = param_specs(params, layout, zero=True)
    if stacked is not None:  # pipeline: the engine's state holds the layers stacked
        prefix, n_layer = stacked
        tp_specs, zero_specs = stack_specs(tp_specs, prefix), stack_specs(zero_specs, prefix)
        params = jax.eval_shape(
            lambda p: stack_tree(p, prefix, n_layer, layout.pipe, layout.virtual), params)
        opt_state = jax.eval_shape(
            lambda o: stack_tree(o, prefix, n_layer, layout.pipe, layout.virtual), opt_state)
    sharded = ZERO_SHARDS[layout.zero_stage]
    pick = lambda tree: zero_specs if tree in sharded else tp_specs  # noqa: E731
    o_specs = _like_params(opt_state, params, pick("opt_state"))
    return {"step": P(), "params": pick("params"), "opt_state": o_specs}, pick("grads")


def _like_params(opt_state: Any, params: Any, specs: Any) -> Any:
    """A spec per optimizer-state leaf: the spec of the parameter whose path ends its path
    (AdamW's ``mu``/``nu`` mirror the parameters, also inside ``multi_transform`` groups);
    replicated for everything else (counts, masked groups' placeholders have no leaves)."""
    name = key_names
    index = {name(path): (x.shape, s) for (path, x), s in zip(
        jax.tree_util.tree_leaves_with_path(params),
        jax.tree.leaves(specs, is_leaf=lambda v: isinstance(v, P)))}

    def spec(path: tuple, leaf: Any) -> P:
        keys = name(path)
        for i in range(len(keys)):
            hit = index.get(keys[i:])
            if hit is not None and tuple(hit[0]) == tuple(leaf.shape):
                return hit[1]
        return P()

    return jax.tree_util.tree_map_with_path(spec, opt_state)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)
