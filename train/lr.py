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

The flags are read once into a :class:`Plan` (pure data: class names and arguments), realized
by :func:`build_schedule` with :mod:`schedules.torch` and by ``reference/torch_train.py`` with
``torch.optim.lr_scheduler`` itself.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

import schedules as S
from schedules import hf as H
from schedules import torch as T
from schedules.megatron import DECAY_STYLES, WSD_DECAY_STYLES, OptimizerParamScheduler
from schedules.torch import TorchSchedule

from ._flag import bad, flag

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["CHAINABLE", "HF_SCHEDULERS", "LR_SCHEDULERS", "MEGATRON_FIELDS", "Plan",
           "SCHEDULE_FIELDS", "TORCH_SCHEDULERS", "build_schedule", "canonical_scheduler",
           "global_batch", "plan", "schedule_warnings"]


class _Required:
    def __repr__(self) -> str:
        return "required"


class _Length:
    def __repr__(self) -> str:
        return "the segment's length"


class _Peak:
    def __repr__(self) -> str:
        return "--lr"


#: defaults of :data:`TORCH_SCHEDULERS` that are not values
REQUIRED, LENGTH, PEAK = _Required(), _Length(), _Peak()

#: canonical name -> (torch class, ((torch argument, config field, default), ...)).
#: ``REQUIRED``: torch has no default; ``LENGTH``: the segment's length (``--total-steps``);
#: ``PEAK``: ``--lr``. ``constant`` is ``ConstantLR`` with ``factor=1`` (a constant lr).
TORCH_SCHEDULERS: dict[str, tuple[str, tuple[tuple[str, str | None, Any], ...]]] = {
    "constant": ("ConstantLR", (("factor", "lr_factor", 1.0),
                                ("total_iters", "lr_total_iters", LENGTH))),
    "steplr": ("StepLR", (("step_size", "lr_step_size", REQUIRED), ("gamma", "lr_gamma", 0.1))),
    "multistep": ("MultiStepLR", (("milestones", "lr_milestones", REQUIRED),
                                  ("gamma", "lr_gamma", 0.1))),
    "linear": ("LinearLR", (("start_factor", "lr_start_factor", 1.0 / 3),
                            ("end_factor", "lr_end_factor", 1.0),
                            ("total_iters", "lr_total_iters", LENGTH))),
    "exponential": ("ExponentialLR", (("gamma", "lr_gamma", REQUIRED),)),
    "cosine": ("CosineAnnealingLR", (("T_max", None, LENGTH), ("eta_min", "min_lr", 0.0))),
    "cosine-restarts": ("CosineAnnealingWarmRestarts", (("T_0", "lr_t0", LENGTH),
                                                        ("T_mult", "lr_t_mult", 1),
                                                        ("eta_min", "min_lr", 0.0))),
    "polynomial": ("PolynomialLR", (("total_iters", "lr_total_iters", LENGTH),
                                    ("power", "lr_power", 1.0))),
    "onecycle": ("OneCycleLR", (("max_lr", None, PEAK), ("total_steps", None, LENGTH),
                                ("pct_start", "lr_pct_start", 0.3),
                                ("anneal_strategy", "lr_anneal_strategy", "cos"),
                                ("div_factor", "lr_div_factor", 25.0),
                                ("final_div_factor", "lr_final_div_factor", 1e4),
                                ("three_phase", "lr_three_phase", False))),
    "cyclic": ("CyclicLR", (("base_lr", "lr_base", REQUIRED), ("max_lr", None, PEAK),
                            ("step_size_up", "lr_step_size_up", 2000),
                            ("step_size_down", "lr_step_size_down", None),
                            ("mode", "lr_mode", "triangular"), ("gamma", "lr_gamma", 1.0))),
    "lambda": ("LambdaLR", (("lr_lambda", "lr_lambda", REQUIRED),)),
}
#: composites: ``--lr-chain`` children, ``sequential`` at ``--lr-milestones`` (global steps).
COMPOSITES = {"sequential": "SequentialLR", "chained": "ChainedScheduler"}
LR_SCHEDULERS = (*TORCH_SCHEDULERS, *COMPOSITES)
#: names allowed in ``--lr-chain``: every torch name but the composites (torch cannot nest a
#: ChainedScheduler in a SequentialLR). A WSD is not a torch scheduler: use ``hf:wsd``
#: (transformers) or ``--lr-decay-style=WSD`` (Megatron).
CHAINABLE = tuple(TORCH_SCHEDULERS)

