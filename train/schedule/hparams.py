"""Every optimizer hyperparameter as a schedule of the step (issue 27).

``--weight-decay``, ``--beta1``, ``--beta2``, ``--momentum``, ``--clip-norm`` and ``--dropout``
take a number (a constant: the optimizer is built exactly as before) or a schedule in the
algebra's text (:func:`schedules.parse`, never ``eval``), absolute values of the step:
``--weight-decay='cosine(0.1, 0.01, 1000)'``. ``--lr-scheduler=onecycle|cyclic`` add torch's
momentum cycling (``cycle_momentum``, on by default as in torch): ``beta1`` of adam/adamw/lion
or ``momentum`` of sgd follows :meth:`schedules.torch.OneCycleLR.momentum` /
:meth:`schedules.torch.CyclicLR.momentum` (inside a ``sequential`` / ``chained`` composite or
after a warmup, as torch's composite schedulers leave it, :func:`cycled_momentum`).

Like the learning rate, the compiled step gathers each scheduled value from a float32 table of
the host's float64 values (:func:`applied_hparams`), so every engine and layout applies the same
bits, and the step logs the value it applied (``metrics.jsonl``: ``beta1``, ``weight_decay``...).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np

import schedules as S
from schedules import torch as T

from .._flag import bad, flag
from .build import MAX_TABLE, applied_schedule
from .plan import Plan, plan

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = ["HPARAMS", "applied_hparams", "build_hparams", "check_given_momentum",
           "check_hparam_curves", "cycled_momentum", "hparam_schedules", "momentum_field"]

#: the hyperparameters that take a schedule, and the range each value must lie in at every step
#: (lo, hi, hi open)
HPARAMS: dict[str, tuple[float, float, bool]] = {
    "weight_decay": (0.0, math.inf, False), "beta1": (0.0, 1.0, True),
    "beta2": (0.0, 1.0, True), "momentum": (0.0, 1.0, True), "clip_norm": (0.0, math.inf, False),
    "dropout": (0.0, 1.0, True),
}
_CYCLING = ("OneCycleLR", "CyclicLR")
#: torch's text where the optimizer has neither ``momentum`` nor ``betas`` in its defaults
TORCH_NO_MOMENTUM = "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"


def momentum_field(optimizer: str) -> str | None:
    """The field torch's ``cycle_momentum`` sets for ``--optimizer``: ``beta1`` where the torch
    optimizer has ``betas`` (Adam, AdamW; Lion implementations), ``momentum`` for SGD, None for
    Adafactor (``torch.optim.Adafactor`` has neither: torch raises)."""
    return {"adamw": "beta1", "adam": "beta1", "lion": "beta1", "sgd": "momentum"}.get(optimizer)


def _child_momentum(p: Plan) -> S.Schedule | None:
    kw = dict(p.kwargs)
    if p.cls not in _CYCLING or not kw.get("cycle_momentum", True):
        return None
    if p.cls == "OneCycleLR":
        keys = ("max_lr", "total_steps", "pct_start", "anneal_strategy", "base_momentum",
                "max_momentum", "three_phase")
        return T.OneCycleLR.momentum(**{k: kw[k] for k in keys if k in kw})
    keys = ("base_lr", "max_lr", "step_size_up", "step_size_down", "mode", "gamma",
            "base_momentum", "max_momentum")
    return T.CyclicLR.momentum(**{k: kw[k] for k in keys if k in kw})


def cycled_momentum(p: Plan) -> S.Schedule | None:
    """The momentum (beta1) the scheduler of plan ``p`` sets at each update, as torch does, or
    None when nothing cycles it.

    A cycling scheduler (``OneCycleLR``/``CyclicLR`` with ``cycle_momentum``) sets the momentum
    when constructed (its value at step 0; the last one constructed wins) and at each of its
    steps. In a ``ChainedScheduler`` every child steps at every update (the last cycling child
    wins); in a ``SequentialLR`` only the segment's child steps, restarted at 0 at its milestone
    (``scheduler.step(0)``), and the momentum keeps the last value set through the other
    segments."""
    if not p.children:
        return _child_momentum(p)
    kids = [_child_momentum(c) for c in p.children]
    cycling = [m for m in kids if m is not None]
    if not cycling:
        return None
    if p.cls == "ChainedScheduler":
        return cycling[-1]
    held = float(cycling[-1](0))  # set at construction by the last cycling child
    ms = list(p.kwargs["milestones"])
    bounds = [0, *ms]
    pieces: list[S.Schedule] = []
    for i, m in enumerate(kids):
        if m is None:
            pieces.append(S.constant(held))
        else:
            pieces.append(m)
            if i + 1 < len(kids):
                held = float(m(bounds[i + 1] - bounds[i] - 1))
    return S.join(*pieces, at=ms)


def hparam_schedules(cfg: TrainConfig, lr_plan: Plan | None) -> dict[str, S.Schedule]:
    """The scheduled hyperparameters of ``cfg`` (field -> schedule of the step, host float64):
    each given as a schedule's text, plus torch's momentum cycling of ``lr_plan`` (the lr's
    plan; None: none). Empty when every hyperparameter is a number (the optimizer then is
    exactly the constant one). ``ValueError`` naming the flag otherwise."""
    from ..config import HPARAM_FIELDS

    out: dict[str, S.Schedule] = {}
    for f in HPARAM_FIELDS:
        v = getattr(cfg, f)
        if isinstance(v, str):
            try:
                out[f] = S.parse(v)
            except ValueError as e:
                raise bad(f, v, f"must be a number or a schedule in the algebra's text, e.g. "
                          f"'cosine(0.1, 0.01, 1000)' ({e})") from None
    m = None if lr_plan is None else cycled_momentum(lr_plan)
    if m is not None:
        who = f"--lr-scheduler={cfg.scheduler_name}"
        field = momentum_field(cfg.optimizer)
        if field is None:
            raise ValueError(f"{who} with --optimizer={cfg.optimizer}: {TORCH_NO_MOMENTUM} "
                             f"(torch's error; give --no-lr-cycle-momentum)")
        from ..config import TrainConfig

        if getattr(cfg, field) != TrainConfig.__dataclass_fields__[field].default:
            raise ValueError(_not_used(cfg, field))
        out[field] = m
    return out


def _not_used(cfg: TrainConfig, field: str) -> str:
    return (f"{flag(field)}={getattr(cfg, field)!r} is not used: "
            f"--lr-scheduler={cfg.scheduler_name} cycles {field} between --lr-base-momentum and "
            f"--lr-max-momentum (torch's cycle_momentum, on by default, overwrites it); give "
            f"--no-lr-cycle-momentum to keep {flag(field)}")


def check_given_momentum(cfg: TrainConfig, given: Collection[str]) -> None:
    """Refuse ``--beta1`` / ``--momentum`` typed by the user (``given``: the fields the command
    line or a ``--config`` file set) while the scheduler cycles it: even at its default value,
    the number would be silently overwritten (:func:`hparam_schedules` refuses any other value
    from every entry point; a config object cannot tell a default from a typed value)."""
    field = momentum_field(cfg.optimizer)
    if field is None or field not in given or cfg.lr_decay_style is not None or (
            cfg.schedule is not None):
        return
    if cycled_momentum(plan(cfg)) is not None:
        raise ValueError(_not_used(cfg, field))


def build_hparams(cfg: TrainConfig) -> dict[str, S.Schedule]:
    """:func:`hparam_schedules` of ``cfg`` with its lr plan (torch's schedulers only cycle the
    momentum: ``--schedule`` and Megatron's styles do not)."""
    torch_plan = cfg.lr_decay_style is None and cfg.schedule is None
    return hparam_schedules(cfg, plan(cfg) if torch_plan else None)


def check_hparam_curves(scheds: dict[str, S.Schedule], steps: int) -> None:
    """Refuse a scheduled hyperparameter outside its range (or not finite) at some update of the
    run, naming the flag, the first such step and its value (host float64)."""
    for f, s in scheds.items():
        lo, hi, hi_open = HPARAMS[f]
        v = S.values(s, min(steps, MAX_TABLE))
        ok = np.isfinite(v) & (v >= lo) & ((v < hi) if hi_open else (v <= hi))
        bad_at = np.flatnonzero(~ok)
        if len(bad_at):
            t = int(bad_at[0])
            rule = f"in [{lo:g}, {hi:g}{')' if hi_open else ']'}" if math.isfinite(hi) \
                else f">= {lo:g}"
            raise ValueError(f"{flag(f)}: the schedule is {float(v[t])!r} at step {t} (the first "
                             f"of {len(bad_at)} such step(s) of --steps={steps}); every value "
                             f"must be finite and {rule}")


def applied_hparams(scheds: dict[str, S.Schedule], steps: int) -> dict[str, S.Schedule]:
    """The values the compiled step applies: each schedule's float64 host value rounded once to
    float32 and gathered from a table (:func:`train.schedule.build.applied_schedule`). The
    dropout rate is tabulated as ``1 - float32(1 - rate)`` (the float32 rate whose keep
    probability is a number ``--dropout``'s, as a population's traced rate)."""
    out = {}
    for f, s in scheds.items():
        if f == "dropout" and steps <= MAX_TABLE:
            v = S.values(s, steps)
            table = np.float32(1) - (1.0 - v).astype(np.float32)
            s = S.lambda_(_table_lookup(table))
        else:
            s = applied_schedule(s, steps)
        out[f] = s
    return out


def _table_lookup(table: np.ndarray) -> Any:
    import jax.numpy as jnp

    last = len(table) - 1

    def lookup(t: Any) -> Any:
        if isinstance(t, int | float | np.integer | np.floating):
            return float(table[min(max(int(t), 0), last)])
        return jnp.asarray(table)[jnp.clip(t, 0, last).astype(jnp.int32)]

    return lookup
