"""Eager argument checks: every failure is a ``ValueError`` naming the
schedule, the parameter, the value and the rule.

Traced or batched JAX values (from ``jax.grad`` with respect to a
hyperparameter, say) are let through unchecked: their value is not known.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

__all__ = [
    "Checks",
    "FLOAT32_MAX",
    "INT_LIMIT",
    "check_choice",
    "check_float",
    "check_int",
    "check_int_seq",
    "check_float_seq",
    "fail",
    "is_traced",
]


#: the largest finite float32: the array path computes in float32 (JAX's default), so a
#: number beyond it would be ``inf`` there while finite on the host. Every real argument
#: must be at most this in magnitude.
FLOAT32_MAX = 3.4028234663852886e38

#: integers (step counts, milestones, seeds, shifts) must be below this in magnitude: the
#: array path computes integers in int32.
INT_LIMIT = 2**31


def fail(where: str, name: str, value: Any, rule: str) -> ValueError:
    return ValueError(f"{where}: {name}={value!r} {rule}")


def is_traced(x: Any) -> bool:
    return isinstance(x, jax.Array) and not isinstance(x, np.ndarray)


def _as_real(where: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise fail(where, name, value, f"must be a real number, not {type(value).__name__}")
    try:
        v = float(value)
    except OverflowError:  # an int >= 2**1024
        v = math.inf
    if not math.isfinite(v):
        raise fail(where, name, _short(value), "must be finite")
    if abs(v) > FLOAT32_MAX:
        raise fail(
            where,
            name,
            value,
            f"must be at most {FLOAT32_MAX!r} in magnitude (float32's range: the array "
            "path computes in float32)",
        )
    return v


def _short(value: Any) -> Any:
    """A huge int shortened for the message (its repr can run to hundreds of digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"<int of {len(str(abs(value)))} digits>"
    return value


def check_float(
    where: str,
    name: str,
    value: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A finite real number within the given bounds, returned as ``float``."""
    if is_traced(value):
        return value
    v = _as_real(where, name, value)
    if ge is not None and not v >= ge:
        raise fail(where, name, value, f"must be >= {ge}")
    if gt is not None and not v > gt:
        raise fail(where, name, value, f"must be > {gt}")
    if le is not None and not v <= le:
        raise fail(where, name, value, f"must be <= {le}")
    if lt is not None and not v < lt:
        raise fail(where, name, value, f"must be < {lt}")
    return v


#: a step count of the algebra's decays may go beyond int32: the host path computes in Python
#: ints and float64, the array path in int64 under ``jax_enable_x64`` (without it, a step count
#: this large is a ValueError at evaluation, see :meth:`schedules.Schedule.__call__`).
BIG_INT_LIMIT = 2**62


def check_int(
    where: str,
    name: str,
    value: Any,
    *,
    ge: int | None = None,
    gt: int | None = None,
    big: bool = False,
) -> Any:
    """An integer (an integral float such as ``100.0`` is accepted) within bounds, as ``int``;
    below ``2**31`` in magnitude (the array path computes integers in int32), or below
    ``2**62`` with ``big`` (a step count the host path and x64 can take)."""
    if is_traced(value):
        return value
    limit = BIG_INT_LIMIT if big else INT_LIMIT
    exact = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not (exact and abs(int(value)) >= limit):
        v = _as_real(where, name, value)
        if v != int(v):
            raise fail(where, name, value, "must be an integer")
    i = int(value) if exact else int(v)
    if abs(i) >= limit:
        rule = (
            "must be below 2**62 in magnitude"
            if big
            else "must be below 2**31 in magnitude (the array path computes integers in int32)"
        )
        raise fail(where, name, _short(value), rule)
    if ge is not None and not i >= ge:
        raise fail(where, name, value, f"must be >= {ge}")
    if gt is not None and not i > gt:
        raise fail(where, name, value, f"must be > {gt}")
    return i


def _check_seq(
    check: Any,
    where: str,
    name: str,
    value: Any,
    ge: Any,
    increasing: str | None,
    min_len: int,
) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise fail(where, name, value, "must be a list of numbers")
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise fail(where, name, value, "must be a list of numbers (a 1-D array)")
    seq = list(value)
    if len(seq) < min_len:
        raise fail(where, name, value, f"must have at least {min_len} entries")
    out = tuple(check(where, f"{name}[{i}]", v, ge=ge) for i, v in enumerate(seq))
    _check_order(where, name, value, out, increasing)
    return out


def check_int_seq(
    where: str,
    name: str,
    value: Any,
    *,
    ge: int | None = None,
    increasing: str | None = None,
    min_len: int = 0,
) -> tuple[Any, ...]:
    """A tuple of ints; ``increasing`` is ``"strict"``, ``"non-strict"`` or None."""
    return _check_seq(check_int, where, name, value, ge, increasing, min_len)


def check_float_seq(
    where: str,
    name: str,
    value: Any,
    *,
    ge: float | None = None,
    increasing: str | None = None,
    min_len: int = 0,
) -> tuple[Any, ...]:
    """A tuple of finite floats, as :func:`check_int_seq`."""
    return _check_seq(check_float, where, name, value, ge, increasing, min_len)


def _check_order(where: str, name: str, raw: Any, out: tuple[Any, ...], how: str | None) -> None:
    if how is None or any(is_traced(v) for v in out):
        return
    for a, b in itertools.pairwise(out):
        if (how == "strict" and not a < b) or (how == "non-strict" and not a <= b):
            rule = "increasing" if how == "strict" else "non-decreasing"
            raise fail(where, name, raw, f"must be {rule}")


def check_choice(where: str, name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise fail(where, name, value, f"must be one of {allowed}")
    return value


class Checks:
    """The ``check_*`` functions with ``where`` bound: a schedule's checks name it once.

    :class:`schedules.Schedule` gives every registered class one, ``cls._check``, bound to
    its registered name, so a constructor writes ``check.float("init", init, ge=0)``.

    >>> Checks("cosine").int("steps", 10.0, ge=0)
    10
    >>> Checks("cosine").float("init", -1, ge=0)
    Traceback (most recent call last):
    ...
    ValueError: cosine: init=-1 must be >= 0
    """

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def __repr__(self) -> str:
        return f"Checks({self.where!r})"

    def float(self, name: str, value: Any, **bounds: Any) -> Any:
        """:func:`check_float` under this name."""
        return check_float(self.where, name, value, **bounds)

    def int(self, name: str, value: Any, **bounds: Any) -> Any:
        """:func:`check_int` under this name."""
        return check_int(self.where, name, value, **bounds)

    def int_seq(self, name: str, value: Any, **kw: Any) -> tuple[Any, ...]:
        """:func:`check_int_seq` under this name."""
        return check_int_seq(self.where, name, value, **kw)

    def float_seq(self, name: str, value: Any, **kw: Any) -> tuple[Any, ...]:
        """:func:`check_float_seq` under this name."""
        return check_float_seq(self.where, name, value, **kw)

    def choice(self, name: str, value: Any, choices: Sequence[str]) -> str:
        """:func:`check_choice` under this name."""
        return check_choice(self.where, name, value, choices)

    def fail(self, name: str, value: Any, rule: str) -> ValueError:
        """:func:`fail` under this name (the error to raise)."""
        return fail(self.where, name, value, rule)
