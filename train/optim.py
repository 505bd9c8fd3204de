"""The optimizer: global-norm clipping + AdamW with the schedule as ``learning_rate``.

Weight decay applies to matrices only (``models.decay_mask``: 2-D kernels; not biases, norms or
embeddings). ``--lr-mults=wte=0.1`` gives parameter groups (parameters whose path contains a
pattern; the first matching pattern wins) their own schedule ``multiplier * schedule`` through
``optax.multi_transform``; all other parameters form the group ``default``. The schedule's only
state is the optimizer's step counter (``count`` in optax's state).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax

import models
import schedules as S

__all__ = ["group_labels", "make_optimizer", "param_table", "path_str"]


def path_str(path: tuple) -> str:
    """``(DictKey('h_0'), DictKey('attn'), ...)`` -> ``"h_0/attn/..."``."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def group_labels(params: Any, lr_mults: Mapping[str, float]) -> Any:
    """Pytree of group names: the first pattern of ``lr_mults`` found in the path, else default."""

    def label(path: tuple, _: Any) -> str:
        p = path_str(path)
        for pat in lr_mults:
            if pat in p:
                return pat
        return "default"

    return jax.tree_util.tree_map_with_path(label, params)


def _adamw(lr: S.Schedule, cfg: Any) -> optax.GradientTransformation:
    return optax.adamw(
        learning_rate=lr, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps,
        weight_decay=cfg.weight_decay, mask=models.decay_mask,
    )


def make_optimizer(cfg: Any, schedule: S.Schedule, params: Any) -> optax.GradientTransformation:
    """``chain(clip_by_global_norm(clip_norm), adamw(schedule, ...))`` (clip 0 = off), with
    per-group learning-rate multipliers when ``cfg.lr_mults`` is non-empty."""
    parts: list[optax.GradientTransformation] = []
    if cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    if cfg.lr_mults:
        labels = group_labels(params, cfg.lr_mults)
        used = set(jax.tree_util.tree_leaves(labels))
        txs = {"default": _adamw(schedule, cfg)}
        for pat, mult in cfg.lr_mults.items():
            if pat in used:
                txs[pat] = _adamw(schedule * float(mult), cfg)
        unused = sorted(set(cfg.lr_mults) - used)
        if unused:
            raise ValueError(f"--lr-mults pattern(s) {unused} match no parameter; parameter "
                             f"paths look like {path_str(_first_path(params))!r}")
        parts.append(optax.multi_transform(txs, labels))
    else:
        parts.append(_adamw(schedule, cfg))
    return optax.chain(*parts)


def _first_path(params: Any) -> tuple:
    return jax.tree_util.tree_leaves_with_path(params)[0][0]


def param_table(params: Any, lr_mults: Mapping[str, float]) -> str:
    """A text table of the parameter groups: path, shape, weight decay, lr multiplier, totals."""
    mask = models.decay_mask(params)
    labels = group_labels(params, lr_mults)
    rows = []
    for (path, leaf), wd, lab in zip(jax.tree_util.tree_leaves_with_path(params),
                                     jax.tree_util.tree_leaves(mask),
                                     jax.tree_util.tree_leaves(labels)):
        mult = 1.0 if lab == "default" else float(lr_mults[lab])
        rows.append((path_str(path), tuple(leaf.shape), bool(wd), mult, int(np.prod(leaf.shape))))
    w = max([len(r[0]) for r in rows] + [9])
    lines = [f"{'parameter':<{w}}  {'shape':<16} {'decay':<5} {'lr x':>6} {'count':>11}"]
    lines += [f"{p:<{w}}  {s!s:<16} {'yes' if d else 'no':<5} {m:>6g} {n:>11,}"
              for p, s, d, m, n in rows]
    dec = sum(r[4] for r in rows if r[2])
    tot = sum(r[4] for r in rows)
    lines.append(f"total: {tot:,} parameters in {len(rows)} tensors; weight decay on {dec:,} "
                 f"({sum(r[2] for r in rows)} tensors), none on {tot - dec:,}")
    for lab in sorted(set(jax.tree_util.tree_leaves(labels))):
        n = sum(r[4] for r, lb in zip(rows, jax.tree_util.tree_leaves(labels)) if lb == lab)
        mult = 1.0 if lab == "default" else float(lr_mults[lab])
        lines.append(f"group {lab!r}: lr x {mult:g}, {n:,} parameters")
    return "\n".join(lines)