#: transformers ``get_scheduler`` name -> ((scheduler_specific_kwargs key, config field,
#: transformers' default), ...); a kwarg is passed only when its flag is given.
HF_SCHEDULERS: dict[str, tuple[tuple[str, str, Any], ...]] = {
    "linear": (),
    "cosine": (("num_cycles", "lr_num_cycles", 0.5),),
    "cosine_with_restarts": (("num_cycles", "lr_num_cycles", 1),),
    "polynomial": (("lr_end", "min_lr", 1e-7), ("power", "lr_power", 1.0)),
    "constant": (),
    "constant_with_warmup": (),
    "inverse_sqrt": (("timescale", "lr_timescale", None),),
    "cosine_with_min_lr": (("num_cycles", "lr_num_cycles", 0.5), ("min_lr", "min_lr", None),
                           ("min_lr_rate", "min_lr_ratio", None)),
    "cosine_warmup_with_min_lr": (("num_cycles", "lr_num_cycles", 0.5),
                                  ("min_lr", "min_lr", None),
                                  ("min_lr_rate", "min_lr_ratio", None),
                                  ("warmup_lr_rate", "warmup_lr_ratio", None)),
    "warmup_stable_decay": (("num_decay_steps", "lr_num_decay_steps", REQUIRED),
                            ("num_stable_steps", "lr_num_stable_steps", None),
                            ("warmup_type", "lr_warmup_type", "linear"),
                            ("decay_type", "lr_decay_type", "cosine"),
                            ("min_lr_ratio", "min_lr_ratio", 0.0),
                            ("num_cycles", "lr_num_cycles", 0.5)),
}
#: transformers names without ``num_warmup_steps`` / ``num_training_steps``
_HF_NO_WARMUP = ("constant",)
_HF_NO_TOTAL = ("constant", "constant_with_warmup", "inverse_sqrt")

#: Megatron's flags (``--lr`` is max_lr): field -> default.
MEGATRON_FIELDS: dict[str, Any] = {
    "lr_warmup_iters": 0, "lr_warmup_init": 0.0, "lr_decay_iters": "--steps",
    "min_lr": 0.0, "lr_wsd_decay_iters": None, "lr_wsd_decay_style": "exponential",
}

#: every config field that parametrizes the schedule (unused ones are errors)
SCHEDULE_FIELDS = tuple(sorted(
    {f for _, args in TORCH_SCHEDULERS.values() for _, f, _ in args if f}
    | {f for args in HF_SCHEDULERS.values() for _, f, _ in args}
    | set(MEGATRON_FIELDS)
    | {"warmup_steps", "warmup_ratio", "total_steps", "lr_chain", "lr_milestones"}))

_ALIASES = {
    "step": "steplr", "step-lr": "steplr", "multi-step": "multistep", "multisteplr": "multistep",
    "multi-step-lr": "multistep", "constantlr": "constant", "constant-lr": "constant",
    "linearlr": "linear", "linear-lr": "linear", "exponentiallr": "exponential",
    "exponential-lr": "exponential", "cosineannealinglr": "cosine",
    "cosine-annealing": "cosine", "cosine-annealing-lr": "cosine",
    "cosineannealingwarmrestarts": "cosine-restarts", "cosine-warm-restarts": "cosine-restarts",
    "polynomiallr": "polynomial", "polynomial-lr": "polynomial", "onecyclelr": "onecycle",
    "one-cycle": "onecycle", "onecycle-lr": "onecycle", "cycliclr": "cyclic",
    "cyclic-lr": "cyclic", "lambdalr": "lambda", "lambda-lr": "lambda",
    "sequentiallr": "sequential", "chainedscheduler": "chained",
}
_HF_ALIASES = {"wsd": "warmup_stable_decay"}
_MEGATRON_ALIASES = {s.lower(): s for s in DECAY_STYLES}


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def canonical_scheduler(name: Any, field: str = "lr_scheduler") -> str:
    """The canonical name of a scheduler name users type (case-insensitive; aliases such as
    ``StepLR``/``step`` -> ``steplr``, ``hf:WSD`` -> ``hf:warmup_stable_decay``); raises
    ``ValueError`` naming the flag, with a "did you mean" when a name is close."""
    if not isinstance(name, str) or not name.strip():
        raise bad(field, name, "must be a scheduler name")
    key = name.strip().lower()
    if key.startswith("hf:"):
        k = key[3:].replace("-", "_")
        k = _HF_ALIASES.get(k, k)
        if k in HF_SCHEDULERS:
            return "hf:" + k
        names = list(HF_SCHEDULERS) + list(_HF_ALIASES)
        raise bad(field, name, f"transformers names are hf:{', hf:'.join(HF_SCHEDULERS)}"
                  + _suggest(k, names).replace("'", "'hf:", 1))
    k = key.replace("_", "-")
    k = _ALIASES.get(k, k)
    if k in LR_SCHEDULERS:
        return k
    if k == "wsd":
        raise bad(field, name, "a warmup-stable-decay is not a torch scheduler; did you mean "
                  "hf:wsd (transformers' get_wsd_schedule) or --lr-decay-style=WSD (Megatron)?")
    hint = _suggest(k, list(LR_SCHEDULERS) + list(_ALIASES))
    if not hint and k.replace("-", "_") in HF_SCHEDULERS:
        hint = f"; did you mean 'hf:{k.replace('-', '_')}' (transformers)?"
    raise bad(field, name, f"must be one of {', '.join(LR_SCHEDULERS)} (torch), hf:NAME "
              f"(transformers) or none with --lr-decay-style (Megatron){hint}")


