"""The trainer's learning-rate schedule from its flags: one name, one library's scheduler.

Three families, each reproduced number for number (the lr of update ``t``, 0-based, is what the
library gives after ``t`` calls of ``scheduler.step()``, each after ``optimizer.step()``):

* ``--lr-scheduler=NAME``: ``torch.optim.lr_scheduler``'s class ``NAME`` (table
  :data:`TORCH_SCHEDULERS`: torch class and, per constructor argument, its flag and default).
  Nothing is prepended unless ``--warmup-steps``/``--warmup-ratio`` is given: then
  ``SequentialLR([LinearLR(lr, 1/W, 1.0, total_iters=W), main], milestones=[W])``
  (``chained``: the warmup is the chain's first child; ``sequential``: its first segment).
* ``--lr-scheduler=hf:NAME``: transformers' ``get_scheduler(NAME, ...)`` (table
  :data:`HF_SCHEDULERS`), warmup inside the lambda as in transformers.
* ``--lr-decay-style=STYLE``: Megatron-LM's ``OptimizerParamScheduler``
  (:class:`schedules.megatron.OptimizerParamScheduler`).

With none of these (and no ``--schedule``), the default: ``cosine`` with a 10% warmup.

Arguments that are lengths (``T_max``, ``T_0``, ``total_iters``, ``total_steps``) default to the
length of the scheduler's segment (``--total-steps``, default ``--steps``, minus the warmup);
every other argument has torch's default, and is required where torch has none. A schedule
flag that the chosen scheduler does not read is an error naming it.

The flags are read once into a :class:`~train.schedule.plan.Plan` (pure data: class names
and arguments), realized by :func:`build_schedule` with :mod:`schedules.torch` and by
``reference/torch_train.py`` with ``torch.optim.lr_scheduler`` itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

import schedules as S
from schedules import hf as H
from schedules import torch as T
from schedules.megatron import OptimizerParamScheduler
from schedules.torch import TorchSchedule

from .._flag import flag
from .names import HF_SCHEDULERS, SCHEDULE_FIELDS, TORCH_SCHEDULERS
from .plan import Plan, plan

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = ["FAMILY_FIELDS", "MAX_TABLE", "PIECE_FIELDS", "applied_group_schedules",
           "applied_schedule", "build_schedule", "check_lr_curve", "group_schedules",
           "history_join", "history_pieces", "lr_table", "piece_flags", "schedule_warnings"]

#: the config fields one schedule of a run's history is built from (issue 27): what
#: ``--change-schedule`` may change and what the history records of each earlier schedule
#: (with ``steps``, the length a schedule without ``--total-steps`` follows)
PIECE_FIELDS: tuple[str, ...] = ("lr", "lr_scheduler", "lr_decay_style", "schedule",
                                 *SCHEDULE_FIELDS)
#: the fields that choose the scheduler family: when one changes, the other schedule flags
#: are the new family's (a resume does not fill them from the saved settings)
FAMILY_FIELDS: tuple[str, ...] = ("lr_scheduler", "lr_decay_style", "schedule")


# -- realizing a plan with schedules.torch / hf / megatron ------------------------------------


def _realize(p: Plan, lr: float) -> S.Schedule:
    if p.cls == "spec":
        try:
            return S.parse(p.kwargs["spec"])
        except ValueError as e:
            raise ValueError(f"--schedule={p.kwargs['spec']!r} is invalid: {e}") from None
    if p.cls == "hf":
        kw = p.kwargs
        return H.get_scheduler(kw["name"], lr, num_warmup_steps=kw["num_warmup_steps"],
                               num_training_steps=kw["num_training_steps"],
                               scheduler_specific_kwargs=dict(kw["scheduler_specific_kwargs"]))
    if p.cls == "megatron":
        return OptimizerParamScheduler(**p.kwargs)
    kids = [_realize(c, lr) for c in p.children]
    if p.cls == "ChainedScheduler":
        return T.ChainedScheduler(kids, lr=lr)
    if p.cls == "SequentialLR":
        return T.SequentialLR(lr, schedulers=kids, **p.kwargs)
    return getattr(T, p.cls)(lr, **p.kwargs)


def _flag_of(p: Plan, msg: str) -> str | None:
    """``msg`` from a scheduler's own check (``"StepLR: step_size=0 must be ..."``) with the
    argument's flag named."""
    table = {}
    for cls, args in TORCH_SCHEDULERS.values():
        for arg, field, _ in args:
            if field:
                table[(cls, arg)] = field
    for args in HF_SCHEDULERS.values():
        for key, field, _ in args:
            table.setdefault(("hf", key), field)
    for (cls, arg), field in table.items():
        if msg.startswith(f"{cls}: {arg}=") or (cls == "hf" and f": {arg}=" in msg):
            return f"{flag(field)} is invalid ({msg})"
    return None


_BUILDS = 0  # schedules built (a test checks that a run builds one)


