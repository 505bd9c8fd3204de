"""``ReduceLROnPlateau`` as an optax transformation (its lr depends on the metric, not
only on the step: it cannot be a schedule)."""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._validate import check_choice, check_float, check_int, fail
from ._base import _check_lr_list, _is_list


class PlateauState(NamedTuple):
    """State of :func:`ReduceLROnPlateau`: torch's ``last_epoch``, the current
    ``lr``, ``best``, ``num_bad_epochs`` and ``cooldown_counter``."""

    last_epoch: Any
    lr: Any
    best: Any
    num_bad_epochs: Any
    cooldown_counter: Any


def reduce_on_plateau(
    lr: float | list[float],
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float | list[float] = 0,
    eps: float = 1e-8,
) -> Any:
    """torch's ``ReduceLROnPlateau`` as an optax ``GradientTransformationExtraArgs``.

    ``update(updates, state, params=None, *, value=metric)`` performs torch's
    ``scheduler.step(metric)`` and multiplies the updates by ``lr_now / lr`` (so
    put it after an optimizer built with ``learning_rate=lr``); ``state.lr`` is
    torch's ``param_group["lr"]``. Semantics (mode, factor, patience, threshold,
    threshold_mode, cooldown, min_lr, eps) follow torch exactly. A list of lrs (one per
    param group, ``min_lr`` a number or a list as long) gives a list of transformations.

    >>> import jax.numpy as jnp, optax
    >>> from schedules import torch as T
    >>> tx = T.reduce_on_plateau(1.0, patience=0, factor=0.5)
    >>> st = tx.init(jnp.zeros(1))
    >>> for loss in [1.0, 1.0, 1.0]:
    ...     _, st = tx.update(jnp.ones(1), st, value=loss)
    >>> float(st.lr)
    0.25
    """
    import optax

    w = "ReduceLROnPlateau"
    if _is_list(lr):
        _check_lr_list(w, lr)
        mins = min_lr if _is_list(min_lr) else [min_lr] * len(lr)
        if len(mins) != len(lr):  # type: ignore[arg-type]
            raise fail(
                w,
                "min_lr",
                min_lr,
                f"must have {len(lr)} entries, one per lr (torch: 'expected {len(lr)} min_lrs')",
            )
        return [
            reduce_on_plateau(
                x, mode, factor, patience, threshold, threshold_mode, cooldown, m, eps
            )
            for x, m in zip(lr, mins)
        ]  # type: ignore[arg-type]
    if _is_list(min_lr):  # one param group: torch takes a list of one min_lr
        if len(min_lr) != 1:
            raise fail(
                w,
                "min_lr",
                min_lr,
                f"must have 1 entry, one per lr (torch: 'expected 1 min_lrs, got {len(min_lr)}')",
            )
        min_lr = min_lr[0]
    factor = check_float(w, "factor", factor)
    if factor >= 1.0:
        raise fail(w, "factor", factor, "must be < 1.0 (torch: 'Factor should be < 1.0.')")
    check_choice(w, "mode", mode, ("min", "max"))
    check_choice(w, "threshold_mode", threshold_mode, ("rel", "abs"))
    patience = check_int(w, "patience", patience)
    threshold = check_float(w, "threshold", threshold)
    cooldown = check_int(w, "cooldown", cooldown)
    eps = check_float(w, "eps", eps)
    lr0 = check_float(w, "lr", lr, ge=0)
    floor = check_float(w, "min_lr", min_lr, ge=0)

    def init(params: Any) -> PlateauState:
        del params
        f = jnp.result_type(float)
        return PlateauState(
            jnp.zeros((), jnp.int32),
            jnp.asarray(lr0, f),
            jnp.asarray(math.inf if mode == "min" else -math.inf, f),
            jnp.zeros((), jnp.int32),
            jnp.zeros((), jnp.int32),
        )

    def is_better(a: Any, best: Any) -> Any:
        if mode == "min" and threshold_mode == "rel":
            return a < best * (1.0 - threshold)
        if mode == "min":
            return a < best - threshold
        if threshold_mode == "rel":
            return a > best * (threshold + 1.0)
        return a > best + threshold

    def update(
        updates: Any, state: PlateauState, params: Any = None, *, value: Any, **extra: Any
    ) -> tuple[Any, PlateauState]:
        del params, extra
        cur = jnp.asarray(value, state.best.dtype)
        better = is_better(cur, state.best)
        best = jnp.where(better, cur, state.best)
        bad = jnp.where(better, 0, state.num_bad_epochs + 1)
        in_cd = state.cooldown_counter > 0
        cd = jnp.where(in_cd, state.cooldown_counter - 1, state.cooldown_counter)
        bad = jnp.where(in_cd, 0, bad)
        reduce = bad > patience
        new_lr = jnp.maximum(state.lr * factor, floor)
        lr = jnp.where(reduce & (state.lr - new_lr > eps), new_lr, state.lr)
        cd = jnp.where(reduce, cooldown, cd)
        bad = jnp.where(reduce, 0, bad)
        new = PlateauState(state.last_epoch + 1, lr, best, bad, cd)
        scale = lr / lr0 if lr0 != 0 else jnp.zeros_like(lr)
        updates = jax.tree_util.tree_map(lambda u: (u * scale).astype(u.dtype), updates)
        return updates, new

    return optax.GradientTransformationExtraArgs(init, update)


def ReduceLROnPlateau(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 (torch's class name)
    """torch's name for :func:`reduce_on_plateau` (the same arguments and result), kept
    for code written against torch.

    >>> from schedules import torch as T
    >>> type(T.ReduceLROnPlateau(1.0)).__name__
    'GradientTransformationExtraArgs'
    """
    return reduce_on_plateau(*args, **kwargs)


ReduceLROnPlateau.__signature__ = inspect.signature(reduce_on_plateau)  # type: ignore[attr-defined]


def is_plateau(x: Any) -> bool:
    """Whether ``x`` is an optax transformation (what :func:`reduce_on_plateau` returns)."""
    return isinstance(x, tuple) and hasattr(x, "init") and hasattr(x, "update")
