"""Parameter key paths (a leaf module): ``path -> "a/b"``, per-layer and stacked-layer keys.

A per-layer key is ``{prefix}{i}`` (``h_3`` in GPT-2, ``layers_3`` in LLaMA-3); the pipeline
engine stacks those subtrees into one ``{prefix}*`` subtree whose leaves carry
:data:`STACK_DIMS` leading dimensions ``[N, V, L/(NV)]``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["STACK_DIMS", "key_names", "layer_of", "layer_prefix", "path_str", "stacked_dims"]

#: the leading dimensions ``[N, V, L/(NV)]`` of every leaf of a stacked ``{prefix}*`` subtree
STACK_DIMS = 3


def key_names(path: tuple) -> tuple[str, ...]:
    """A JAX key path as plain strings: ``(DictKey('h_0'), GetAttrKey('mu'))`` ->
    ``("h_0", "mu")``."""
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def path_str(path: tuple) -> str:
    """``(DictKey('h_0'), DictKey('attn'), ...)`` -> ``"h_0/attn/..."``."""
    return "/".join(key_names(path))


def layer_prefix(tree: Any) -> str:
    """``"h_"`` (GPT-2) or ``"layers_"`` (LLaMA-3): the per-layer keys of the model's params."""
    return "h_" if "h_0" in tree else "layers_"


def layer_of(keys: tuple[str, ...], prefix: str) -> tuple[int, int] | None:
    """(position in ``keys``, layer index) of a per-layer key ``{prefix}{i}``, if any."""
    for k, key in enumerate(keys):
        if key.startswith(prefix) and key[len(prefix):].isdigit():
            return k, int(key[len(prefix):])
    return None


def stacked_dims(path: tuple) -> int:
    """:data:`STACK_DIMS` for a leaf of a stacked ``{prefix}*`` subtree (found by its key path:
    the params, gradients and optimizer moments alike), else 0."""
    return STACK_DIMS if any(str(getattr(k, "key", "")).endswith("*") for k in path) else 0