def build_schedule(cfg: TrainConfig, global_batch: int | None = None) -> S.Schedule:
    """The learning-rate schedule of ``cfg`` (a pure ``step -> lr`` pytree): its schedule
    flags, or, for a run whose schedule changed (``--change-schedule``, ``--branch-from``),
    the :func:`history_join` of its history and the flags from ``--schedule-from`` on.

    Torch and transformers schedulers are tabulated (``horizon = max(--steps, --total-steps)``)
    so that the jitted step gathers the library's exact values. ``global_batch``: sequences per
    update, for Megatron's sample-counting styles (the run's setup passes it). Raises
    ``ValueError`` naming the flag when an argument is missing, invalid or unused. Nothing is
    cached: the run's setup builds it once and hands it to the engine."""
    global _BUILDS
    if not cfg.schedule_history:
        s = _build_one(cfg, global_batch)
    else:
        s = history_join(history_pieces(cfg, global_batch))
    _BUILDS += 1
    return s


def piece_flags(cfg: TrainConfig) -> dict[str, Any]:
    """The flags of ``cfg``'s own schedule, as a history entry records them (JSON-ready):
    :data:`PIECE_FIELDS` and ``steps``."""
    d = cfg.to_dict()
    return {k: d[k] for k in (*PIECE_FIELDS, "steps")}


def history_pieces(cfg: TrainConfig, global_batch: int | None = None
                   ) -> list[tuple[int, str, S.Schedule]]:
    """``[(from_step, offset, schedule)]``: each earlier schedule of ``cfg``'s history, built
    from its recorded flags (the rest of ``cfg`` unchanged), then ``cfg``'s own from
    ``--schedule-from``."""
    out = []
    # an entry's flags over the defaults of every schedule flag: a flag it leaves out is the
    # default, not the current schedule's
    unset = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
             for f in dataclasses.fields(cfg) if f.name in PIECE_FIELDS}
    for e in cfg.schedule_history:
        try:
            c = dataclasses.replace(cfg, **{**unset, **e["flags"]}, schedule_history=(),
                                    schedule_from=0, group=()).normalized().validate()
        except (TypeError, ValueError) as err:
            raise ValueError(f"--schedule-history: the schedule from step {e['from_step']} "
                             f"cannot be rebuilt: {err}") from None
        out.append((e["from_step"], e["offset"], _build_one(c, global_batch)))
    out.append((cfg.schedule_from, cfg.schedule_offset, _build_one(cfg, global_batch)))
    return out


def history_join(pieces: Sequence[tuple[int, str, S.Schedule]]) -> S.Schedule:
    """The effective schedule of a history: ``join`` of the pieces at their ``from_step`` s, on
    the global step; a ``local`` piece sees ``t - from_step`` (``shift``).

    >>> import schedules as S
    >>> s = history_join([(0, "global", S.constant(1.0)),
    ...                   (10, "local", S.linear(1.0, 0.0, 10))])
    >>> s(9), s(10), s(15), s(25)
    (1.0, 1.0, 0.5, 0.0)
    """
    if len(pieces) == 1 and pieces[0][0] == 0:
        return pieces[0][2]
    parts = [sched if off == "global" or frm == 0 else S.shift(sched, frm)
             for frm, off, sched in pieces]
    return S.join(*parts, at=[frm for frm, _, _ in pieces[1:]], global_step=True)


def group_schedules(cfg: TrainConfig) -> dict[str, S.Schedule]:
    """``--group=PATTERN:SPEC`` entries -> ``{pattern: schedule}`` (SPEC in the algebra's text,
    parsed by :func:`schedules.parse`, never eval'ed; absolute learning rates)."""
    out: dict[str, S.Schedule] = {}
    for g in cfg.group:
        pat, _, spec = g.partition(":")
        try:
            out[pat.strip()] = S.parse(spec.strip())
        except ValueError as e:
            raise ValueError(f"--group={g!r} is invalid: {e}") from None
    return out


def applied_group_schedules(cfg: TrainConfig) -> dict[str, S.Schedule]:
    """:func:`group_schedules` as the compiled step applies them (:func:`applied_schedule`,
    tabulated over the run): the optimizer's groups and their ``lr_<pattern>`` metrics read
    the same table, the same bits on every engine."""
    horizon = max(cfg.steps, cfg.schedule_steps)
    return {p: applied_schedule(s, horizon) for p, s in group_schedules(cfg).items()}


def _build_one(cfg: TrainConfig, global_batch: int | None) -> S.Schedule:
    """One schedule from ``cfg``'s schedule flags (no history)."""
    p = plan(cfg, global_batch)
    horizon = max(cfg.steps, cfg.schedule_steps)
    try:
        s = _realize(p, float(cfg.lr))
        s(0), s(horizon - 1)  # torch-invalid combinations raise here
    except S.SpecError:
        raise
    except ValueError as e:
        msg = str(e)
        if msg.startswith("--"):
            raise
        named = _flag_of(p, msg)
        who = (f"--lr-decay-style={cfg.lr_decay_style}" if p.cls == "megatron"
               else f"--lr-scheduler={cfg.scheduler_name}")
        raise ValueError(named or f"{who} with these arguments is invalid: {msg}") from None
    if isinstance(s, TorchSchedule) and s.horizon is None:
        s = s.replace(horizon=horizon)
    return s


