"""A config's learning-rate flags -> a :class:`Plan`: which scheduler, with which arguments.

Pure data (class names and arguments), realised by :mod:`train.schedule.build` with
:mod:`schedules.torch` / :mod:`schedules.hf` / :mod:`schedules.megatron` and by
``reference/torch_train.py`` with ``torch.optim.lr_scheduler`` itself. The global batch (by
which Megatron's sample counter advances) is passed in by the run's setup: nothing here starts
JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import schedules as S

from .._flag import bad, flag
from .names import (
    COMPOSITES,
    HF_SCHEDULERS,
    LENGTH,
    MEGATRON_FIELDS,
    PEAK,
    REQUIRED,
    SCHEDULE_FIELDS,
    TORCH_SCHEDULERS,
    WSD_DECAY_STYLES,
    canonical_decay_style,
    suggest,
)

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = ["Plan", "global_batch", "plan"]

_HF_NO_WARMUP = ("constant",)
_HF_NO_TOTAL = ("constant", "constant_with_warmup", "inverse_sqrt")




@dataclasses.dataclass(frozen=True)
class Plan:
    """A scheduler to build: ``cls`` is a ``torch.optim.lr_scheduler`` class name (its
    ``kwargs`` without the optimizer; composites' ``children`` in order), ``"hf"`` (``kwargs``:
    transformers ``get_scheduler`` arguments) or ``"megatron"`` (``kwargs``: the arguments of
    :class:`schedules.megatron.OptimizerParamScheduler`). ``used`` are the config fields read."""

    cls: str
    kwargs: Mapping[str, Any]
    children: tuple[Plan, ...] = ()
    used: frozenset[str] = frozenset()


class _Reader:
    """Reads scheduler arguments from a config, recording the fields it used."""

    def __init__(self, cfg: TrainConfig, name: str) -> None:
        self.cfg, self.name, self.used = cfg, name, set()

    def given(self, field: str) -> bool:
        v = getattr(self.cfg, field)
        return v is not None and v != ()

    def get(self, field: str) -> Any:
        self.used.add(field)
        return getattr(self.cfg, field)


def _torch_plan(r: _Reader, name: str, length: int, who: str) -> Plan:
    """``name``'s torch class with its arguments; ``length``: the value of LENGTH args."""
    cls, args = TORCH_SCHEDULERS[name]
    kw: dict[str, Any] = {}
    for arg, field, default in args:
        v = r.get(field) if field else None
        if v is None or v == ():
            if default is REQUIRED:
                raise ValueError(f"{flag(field or '')} is required by {who} ({cls}'s {arg}; "
                                 f"torch has no default)")
            if default is LENGTH:
                r.used.add("total_steps")
                v = max(1, int(length))
            elif default is PEAK:
                v = float(r.cfg.lr)
            else:
                v = default
        if arg == "milestones":
            v = list(v)
        elif arg == "lr_lambda":
            try:
                v = S.expr(v)
            except ValueError as e:
                raise bad("lr_lambda", v, str(e)) from None
        kw[arg] = v
    return Plan(cls, kw)


def _warmup_plan(lr: float, W: int) -> Plan:
    return Plan("LinearLR", {"start_factor": 1.0 / W, "end_factor": 1.0, "total_iters": W})


def plan(cfg: TrainConfig, global_batch: int | None = None) -> Plan:
    """The scheduler ``cfg``'s flags name (see :mod:`train.schedule.build`); ``ValueError``
    naming the flag for a missing, invalid or unused argument. ``global_batch`` (sequences per
    update) is read by Megatron's styles only; None: derived from the config where it can be
    (:func:`global_batch`)."""
    total, W = cfg.schedule_steps, cfg.warmup
    if cfg.schedule is not None:
        p = Plan("spec", {"spec": cfg.schedule})
    elif cfg.lr_decay_style is not None:
        p = _megatron_plan(cfg, global_batch)
    else:
        name = cfg.scheduler_name
        r = _Reader(cfg, name)
        r.used |= {"warmup_steps", "warmup_ratio"}
        who = f"--lr-scheduler={name}" if cfg.lr_scheduler is not None else \
            "the default scheduler (cosine)"
        if total < W:
            raise bad("warmup_steps" if cfg.warmup_steps is not None else "warmup_ratio",
                      cfg.warmup_steps if cfg.warmup_steps is not None else cfg.warmup_ratio,
                      f"the warmup ({W} steps) must be <= the schedule length "
                      f"(--total-steps/--steps = {total})")
        if W or cfg.warmup_steps is not None or cfg.warmup_ratio is not None:
            r.used.add("total_steps")
        if name.startswith("hf:"):
            p = _hf_plan(cfg, r, name[3:], W, total)
        elif name in COMPOSITES:
            p = _composite_plan(cfg, r, name, W, total, who)
        else:
            main = _torch_plan(r, name, total - W, who)
            p = main if W == 0 else Plan("SequentialLR", {"milestones": [W]},
                                         (_warmup_plan(cfg.lr, W), main))
        p = dataclasses.replace(p, used=frozenset(r.used))
    _check_unused(cfg, p)
    return p


