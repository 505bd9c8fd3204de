"""Flag names of config fields and the value checks every layer shares (a leaf module)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["bad", "check_choice", "check_float", "check_int", "check_pos_int", "flag",
           "is_num"]


def flag(name: str) -> str:
    """The command-line flag of a config field: ``lr_scheduler`` -> ``--lr-scheduler``."""
    return "--" + name.replace("_", "-")


def bad(name: str, value: Any, allowed: str) -> ValueError:
    """``ValueError("--flag=value is invalid: allowed")`` for config field ``name``."""
    return ValueError(f"{flag(name)}={value!r} is invalid: {allowed}")


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise bad(name, value, f"must be one of {', '.join(allowed)}")


def check_int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise bad(name, value, f"must be an int >= {lo}")


def check_pos_int(name: str, value: Any) -> None:
    check_int(name, value, 1)


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False) -> None:
    ok = is_num(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        lb = "" if lo is None else f"{'(' if lo_open else '['}{lo}"
        ub = "" if hi is None else f"{hi}{')' if hi_open else ']'}"
        rng = f"in {lb or '(-inf'}, {ub or 'inf)'}"
        raise bad(name, value, f"must be a finite number {rng}")