#: the longest run whose learning rates are tabulated (a float32 table of 4 MiB); a longer run's
#: step computes its schedule itself
MAX_TABLE = 1 << 20


def applied_schedule(schedule: S.Schedule, steps: int) -> S.Schedule:
    """The learning rate the compiled step applies: the host's float64 value of every step
    ``t < steps`` rounded once to float32, gathered from a table (held past the end).

    XLA compiles a schedule's arithmetic differently inside each step program (fusions differ
    with the layout), so the same schedule evaluated in the pmap step and under TP + ZeRO-3 can
    differ in the last bit; a table read is the same bits everywhere, and it is exactly the
    float32 rounding of the library's own lr (torch's, transformers', Megatron's).

    >>> import schedules as S
    >>> s = applied_schedule(S.cosine(1.0, 0.0, 4), 5)
    >>> [round(s(t), 6) for t in range(6)]
    [1.0, 0.853553, 0.5, 0.146447, 0.0, 0.0]
    """
    if steps > MAX_TABLE:
        return schedule
    table = np.asarray(S.values(schedule, steps), np.float32)
    last = len(table) - 1

    def lookup(t: Any) -> Any:
        if isinstance(t, int | float | np.integer | np.floating):
            return float(table[min(max(int(t), 0), last)])
        return jnp.asarray(table)[jnp.clip(t, 0, last).astype(jnp.int32)]

    return S.lambda_(lookup)


def check_lr_curve(schedule: S.Schedule, steps: int) -> None:
    """Refuse a learning-rate curve that is negative or not finite at some update of the run.

    The compatibility layers return their library's numbers, negative ones included (torch's
    chained cosine goes below zero past ``T_max``); a negative lr turns gradient descent into
    ascent, so the trainer refuses it here, before anything compiles, naming the first such
    step and value. The whole run's curve is evaluated on the host (float64)."""
    v = S.values(schedule, steps)
    bad = np.flatnonzero(~np.isfinite(v) | (v < 0))
    if len(bad):
        t = int(bad[0])
        x = float(v[t])
        what = "negative" if math.isfinite(x) else "not finite"
        raise ValueError(f"the learning rate is {what} at step {t} ({x!r}; the first of "
                         f"{len(bad)} such step(s) of --steps={steps}): the schedule's "
                         "library computes it, but training with it would ascend the loss; "
                         "change the schedule's flags")


# -- warnings ---------------------------------------------------------------------------------


def schedule_warnings(cfg: TrainConfig, schedule: S.Schedule) -> list[str]:
    """One-line warnings about a valid but suspicious schedule: it ends before the run
    (``--total-steps`` or a ``--schedule`` spec flat for the last 10%+ of ``--steps``),
    milestones beyond the run, or an lr below 1e-6 of its peak before the last 10% of the
    run."""
    s = schedule
    n = cfg.steps
    out: list[str] = []
    if cfg.total_steps is not None and cfg.total_steps < n:
        out.append(f"--total-steps={cfg.total_steps} is shorter than --steps={n}: the schedule "
                   f"ends at step {cfg.total_steps} and the last {n - cfg.total_steps} steps "
                   f"run past it")
    late = [m for m in cfg.lr_milestones if m >= n]
    if late:
        out.append(f"--lr-milestones={','.join(map(str, cfg.lr_milestones))}: "
                   f"milestone(s) {','.join(map(str, late))} beyond the run (--steps={n}) "
                   f"never take effect")
    if n > 1_000_000:
        return out
    v = S.values(s, n)
    if cfg.schedule is not None and n >= 10:
        change = np.flatnonzero(v[1:] != v[:-1])
        if len(change) and change[-1] + 1 <= 0.9 * n:
            e = int(change[-1]) + 1
            out.append(f"--schedule is constant from step {e} to the end of the run "
                       f"(--steps={n}): does it end before the run?")
    peak_at = int(np.argmax(v))
    peak = float(v[peak_at])
    if peak > 0:
        low = np.flatnonzero(v[peak_at:] < 1e-6 * peak)
        if len(low) and peak_at + low[0] < 0.9 * n:
            t = peak_at + int(low[0])
            out.append(f"the lr falls below 1e-6 of its peak ({peak:.3g}) at step {t}, before "
                       f"the last 10% of the run (--steps={n}): check the schedule's flags")
    return out


def lr_table(schedule: S.Schedule, steps: int) -> list[tuple[int, float]]:
    """``[(t, lr of update t)]`` for ``t < steps``: host float64."""
    return [(t, float(x)) for t, x in enumerate(S.values(schedule, steps))]