def _composite_plan(cfg: TrainConfig, r: _Reader, name: str, W: int, total: int,
                    who: str) -> Plan:
    chain = r.get("lr_chain")
    if not chain:
        raise ValueError(f"--lr-chain is required by {who} (the child schedulers, e.g. "
                         f"steplr,linear)")
    if name == "sequential":
        ms = list(r.get("lr_milestones") or ())
        if "multistep" in chain:
            raise bad("lr_chain", ",".join(chain), "multistep cannot be a child of sequential "
                      "(--lr-milestones names sequential's boundaries)")
        if len(ms) != len(chain) - 1:
            raise bad("lr_milestones", ",".join(map(str, ms)) or "(none)",
                      f"--lr-scheduler=sequential with --lr-chain={','.join(chain)} needs "
                      f"{len(chain) - 1} milestone(s)")
        if ms and (ms[0] <= W or ms[-1] >= total):
            raise bad("lr_milestones", ",".join(map(str, ms)),
                      f"sequential milestones are global steps and must lie in ({W}, {total}) "
                      f"(after the warmup, before the end)")
        bounds = [W, *ms, total]
        r.used.add("total_steps")  # the end of the last segment
        kids = [_torch_plan(r, c, bounds[i + 1] - bounds[i], f"{who} (child {c})")
                for i, c in enumerate(chain)]
        if W:
            kids, ms = [_warmup_plan(cfg.lr, W), *kids], [W, *ms]
        return Plan("SequentialLR", {"milestones": ms}, tuple(kids))
    kids = [_torch_plan(r, c, total, f"{who} (child {c})") for c in chain]
    if W:  # torch cannot nest a ChainedScheduler in a SequentialLR: the warmup is a child
        kids = [_warmup_plan(cfg.lr, W), *kids]
    return Plan("ChainedScheduler", {}, tuple(kids))


def _hf_plan(cfg: TrainConfig, r: _Reader, name: str, W: int, total: int) -> Plan:
    kw: dict[str, Any] = {}
    for key, field, default in HF_SCHEDULERS[name]:
        v = r.get(field)
        if v is None:
            if default is REQUIRED:
                raise ValueError(f"{flag(field)} is required by --lr-scheduler=hf:{name} "
                                 f"(transformers' {key}; it has no default)")
            continue
        kw[key] = v
    if name in _HF_NO_WARMUP:
        r.used -= {"warmup_steps", "warmup_ratio"}
    if name in _HF_NO_TOTAL and (cfg.warmup_ratio is None or name in _HF_NO_WARMUP):
        r.used.discard("total_steps")  # (--warmup-ratio reads it: W = ceil(ratio x total))
    else:
        r.used.add("total_steps")
    return Plan("hf", {"name": name,
                       "num_warmup_steps": None if name in _HF_NO_WARMUP else W,
                       "num_training_steps": None if name in _HF_NO_TOTAL else total,
                       "scheduler_specific_kwargs": kw})


