"""The optimizer: global-norm clipping + ``--optimizer`` with the schedule as ``learning_rate``.

``--optimizer`` is one of (torch-named hyperparameters, torch's semantics; every one built from
optax transformations, the schedule read at optax's ``count``):

* ``adamw`` (default): ``optax.adamw`` = ``torch.optim.AdamW`` (``--beta1 --beta2 --eps``,
  decoupled ``--weight-decay``: ``p -= lr * wd * p``);
* ``adam``: ``torch.optim.Adam``: ``--weight-decay`` is L2 added to the gradient before the
  moments (``g + wd * p``), as torch does;
* ``sgd``: ``torch.optim.SGD``: L2 ``--weight-decay`` in the gradient, then momentum
  ``buf = momentum * buf + (1 - dampening) * g`` (``buf = g`` at the first step), ``--nesterov``
  uses ``g + momentum * buf``; the update is ``-lr * buf`` (:func:`sgd_momentum`; optax's
  ``trace`` is the ``dampening = 0`` case);
* ``lion``: ``optax.lion`` (Chen et al. 2023; ``--beta1 --beta2``, decoupled weight decay);
* ``adafactor``: ``torch.optim.Adafactor``'s algorithm from optax's parts: factored second
  moments of every matrix (decay ``1 - t^-0.8``), update clipped to RMS 1, scaled by
  ``max(1e-3, rms(param)) * lr``, decoupled weight decay ``lr * wd * p``. These act on each
  parameter array as a whole: on the pipeline engine's stacked layers they run per layer
  (:func:`per_layer`), so the result is that of the per-layer tree.

Weight decay applies to matrices only (``models.decay_mask``: 2-D kernels; not biases, norms or
embeddings). ``--lr-mults=wte=0.1`` gives parameter groups (parameters whose path contains a
pattern; the first matching pattern wins) their own schedule ``multiplier * schedule`` through
``optax.multi_transform``; all other parameters form the group ``default``. The schedule's only
state is the optimizer's step counter (``count`` in optax's state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import models
import schedules as S

from ._paths import path_str, stacked_dims
from .config import OPTIMIZER_FLAGS, OPTIMIZERS
from .schedule.build import applied_group_schedules

__all__ = ["OPTIMIZERS", "OPTIMIZER_FLAGS", "base_optimizer", "group_labels", "make_optimizer",
           "OPTIMIZER_HPARAMS", "param_table", "path_str", "per_layer", "sgd_momentum"]


class SGDMomentumState(NamedTuple):
    """:func:`sgd_momentum`'s state: the momentum buffer and whether it holds a value yet."""

    started: jax.Array
    buf: Any


def sgd_momentum(momentum: Any, dampening: float = 0.0, nesterov: bool = False,
                 scheduled: bool = False) -> optax.GradientTransformation:
    """``torch.optim.SGD``'s momentum (before the lr): ``buf = g`` at the first step, then
    ``buf = momentum * buf + (1 - dampening) * g``; returns ``g + momentum * buf`` with
    ``nesterov`` else ``buf``. ``optax.trace(momentum, nesterov)`` equals it when
    ``dampening = 0`` (its buffer starts at 0, so its first step is ``g`` too).

    ``scheduled``: ``momentum`` is a traced value that may be 0 at a step; there torch's SGD
    skips the buffer (the update is ``g``, the buffer is kept, and a later non-zero momentum
    starts it with ``g`` if it never started), and so does this."""

    def init(params: Any) -> SGDMomentumState:
        return SGDMomentumState(jnp.zeros([], jnp.bool_), jax.tree.map(jnp.zeros_like, params))

    def update(updates: Any, state: SGDMomentumState,
               params: Any = None) -> tuple[Any, SGDMomentumState]:
        del params
        buf = jax.tree.map(
            lambda b, g: jnp.where(state.started, momentum * b + (1.0 - dampening) * g, g),
            state.buf, updates)
        out = jax.tree.map(lambda g, b: g + momentum * b, updates, buf) if nesterov else buf
        if not scheduled:
            return out, SGDMomentumState(jnp.ones([], jnp.bool_), buf)
        on = momentum != 0
        keep = lambda new, old: jnp.where(on, new, old)  # noqa: E731
        return (jax.tree.map(keep, out, updates),
                SGDMomentumState(state.started | on, jax.tree.map(keep, buf, state.buf)))

    return optax.GradientTransformation(init, update)


