"""Stacked layers: the per-layer subtrees ``{prefix}0 .. {prefix}{L-1}`` of a tree (params and
the optimizer moments that mirror them) as one ``{prefix}*`` subtree of ``[N, V, L/(NV), ...]``
arrays, the form in which the pipeline engine holds them (layer ``(v N + s) L/(NV) + j`` at
``[s, v, j]``: chunk ``v N + s`` on stage ``s``), and back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["stack_layers", "stack_tree", "unstack_tree"]


def _is_layers(prefix: str) -> Callable[[Any], bool]:
    return lambda node: isinstance(node, dict) and f"{prefix}0" in node


def stack_tree(tree: Any, prefix: str, n_layer: int, stages: int, virtual: int) -> Any:
    """Every dict holding the per-layer subtrees ``{prefix}0 .. {prefix}{L-1}`` (the params, and
    the optimizer's moments that mirror them, masked groups included) with those replaced by
    one subtree ``{prefix}*`` of ``[N, V, L/(NV), ...]`` arrays: layer ``(v N + s) L/(NV) + j``
    at ``[s, v, j]`` (chunk ``v N + s`` on stage ``s``). NumPy in, NumPy out; ``jax`` arrays or
    ``ShapeDtypeStruct`` s through ``jax.numpy`` (under ``jax.eval_shape``)."""
    per = n_layer // (stages * virtual)
    keys = [f"{prefix}{i}" for i in range(n_layer)]

    def stack(*xs: Any) -> Any:
        xp = np if all(isinstance(x, np.ndarray | np.generic) for x in xs) else jnp
        a = xp.stack(xs)
        return a.reshape(virtual, stages, per, *a.shape[1:]).swapaxes(0, 1)

    def node(d: Any) -> Any:
        if not _is_layers(prefix)(d):
            return d
        out = {k: v for k, v in d.items() if k not in keys}
        out[prefix + "*"] = jax.tree.map(stack, *[d[k] for k in keys])
        return out

    return jax.tree.map(node, tree, is_leaf=_is_layers(prefix))


def unstack_tree(tree: Any, prefix: str, n_layer: int, abstract: bool = False) -> Any:
    """The inverse of :func:`stack_tree` (host NumPy arrays; with ``abstract``, shapes)."""
    star = prefix + "*"
    is_stacked = lambda d: isinstance(d, dict) and star in d  # noqa: E731

    def node(d: Any) -> Any:
        if not is_stacked(d):
            return d
        out = {k: v for k, v in d.items() if k != star}

        def layer(i: int) -> Any:
            def pick(a: Any) -> Any:
                if abstract:
                    return jax.ShapeDtypeStruct(a.shape[3:], a.dtype)
                a = np.asarray(a)
                return a.swapaxes(0, 1).reshape(n_layer, *a.shape[3:])[i]
            return jax.tree.map(pick, d[star])

        out.update({f"{prefix}{i}": layer(i) for i in range(n_layer)})
        return out

    return jax.tree.map(node, tree, is_leaf=is_stacked)


def stack_layers(params: Any, prefix: str, n_layer: int, stages: int, virtual: int) -> Any:
    """Per-layer parameters -> one tree of ``[N, V, L/(NV), ...]`` arrays: layer
    ``(v N + s) L/(NV) + j`` at ``[s, v, j]`` (chunk ``v N + s`` on stage ``s``)."""
    per = n_layer // (stages * virtual)
    layers = [params[f"{prefix}{i}"] for i in range(n_layer)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *layers)  # [L, ...]
    return jax.tree.map(
        lambda a: a.reshape(virtual, stages, per, *a.shape[1:]).swapaxes(0, 1), stacked)