def _megatron_plan(cfg: TrainConfig, g: int | None) -> Plan:
    style = canonical_decay_style(cfg.lr_decay_style)
    if cfg.lr_scheduler is not None:
        raise ValueError(f"--lr-scheduler={cfg.lr_scheduler} and --lr-decay-style={style} are "
                         f"both given: --lr-decay-style selects Megatron's scheduler instead "
                         f"of --lr-scheduler; give one")
    r = _Reader(cfg, style)

    def get(field: str) -> Any:
        v = r.get(field)
        return MEGATRON_FIELDS[field] if v is None else v

    kw = {"init_lr": float(get("lr_warmup_init")), "max_lr": float(cfg.lr),
          "min_lr": float(get("min_lr")), "lr_warmup_steps": int(get("lr_warmup_iters")),
          "lr_decay_steps": int(cfg.steps if r.get("lr_decay_iters") is None
                                else cfg.lr_decay_iters),
          "lr_decay_style": style}
    if kw["lr_warmup_steps"] >= kw["lr_decay_steps"]:
        raise bad("lr_warmup_iters", kw["lr_warmup_steps"],
                  f"must be < the decay iterations (--lr-decay-iters, default --steps: "
                  f"{kw['lr_decay_steps']}); Megatron asserts it")
    if kw["min_lr"] > kw["max_lr"]:
        raise bad("min_lr", kw["min_lr"], f"must be <= --lr={cfg.lr} (Megatron's max_lr)")
    if style == "WSD":
        ws = get("lr_wsd_decay_style")
        if ws not in WSD_DECAY_STYLES:
            raise bad("lr_wsd_decay_style", ws, f"must be one of {', '.join(WSD_DECAY_STYLES)}"
                      + suggest(str(ws), list(WSD_DECAY_STYLES)))
        if cfg.lr_wsd_decay_iters is None:
            raise ValueError("--lr-wsd-decay-iters is required by --lr-decay-style=WSD "
                             "(the annealing phase's length; Megatron asserts it)")
        kw["wsd_decay_steps"] = int(get("lr_wsd_decay_iters"))
        kw["lr_wsd_decay_style"] = get("lr_wsd_decay_style")
    # Megatron counts samples: step(increment=global batch) after each update
    g = global_batch(cfg) if g is None else g
    kw.update(increment=g, lr_warmup_steps=kw["lr_warmup_steps"] * g,
              lr_decay_steps=kw["lr_decay_steps"] * g)
    if "wsd_decay_steps" in kw:
        kw["wsd_decay_steps"] *= g
    return Plan("megatron", kw, used=frozenset(r.used))


def global_batch(cfg: TrainConfig) -> int:
    """Sequences per update of a pmap run from its flags alone (``--devices`` x processes x
    ``--grad-accum`` x ``--batch-size``): Megatron's ``global_batch_size``, by which its
    scheduler's sample counter advances per update. Anything else (no ``--devices``, a mesh
    layout) is the run's to say: ``train.run.checks.run_schedule`` passes it in."""
    if cfg.global_batch_size is not None:
        return cfg.global_batch_size
    if cfg.devices is None or cfg.mesh_engine:
        raise ValueError(f"--lr-decay-style={cfg.lr_decay_style} counts samples as Megatron "
                         f"does (the global batch size): the run's data-parallel degree is "
                         f"needed (build the schedule with train.run.checks.run_schedule)")
    return cfg.devices * (cfg.num_processes or 1) * cfg.grad_accum * cfg.batch_size


def _check_unused(cfg: TrainConfig, p: Plan) -> None:
    for field in SCHEDULE_FIELDS:
        v = getattr(cfg, field)
        if v is None or v == () or field in p.used:
            continue
        if p.cls == "spec":
            who = "--schedule (a spec carries all its arguments)"
        elif p.cls == "megatron":
            who = f"--lr-decay-style={cfg.lr_decay_style} (Megatron's flags: " + ", ".join(
                flag(f) for f in MEGATRON_FIELDS) + ")"
        else:
            who = (f"--lr-scheduler={cfg.scheduler_name}" if cfg.lr_scheduler is not None
                   else "the default scheduler (cosine with a 10% warmup; give --lr-scheduler)")
            uses = sorted(flag(f) for f in p.used if f != "total_steps")
            who += f" (it reads {', '.join(uses)})" if uses else ""
        shown = ",".join(map(str, v)) if isinstance(v, tuple) else v
        raise ValueError(f"{flag(field)}={shown!r} is not used by {who}")