def per_layer(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx``, and on the leaves of the pipeline engine's stacked layers (``[N, V, L/(NV), ...]``,
    :func:`train._paths.stacked_dims`) layer by layer (``vmap`` over the stacking
    dimensions): the result of ``tx`` on the per-layer tree, stacked.

    For transformations that treat each parameter array as one block (Adafactor's factored
    second moments over an array's two largest dimensions, its block RMS clipping and scaling).
    ``tx``'s state is an optax NamedTuple whose fields are either trees mirroring the
    parameters (each leaf's own statistics) or values shared by all leaves (a step count); the
    state keeps ``tx``'s structure, so checkpoints and layouts are unaffected."""

    def per_layer_groups(fn: Any, trees: tuple, state: Any,
                         pass_state: bool = True) -> tuple[Any, Any]:
        """``fn(trees..., state) -> (out, state)`` on two lists of leaves of ``trees[0]``: the
        plain ones, and the stacked ones (vmapped over the layers); (tree of outs, state).
        ``state`` (or its shapes, without ``pass_state``) gives the state's structure."""
        treedef = jax.tree.structure(trees[0])
        mirrored = [jax.tree.structure(f) == treedef for f in state]
        fields = [jax.tree.leaves(f) if m else f for f, m in zip(state, mirrored)]
        flat = [jax.tree.leaves(t) if t is not None else [None] * treedef.num_leaves
                for t in trees]
        axes = type(state)(*[0 if m else None for m in mirrored])
        dims = [stacked_dims(path) for path, _ in jax.tree_util.tree_leaves_with_path(trees[0])]
        outs: list[Any] = [None] * treedef.num_leaves
        new: list[list[Any]] = [[None] * treedef.num_leaves for _ in state]
        last = state
        for d in sorted(set(dims)):
            idx = [i for i, di in enumerate(dims) if di == d]

            def one(*a: Any) -> tuple:
                *xs, mine = a
                return fn(*xs, type(state)(*[x if m else f for x, f, m in
                                             zip(mine, fields, mirrored)]))

            for _ in range(d):
                one = jax.vmap(one, out_axes=(0, axes))
            mine = tuple([f[i] for i in idx] if m and pass_state else None
                         for f, m in zip(fields, mirrored))
            o, last = one(*([t[i] for i in idx] for t in flat), mine)
            for k, i in enumerate(idx):
                outs[i] = o[k]
                for j, m in enumerate(mirrored):
                    if m:
                        new[j][i] = last[j][k]
        return treedef.unflatten(outs), type(state)(*[
            treedef.unflatten(new[j]) if m else last[j] for j, m in enumerate(mirrored)])

    def init(params: Any) -> Any:
        state = jax.eval_shape(tx.init, params)
        if not jax.tree.leaves(params):
            return tx.init(params)
        return per_layer_groups(lambda p, s: (p, tx.init(p)), (params,), state,
                                pass_state=False)[1]

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        if not jax.tree.leaves(updates):
            return tx.update(updates, state, params)
        return per_layer_groups(lambda g, p, s: tx.update(g, s, p), (updates, params),
                                state)

    return optax.GradientTransformation(init, update)


#: the optimizer's hyperparameters that may be schedules (``--clip-norm`` and ``--dropout``,
#: the other two, are applied by :func:`make_optimizer` and the loss)
OPTIMIZER_HPARAMS = ("weight_decay", "beta1", "beta2", "momentum")


def base_optimizer(cfg: Any, lr: S.Schedule,
                   hparams: Mapping[str, Any] | None = None) -> optax.GradientTransformation:
    """The ``--optimizer`` of ``cfg`` reading its learning rate from ``lr`` (no clipping, no
    groups): weight decay on ``models.decay_mask`` only.

    ``hparams``: scheduled hyperparameters (field -> ``step -> value``, e.g.
    ``train.schedule.hparams.applied_hparams``); those of :data:`OPTIMIZER_HPARAMS` are
    injected with ``optax.inject_hyperparams`` (read at its own step count, which advances
    with the lr's), the others stay ``cfg``'s numbers. Without any, the optimizer is the
    constant one, unchanged."""
    hp = {f: s for f, s in (hparams or {}).items() if f in OPTIMIZER_HPARAMS}
    values = {f: getattr(cfg, f) for f in OPTIMIZER_HPARAMS if f not in hp}

    def factory(weight_decay: Any, beta1: Any, beta2: Any, momentum: Any
                ) -> optax.GradientTransformation:
        return _optimizer(cfg, lr, weight_decay, beta1, beta2, momentum, "momentum" in hp)

    if not hp:
        return factory(**values)
    return optax.inject_hyperparams(factory, static_args=tuple(values))(**values, **hp)


def _optimizer(cfg: Any, lr: S.Schedule, wd: Any, beta1: Any, beta2: Any, momentum: Any,
               momentum_scheduled: bool) -> optax.GradientTransformation:
    name, mask = cfg.optimizer, models.decay_mask
    if name == "adamw":
        return optax.adamw(learning_rate=lr, b1=beta1, b2=beta2, eps=cfg.eps,
                           weight_decay=wd, mask=mask)
    if name == "adam":  # torch.optim.Adam: L2 in the gradient, before the moments
        return optax.chain(optax.add_decayed_weights(wd, mask),
                           optax.scale_by_adam(b1=beta1, b2=beta2, eps=cfg.eps),
                           optax.scale_by_learning_rate(lr))
    if name == "sgd":  # torch.optim.SGD: L2 in the gradient, then momentum
        parts = [optax.add_decayed_weights(wd, mask)]
        if momentum_scheduled or momentum > 0:
            parts.append(sgd_momentum(momentum, cfg.dampening, cfg.nesterov,
                                      scheduled=momentum_scheduled))
        return optax.chain(*parts, optax.scale_by_learning_rate(lr))
    if name == "lion":
        return optax.lion(learning_rate=lr, b1=beta1, b2=beta2, weight_decay=wd,
                          mask=mask)
    if name == "adafactor":  # torch.optim.Adafactor (d=1, beta2_decay=-0.8, eps2=1e-3)
        return optax.chain(  # block-wise parts per layer on the pipeline's stacked layers
            per_layer(optax.scale_by_factored_rms(factored=True, decay_rate=0.8, step_offset=0,
                                                  min_dim_size_to_factor=1)),
            per_layer(optax.clip_by_block_rms(1.0)),
            per_layer(optax.scale_by_param_block_rms(min_scale=1e-3)),
            optax.add_decayed_weights(wd, mask),
            optax.scale_by_learning_rate(lr),
        )
    raise ValueError(f"--optimizer={name!r} is invalid: must be one of {', '.join(OPTIMIZERS)}")


def group_labels(params: Any, lr_mults: Mapping[str, float], groups: Sequence[str] = ()) -> Any:
    """Pytree of group names: the first pattern of ``groups`` (``--group``'s patterns), then
    of ``lr_mults``, found in the path, else default."""

    def label(path: tuple, _: Any) -> str:
        p = path_str(path)
        for pat in (*groups, *lr_mults):
            if pat in p:
                return pat
        return "default"

    return jax.tree_util.tree_map_with_path(label, params)


def _clip(max_norm: Any) -> optax.GradientTransformation:
    # a scheduled clip norm of 0 at a step means no clipping there, as the number 0 does
    return optax.clip_by_global_norm(jnp.where(max_norm > 0, max_norm, jnp.inf))


def make_optimizer(cfg: Any, schedule: S.Schedule, params: Any,
                   hparams: Mapping[str, Any] | None = None) -> optax.GradientTransformation:
    """``chain(clip_by_global_norm(clip_norm), <optimizer>(schedule, ...))`` (clip 0 = off),
    with per-group learning-rate multipliers when ``cfg.lr_mults`` is non-empty and per-group
    schedules for ``cfg.group`` (``--group=PATTERN:SPEC``: the group's own tabulated
    schedule, :func:`train.schedule.build.applied_group_schedules`). ``hparams``: the
    scheduled hyperparameters (:func:`base_optimizer`; a scheduled ``clip_norm`` is injected
    too, 0 at a step = no clipping at that step)."""
    parts: list[optax.GradientTransformation] = []
    clip = (hparams or {}).get("clip_norm")
    if clip is not None:
        parts.append(optax.inject_hyperparams(_clip)(max_norm=clip))
    elif cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    own = applied_group_schedules(cfg) if getattr(cfg, "group", ()) else {}
    if cfg.lr_mults or own:
        labels = group_labels(params, cfg.lr_mults, tuple(own))
        used = set(jax.tree_util.tree_leaves(labels))
        txs = {"default": base_optimizer(cfg, schedule, hparams)}
        for pat, s in own.items():
            if pat in used:
                txs[pat] = base_optimizer(cfg, s, hparams)
        for pat, mult in cfg.lr_mults.items():
            if pat in used:
                txs[pat] = base_optimizer(cfg, schedule * float(mult), hparams)
        for what, pats in (("--group", own), ("--lr-mults", cfg.lr_mults)):
            unused = sorted(set(pats) - used)
            if unused:
                raise ValueError(f"{what} pattern(s) {unused} match no parameter; parameter "
                                 f"paths look like {path_str(_first_path(params))!r}")
        # labels from the tree the optimizer is given (a callable): the same groups for the
        # pipeline engine's stacked layers (train.parallel.stack.stack_tree)
        parts.append(optax.multi_transform(
            txs, lambda p: group_labels(p, cfg.lr_mults, tuple(own))))
    else:
        parts.append(base_optimizer(cfg, schedule, hparams))
    return optax.chain(*parts)


def _first_path(params: Any) -> tuple:
    return jax.tree_util.tree_leaves_with_path(params)[0][0]


def param_table(params: Any, lr_mults: Mapping[str, float], groups: Sequence[str] = ()) -> str:
    """A text table of the parameter groups: path, shape, weight decay, lr multiplier (``own``
    for a ``--group`` pattern's own schedule), totals."""
    mask = models.decay_mask(params)
    labels = group_labels(params, lr_mults, groups)
    rows = []
    for (path, leaf), wd, lab in zip(jax.tree_util.tree_leaves_with_path(params),
                                     jax.tree_util.tree_leaves(mask),
                                     jax.tree_util.tree_leaves(labels)):
        mult = 1.0 if lab == "default" else "own" if lab in groups else float(lr_mults[lab])
        rows.append((path_str(path), tuple(leaf.shape), bool(wd), mult, int(np.prod(leaf.shape))))
    w = max([len(r[0]) for r in rows] + [9])
    lines = [f"{'parameter':<{w}}  {'shape':<16} {'decay':<5} {'lr x':>6} {'count':>11}"]
    lines += [f"{p:<{w}}  {s!s:<16} {'yes' if d else 'no':<5} {m!s:>6} {n:>11,}"
              if isinstance(m, str) else
              f"{p:<{w}}  {s!s:<16} {'yes' if d else 'no':<5} {m:>6g} {n:>11,}"
              for p, s, d, m, n in rows]
    dec = sum(r[4] for r in rows if r[2])
    tot = sum(r[4] for r in rows)
    lines.append(f"total: {tot:,} parameters in {len(rows)} tensors; weight decay on {dec:,} "
                 f"({sum(r[2] for r in rows)} tensors), none on {tot - dec:,}")
    for lab in sorted(set(jax.tree_util.tree_leaves(labels))):
        n = sum(r[4] for r, lb in zip(rows, jax.tree_util.tree_leaves(labels)) if lb == lab)
        if lab in groups:
            lines.append(f"group {lab!r}: its own schedule (--group), {n:,} parameters")
            continue
        mult = 1.0 if lab == "default" else float(lr_mults[lab])
        lines.append(f"group {lab!r}: lr x {mult:g}, {n:,} parameters")
    return "\n".join(lines)
