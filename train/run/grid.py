"""A sweep's grid: which config fields a population may vary (:data:`SWEEPABLE`), the
``--sweep FIELD=V1,V2`` entries parsed into the members' settings (:func:`parse_sweep`) and
each member's validated config (:func:`member_configs`). How the swept fields enter the
compiled program: :mod:`train.run.sweep`.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Sequence
from typing import Any

from ..config import TrainConfig
from ..engine.population import OPTIMIZER_FIELDS, schedule_mode
from ..metrics import settings_text
from .checks import run_schedule

__all__ = ["SCHEDULE_FIELDS", "SWEEPABLE", "member_configs", "parse_sweep", "split_values"]

#: fields a sweep may vary: they are leaves of one compiled program.
SCHEDULE_FIELDS = ("lr", "warmup_steps", "warmup_ratio", "total_steps", "min_lr",
                   "lr_step_size", "lr_gamma", "lr_factor", "lr_total_iters", "lr_start_factor",
                   "lr_end_factor", "lr_power", "lr_t0", "lr_t_mult", "lr_base",
                   "lr_pct_start", "lr_div_factor", "lr_final_div_factor", "lr_num_cycles",
                   "min_lr_ratio", "lr_warmup_iters", "lr_warmup_init", "lr_decay_iters",
                   "lr_wsd_decay_iters", "schedule")
SWEEPABLE = (*SCHEDULE_FIELDS, *OPTIMIZER_FIELDS, "dropout", "seed")

_WHY = {
    **dict.fromkeys(("model", "model_size", "n_layer", "n_head", "n_embd", "dtype", "seq_len",
                     "tokenizer"),
                    "defines the model (its parameter shapes or its compiled Flax module)"),
    **dict.fromkeys(("data", "val_data", "val_fraction", "data_cache", "batch_size",
                     "grad_accum"), "defines the data or the batch shape shared by all members"),
    **dict.fromkeys(("lr_scheduler", "lr_chain", "lr_lambda", "lr_milestones",
                     "lr_decay_style", "lr_wsd_decay_style", "lr_mode", "lr_anneal_strategy",
                     "lr_three_phase", "lr_warmup_type", "lr_decay_type"),
                    "selects the schedule's structure (a different pytree, not different "
                    "leaves)"),
    "lr_mults": "defines the optimizer's parameter groups (its structure)",
}


def _why(name: str) -> str:
    return _WHY.get(name, "is the run's bookkeeping, shared by the whole population")


# -- the grid -----------------------------------------------------------------------------


def _parse_value(name: str, text: str, hint: Any) -> Any:
    """A number, None, or (for a field taking text: ``--schedule``, a scheduled
    hyperparameter) the schedule's text, validated with the member's config."""
    args = typing.get_args(hint) or (hint,)
    t = text.strip()
    if type(None) in args and t.lower() in ("none", "null"):
        return None
    try:
        if int in args:
            return int(t)
        if float in args:
            return float(t)
    except ValueError:
        if str not in args:
            kind = "an int" if int in args else "a number"
            raise ValueError(f"--sweep {name}={text!r} is invalid: each value must be "
                             f"{kind}") from None
    return t


def split_values(entry: str, text: str) -> list[str]:
    """``V1,V2,...`` split at the commas outside parentheses and brackets, so that a
    schedule's text is one value: ``cosine(0.1, 0.01, 1000),constant(0.1)`` -> 2 values.
    ``ValueError`` naming the entry for unbalanced brackets."""
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                break
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ValueError(f"--sweep={entry!r} is invalid: unbalanced parentheses or brackets "
                         "(a value with commas, such as a schedule's text, must keep its "
                         "parentheses)")
    out.append("".join(cur))
    return [v for v in out if v.strip()]


def parse_sweep(entries: Sequence[str], seeds: int = 0,
                base_seed: int = 0) -> tuple[list[str], list[dict[str, Any]]]:
    """``["lr=1e-3,3e-3", "warmup_steps=0,50"]`` -> (swept field names, member settings).

    The members are the grid's product in row-major order (the last entry varies fastest);
    ``seeds=K > 1`` appends the axis ``seed = base_seed .. base_seed + K - 1``. Raises
    ``ValueError`` naming the entry for a malformed entry or a field that cannot be swept."""
    hints = typing.get_type_hints(TrainConfig)
    names: list[str] = []
    axes: list[list[Any]] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"--sweep={entry!r} is invalid: must be FIELD=V1,V2,... "
                             "(e.g. lr=1e-3,3e-3)")
        key, sep, vals = entry.partition("=")
        name = key.strip().lstrip("-").replace("-", "_")
        if not sep or not name or not vals.strip():
            raise ValueError(f"--sweep={entry!r} is invalid: must be FIELD=V1,V2,... "
                             "(e.g. lr=1e-3,3e-3)")
        if name not in hints:
            raise ValueError(f"--sweep={entry!r} is invalid: {name!r} is not a config field; "
                             f"sweepable: {', '.join(SWEEPABLE)}")
        if name not in SWEEPABLE:
            raise ValueError(
                f"--sweep={entry!r} is invalid: {name} cannot be swept: it {_why(name)}, which "
                "one compiled program cannot vary; run one `python -m train` per value instead. "
                f"Sweepable: {', '.join(SWEEPABLE)}")
        if name in names or (name == "seed" and seeds and seeds > 1):
            raise ValueError(f"--sweep={entry!r} is invalid: {name} is swept twice")
        values = [_parse_value(name, v, hints[name]) for v in split_values(entry, vals)]
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"--sweep={entry!r} is invalid: the values must be distinct")
        names.append(name)
        axes.append(values)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 0:
        raise ValueError(f"--sweep-seeds={seeds!r} is invalid: must be an int >= 0 (K seeds)")
    if seeds > 1:
        names.append("seed")
        axes.append(list(range(base_seed, base_seed + seeds)))
    members = [dict(zip(names, combo)) for combo in itertools.product(*axes)]
    return names, members


def member_configs(cfg: TrainConfig) -> tuple[list[str], list[dict[str, Any]], list[TrainConfig]]:
    """(swept names, member settings, member configs) of a sweep config, every member validated
    as a single run; raises ``ValueError`` naming the member otherwise."""

    names, members = parse_sweep(cfg.sweep, cfg.sweep_seeds, cfg.seed)
    if cfg.branch_from is not None:  # issue 27: a population of branches of one parent
        other = [n for n in names if n not in SCHEDULE_FIELDS]
        if other:
            raise ValueError(
                f"--sweep={','.join(other)} is invalid with --branch-from={cfg.branch_from}: "
                "every member continues the parent's state, data and optimizer, so only the "
                f"branch's schedule flags may be swept ({', '.join(SCHEDULE_FIELDS)})")
    base = dataclasses.replace(cfg, sweep=(), sweep_seeds=0)
    cfgs = []
    for i, m in enumerate(members):
        try:
            cfgs.append(base.replace(**m))
        except ValueError as e:
            raise ValueError(f"--sweep member {i} ({settings_text(m)}) is invalid: {e}") from None
    schedule_mode([run_schedule(c) for c in cfgs], members)  # structure check
    return names, members, cfgs
