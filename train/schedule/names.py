"""The scheduler name tables: torch, transformers (``hf:``) and Megatron-LM flags.

Pure data and the name canonicalisation, shared by the config (which checks names), the plan
(:mod:`train.schedule.plan`) and ``reference/torch_train.py`` (the PyTorch reference trainer
builds the same plan with torch itself). Imports nothing of ``train`` but the flag leaf.
"""

from __future__ import annotations

import difflib
from typing import Any

from schedules.megatron import DECAY_STYLES, WSD_DECAY_STYLES

from .._flag import bad

__all__ = ["CHAINABLE", "COMPOSITES", "DECAY_STYLES", "HF_SCHEDULERS", "LENGTH", "LR_SCHEDULERS",
           "MEGATRON_FIELDS", "PEAK", "REQUIRED", "SCHEDULE_FIELDS", "TORCH_SCHEDULERS",
           "WSD_DECAY_STYLES", "canonical_decay_style", "canonical_scheduler", "suggest"]


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
                                ("three_phase", "lr_three_phase", False),
                                ("cycle_momentum", "lr_cycle_momentum", True),
                                ("base_momentum", "lr_base_momentum", 0.85),
                                ("max_momentum", "lr_max_momentum", 0.95))),
    "cyclic": ("CyclicLR", (("base_lr", "lr_base", REQUIRED), ("max_lr", None, PEAK),
                            ("step_size_up", "lr_step_size_up", 2000),
                            ("step_size_down", "lr_step_size_down", None),
                            ("mode", "lr_mode", "triangular"), ("gamma", "lr_gamma", 1.0),
                            ("cycle_momentum", "lr_cycle_momentum", True),
                            ("base_momentum", "lr_base_momentum", 0.8),
                            ("max_momentum", "lr_max_momentum", 0.9))),
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


def suggest(name: str, choices: list[str]) -> str:
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
                  + suggest(k, names).replace("'", "'hf:", 1))
    k = key.replace("_", "-")
    k = _ALIASES.get(k, k)
    if k in LR_SCHEDULERS:
        return k
    if k == "wsd":
        raise bad(field, name, "a warmup-stable-decay is not a torch scheduler; did you mean "
                  "hf:wsd (transformers' get_wsd_schedule) or --lr-decay-style=WSD (Megatron)?")
    hint = suggest(k, list(LR_SCHEDULERS) + list(_ALIASES))
    if not hint and k.replace("-", "_") in HF_SCHEDULERS:
        hint = f"; did you mean 'hf:{k.replace('-', '_')}' (transformers)?"
    raise bad(field, name, f"must be one of {', '.join(LR_SCHEDULERS)} (torch), hf:NAME "
              f"(transformers) or none with --lr-decay-style (Megatron){hint}")


def canonical_decay_style(style: Any) -> str:
    """Megatron's ``--lr-decay-style`` (case-insensitive)."""
    if isinstance(style, str) and style.strip().lower() in _MEGATRON_ALIASES:
        return _MEGATRON_ALIASES[style.strip().lower()]
    hint = suggest(str(style).lower(), list(_MEGATRON_ALIASES)) if isinstance(style, str) else ""
    raise bad("lr_decay_style", style, f"must be one of {', '.join(DECAY_STYLES)}{hint}")