def canonical_decay_style(style: Any) -> str:
    """Megatron's ``--lr-decay-style`` (case-insensitive)."""
    if isinstance(style, str) and style.strip().lower() in _MEGATRON_ALIASES:
        return _MEGATRON_ALIASES[style.strip().lower()]
    hint = _suggest(str(style).lower(), list(_MEGATRON_ALIASES)) if isinstance(style, str) else ""
    raise bad("lr_decay_style", style, f"must be one of {', '.join(DECAY_STYLES)}{hint}")


# -- the plan: which scheduler, with which arguments ------------------------------------------


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


def plan(cfg: TrainConfig) -> Plan:
    """The scheduler ``cfg``'s flags name (see the module docstring); ``ValueError`` naming
    the flag for a missing, invalid or unused argument."""
    total, W = cfg.schedule_steps, cfg.warmup
    if cfg.schedule is not None:
        p = Plan("spec", {"spec": cfg.schedule})
    elif cfg.lr_decay_style is not None:
        p = _megatron_plan(cfg)
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


def _megatron_plan(cfg: TrainConfig) -> Plan:
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
                      + _suggest(str(ws), list(WSD_DECAY_STYLES)))
        if cfg.lr_wsd_decay_iters is None:
            raise ValueError("--lr-wsd-decay-iters is required by --lr-decay-style=WSD "
                             "(the annealing phase's length; Megatron asserts it)")
        kw["wsd_decay_steps"] = int(get("lr_wsd_decay_iters"))
        kw["lr_wsd_decay_style"] = get("lr_wsd_decay_style")
    # Megatron counts samples: step(increment=global batch) after each update
    g = global_batch(cfg)
    kw.update(increment=g, lr_warmup_steps=kw["lr_warmup_steps"] * g,
              lr_decay_steps=kw["lr_decay_steps"] * g)
    if "wsd_decay_steps" in kw:
        kw["wsd_decay_steps"] *= g
    return Plan("megatron", kw, used=frozenset(r.used))


def global_batch(cfg: TrainConfig) -> int:
    """Sequences per update (all devices x ``--grad-accum`` x ``--batch-size``): Megatron's
    ``global_batch_size``, by which its scheduler's sample counter advances per update."""
    if cfg.devices is not None:
        d = cfg.devices
    elif cfg.coordinator_address is None:
        import jax  # single process: counting local devices does not preclude anything

        d = jax.local_device_count()
    else:
        raise ValueError(f"--lr-decay-style={cfg.lr_decay_style} counts samples as Megatron "
                         f"does (the global batch size): give --devices with "
                         f"--coordinator-address")
    return d * (cfg.num_processes or 1) * cfg.grad_accum * cfg.batch_size


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


_BUILDS = 0  # schedules built (a test checks that the trainer builds one)


def build_schedule(cfg: TrainConfig) -> S.Schedule:
    """The learning-rate schedule of ``cfg`` (a pure ``step -> lr`` pytree), built once per
    config object: the same object is returned on later calls.

    Torch and transformers schedulers are tabulated (``horizon = max(--steps, --total-steps)``)
    so that the jitted step gathers the library's exact values. Raises ``ValueError`` naming
    the flag when an argument is missing, invalid or unused."""
    cached = cfg.__dict__.get("_schedule")
    if cached is not None:
        return cached
    global _BUILDS
    p = plan(cfg)
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
    _BUILDS += 1
    object.__setattr__(cfg, "_schedule", s)
    return s


# -- warnings ---------------------------------------------------------------------------------


def schedule_warnings(cfg: TrainConfig, schedule: S.Schedule | None = None) -> list[str]:
    """One-line warnings about a valid but suspicious schedule: it ends before the run
    (``--total-steps`` or a ``--schedule`` spec flat for the last 10%+ of ``--steps``),
    milestones beyond the run, or an lr below 1e-6 of its peak before the last 10% of the
    run."""
    s = build_schedule(cfg) if schedule is None else schedule
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


def lr_table(cfg: TrainConfig, steps: int | None = None) -> list[tuple[int, float]]:
    """``[(t, lr of update t)]`` for ``t < steps`` (default ``--steps``): host float64."""
    s = build_schedule(cfg)
    n = cfg.steps if steps is None else steps
    return [(t, float(x)) for t, x in enumerate(S.values(s, n))]
