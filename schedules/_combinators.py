"""Combinators: schedules built from other schedules."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any

import numpy as np

from ._core import OPERATORS, Schedule, as_schedule
from ._ops import PY, Ops
from ._primitives import check_cycles, cycle_of
from ._validate import Checks, is_traced

__all__ = [
    "add",
    "clip",
    "flat_add",
    "flat_multiply",
    "folded_scale",
    "join",
    "lambda_",
    "maximum",
    "minimum",
    "multiply",
    "repeat",
    "scale",
    "scale_batch",
    "shift",
    "warmup",
]


def _schedules(check: Checks, name: str, items: Any, min_len: int = 1) -> tuple[Schedule, ...]:
    items = tuple(items)
    if len(items) < min_len:
        raise check.fail(name, items, f"must have at least {min_len} schedule(s)")
    out = []
    for i, x in enumerate(items):
        try:
            out.append(as_schedule(x))
        except ValueError:
            raise check.fail(f"{name}[{i}]", x, "must be a Schedule or a number") from None
    return tuple(out)


class join(Schedule, name="join"):
    """Piece ``i`` runs from milestone ``at[i - 1]`` (0 for the first) to ``at[i]``.

    Each piece sees its local step ``t - at[i - 1]``, or the global step ``t``
    with ``global_step=True``. ``len(at) = len(pieces) - 1``.

    >>> import schedules as S
    >>> s = S.join(S.linear(0.0, 1.0, 10), S.cosine(1.0, 0.0, 90), at=[10])
    >>> s(5), s(10), round(s(55), 12), round(s(100), 12)
    (0.5, 1.0, 0.5, 0.0)
    """

    _static = frozenset({"global_step"})
    _varargs = "pieces"

    def __init__(self, *pieces: Schedule, at: Any, global_step: bool = False) -> None:
        check = self._check
        pieces_t = _schedules(check, "pieces", pieces)
        at_t = check.int_seq("at", at, increasing="strict")
        if len(at_t) != len(pieces_t) - 1:
            raise check.fail("at", at, f"must have len(pieces) - 1 = {len(pieces_t) - 1} entries")
        if not isinstance(global_step, bool):
            raise check.fail("global_step", global_step, "must be True or False")
        self._set(pieces=pieces_t, at=at_t, global_step=global_step)

    def _local(self, i: int, t: Any) -> Any:
        return t if (self.global_step or i == 0) else t - self.at[i - 1]

    def _eval(self, t: Any, ops: Ops) -> Any:
        if ops.host:
            i = bisect_right(self.at, t)
            return self.pieces[i]._eval(
                t if i == 0 or self.global_step else t - self.at[i - 1], ops
            )
        out = self.pieces[0]._eval(t, ops)
        for i in range(1, len(self.pieces)):
            out = ops.where(t >= self.at[i - 1], self.pieces[i]._eval(self._local(i, t), ops), out)
        return out


class _Fold(Schedule):
    """Schedules combined pointwise, left to right, by ``_combine``."""

    _varargs: str = "items"

    def __init__(self, *items: Schedule) -> None:
        self._set(**{self._varargs: _schedules(self._check, self._varargs, items, min_len=1)})

    @staticmethod
    def _combine(a: Any, b: Any, ops: Ops) -> Any:
        raise NotImplementedError

    def _eval(self, t: Any, ops: Ops) -> Any:
        items = getattr(self, self._varargs)
        out = items[0]._eval(t, ops)
        for f in items[1:]:
            out = self._combine(out, f._eval(t, ops), ops)
        return out


class multiply(_Fold, name="multiply"):
    """The product of the factors: ``f(t) = prod_i factors[i](t)``. Also ``a * b``.

    >>> import schedules as S
    >>> (S.constant(2.0) * S.linear(0.0, 1.0, 10))(5)
    1.0
    """

    _varargs = "factors"

    @staticmethod
    def _combine(a: Any, b: Any, ops: Ops) -> Any:
        return a * b


class add(_Fold, name="add"):
    """The sum of the terms: ``f(t) = sum_i terms[i](t)``. Also ``a + b``.

    >>> import schedules as S
    >>> (S.constant(1.0) + 0.5)(3)
    1.5
    """

    _varargs = "terms"

    @staticmethod
    def _combine(a: Any, b: Any, ops: Ops) -> Any:
        return a + b


class minimum(_Fold, name="minimum"):
    """The pointwise minimum of schedules.

    >>> import schedules as S
    >>> S.minimum(S.linear(0.0, 2.0, 10), S.constant(1.0))(8)
    1.0
    """


    @staticmethod
    def _combine(a: Any, b: Any, ops: Ops) -> Any:
        return ops.minimum(a, b)


class maximum(_Fold, name="maximum"):
    """The pointwise maximum of schedules.

    >>> import schedules as S
    >>> S.maximum(S.linear(0.0, 2.0, 10), S.constant(1.0))(2)
    1.0
    """


    @staticmethod
    def _combine(a: Any, b: Any, ops: Ops) -> Any:
        return ops.maximum(a, b)


class scale(Schedule, name="scale"):
    """``f(t) = factor * schedule(t)``; also ``0.1 * s`` and ``s / 10``.

    >>> import schedules as S
    >>> (0.5 * S.constant(4.0))(0)
    2.0
    """


    def __init__(self, schedule: Schedule, factor: float) -> None:
        check = self._check
        self._set(
            schedule=_schedules(check, "schedule", [schedule])[0],
            factor=check.float("factor", factor, ge=0),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        return self.factor * self.schedule._eval(t, ops)


class clip(Schedule, name="clip"):
    """``f(t) = clip(schedule(t), low, high)``; either bound may be omitted (None).

    >>> import schedules as S
    >>> S.clip(S.linear(0.0, 1.0, 10), low=0.2, high=0.8)(1)
    0.2
    """


    def __init__(
        self, schedule: Schedule, low: float | None = None, high: float | None = None
    ) -> None:
        check = self._check
        low = None if low is None else check.float("low", low, ge=0)
        high = None if high is None else check.float("high", high, ge=0)
        both = low is not None and high is not None
        if both and not (is_traced(low) or is_traced(high)) and not low <= high:
            raise check.fail("high", high, f"must be >= low={low}")
        self._set(schedule=_schedules(check, "schedule", [schedule])[0], low=low, high=high)

    def _eval(self, t: Any, ops: Ops) -> Any:
        v = self.schedule._eval(t, ops)
        if self.low is not None:
            v = ops.maximum(v, self.low)
        if self.high is not None:
            v = ops.minimum(v, self.high)
        return v


class shift(Schedule, name="shift"):
    """Delay by ``steps`` (advance if negative): ``f(t) = schedule(t - steps)``.

    Before the delay has passed, the schedule holds its step-0 value.

    >>> import schedules as S
    >>> s = S.shift(S.linear(0.0, 1.0, 10), 5)
    >>> s(0), s(10)
    (0.0, 0.5)
    """


    def __init__(self, schedule: Schedule, steps: int) -> None:
        check = self._check
        self._set(
            schedule=_schedules(check, "schedule", [schedule])[0],
            steps=check.int("steps", steps),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        return self.schedule._eval(t - self.steps, ops)


class repeat(Schedule, name="repeat"):
    """Replay ``schedule`` in cycles.

    Cycle ``n`` lasts ``T_n = period * period_mult ** n`` steps and replays the
    schedule's first ``period`` steps stretched to ``T_n``, scaled by
    ``decay ** n``: with ``u = t - S_n`` (``S_n`` the cycle's first step),
    ``f(t) = decay ** n * schedule(u * period / T_n)``. After ``max_cycles``
    cycles (if given), it holds the value that ended the last one.

    >>> import schedules as S
    >>> s = S.repeat(S.linear(1.0, 0.0, 10), period=10, decay=0.5)
    >>> s(0), s(5), s(10), s(15)
    (1.0, 0.5, 0.5, 0.25)
    """


    def __init__(
        self,
        schedule: Schedule,
        period: int,
        period_mult: float = 1.0,
        decay: float = 1.0,
        max_cycles: int | None = None,
    ) -> None:
        self._set(
            schedule=_schedules(self._check, "schedule", [schedule])[0],
            **check_cycles(self._check, period, period_mult, decay, max_cycles),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        t = ops.maximum(t, 0.0)
        n, s, T = cycle_of(t, self.period, self.period_mult, ops)
        u = ops.div((t - s) * self.period, T)
        if self.max_cycles is not None:
            over = n >= self.max_cycles
            n = ops.where(over, self.max_cycles - 1, n)
            u = ops.where(over, self.period, u)
        return ops.pow(self.decay, n) * self.schedule._eval(u, ops)


_DECAYS = frozenset({"cosine", "linear", "polynomial"})


class warmup(Schedule, name="warmup"):
    """Linear warmup from ``init`` to the schedule's first value, then the schedule.

    ``f(t) = init + (schedule(0) - init) * t / steps`` for ``t < steps``, then
    ``schedule(t - steps)``: the schedule starts after the warmup.

    >>> import schedules as S
    >>> s = S.warmup(S.cosine(1.0, 0.0, 100), 10)
    >>> s(5), s(10), round(s(60), 12)
    (0.5, 1.0, 0.5)
    """


    def __init__(self, schedule: Schedule, steps: int, init: float = 0.0) -> None:
        check = self._check
        inner = _schedules(check, "schedule", [schedule])[0]
        # the decays whose ``steps`` is their length (0: the end value from step 0)
        if inner._name in _DECAYS and getattr(inner, "steps", None) == 0:
            # a zero-step schedule is its end value from step 0: the warmup would ramp to it
            # and never reach the schedule's start (optax raises for such a warmup)
            raise check.fail(
                "schedule",
                inner,
                "has steps=0: the warmup would never reach its start value; give it steps > 0",
            )
        self._set(
            schedule=inner,
            steps=check.int("steps", steps, ge=0, big=True),
            init=check.float("init", init, ge=0),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        target = self.schedule._eval(0.0 * t, ops)
        ramp = self.init + (target - self.init) * ops.div(t, ops.maximum(self.steps, 1))
        ramp = ops.where(t < 0, self.init, ramp)
        if ops.host and t >= self.steps:
            return self.schedule._eval(t - self.steps, ops)
        return ops.where(t < self.steps, ramp, self.schedule._eval(t - self.steps, ops))


class lambda_(Schedule, name="lambda"):
    """Any Python function of the step, ``f(t) = fn(t)``.

    On the host path ``fn`` gets a Python ``int`` (a ``float`` for a
    fractional step) and should return a number; under JAX it gets a float
    array and must be traceable. Not serializable: use :func:`schedules.expr`
    for a lambda that can be saved in a config or given on a command line.

    >>> import schedules as S
    >>> S.lambda_(lambda t: 0.95 ** (t // 10))(25)
    0.9025
    """

    _static = frozenset({"fn"})

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        check = self._check
        if not callable(fn) or isinstance(fn, Schedule):
            raise check.fail("fn", fn, "must be a callable taking the step")
        self._set(fn=fn)

    def _host_capable(self) -> bool:
        return True

    def _eval(self, t: Any, ops: Ops) -> Any:
        if ops.host:
            return self.fn(int(t) if float(t).is_integer() else t)
        if ops.name == "numpy":
            flat = [float(self._eval(float(x), PY)) for x in np.ravel(t)]
            return np.asarray(flat).reshape(np.shape(t))
        return self.fn(t) + 0.0 * t


_BATCH_RULES = ("linear", "sqrt", "blend", "crossover")


class scale_batch(Schedule, name="scale_batch"):
    """Rescale a schedule tuned at ``base_batch_size`` for ``batch_size``.

    With ``k = batch_size / base_batch_size`` the factor is

    * ``linear``: ``k`` (Goyal et al. 2017);
    * ``sqrt``: ``sqrt(k)`` (Krizhevsky 2014);
    * ``blend``: ``0.5 * k + 0.5 * sqrt(k)``, the mean of the two rules;
    * ``crossover``: linear up to the batch size ``crossover``, square root beyond it,
      ``min(B, C) / B0 * sqrt(max(B, C) / C)``.

    ``batch_size`` is a number or a schedule (the batch size as a function of the step: a
    batch-size ramp), in which case the factor is evaluated at each step:
    ``f(t) = factor(batch_size(t)) * s(t)``.

    >>> import schedules as S
    >>> S.scale_batch(S.constant(0.1), 1024, 256)(0)
    0.4
    >>> S.scale_batch(S.constant(0.1), 1024, 256, rule="sqrt")(0)
    0.2
    >>> S.scale_batch(S.constant(0.1), 1024, 256, rule="blend")(0)
    0.30000000000000004
    >>> ramp = S.piecewise_constant([100], [256.0, 1024.0])  # 256, then 1024 from step 100
    >>> s = S.scale_batch(S.constant(0.1), ramp, 256)
    >>> s(99), s(100)
    (0.1, 0.4)
    """

    _static = frozenset({"rule"})

    def __init__(
        self,
        schedule: Schedule,
        batch_size: int | Schedule,
        base_batch_size: int,
        rule: str = "linear",
        crossover: int | None = None,
    ) -> None:
        check = self._check
        rule = check.choice("rule", rule, _BATCH_RULES)
        base = check.int("base_batch_size", base_batch_size, gt=0)
        if rule == "crossover":
            if crossover is None:
                raise check.fail("crossover", None, "must be given with rule='crossover'")
            crossover = check.int("crossover", crossover, gt=0)
            if not (is_traced(crossover) or is_traced(base)) and crossover < base:
                raise check.fail("crossover", crossover, f"must be >= base_batch_size={base}")
        elif crossover is not None:
            raise check.fail("crossover", crossover, "is only used with rule='crossover'")
        if not isinstance(batch_size, Schedule):
            batch_size = check.int("batch_size", batch_size, gt=0)
        self._set(
            schedule=_schedules(check, "schedule", [schedule])[0],
            batch_size=batch_size,
            base_batch_size=base,
            rule=rule,
            crossover=crossover,
        )

    def factor(self, ops: Ops | None = None, t: Any = 0.0) -> Any:
        """The multiplier applied to the schedule (at step ``t`` when the batch size is a
        schedule)."""
        ops = ops or PY
        B = self.batch_size
        B = B._eval(t, ops) if isinstance(B, Schedule) else B * 1.0
        k = ops.div(B, self.base_batch_size)
        if self.rule == "linear":
            return k
        if self.rule == "sqrt":
            return ops.sqrt(k)
        if self.rule == "blend":
            return 0.5 * k + 0.5 * ops.sqrt(k)
        C = self.crossover
        return ops.div(ops.minimum(B, C), self.base_batch_size) * ops.sqrt(
            ops.div(ops.maximum(B, C), C)
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        return self.factor(ops, t) * self.schedule._eval(t, ops)


# Operator sugar used by Schedule.__mul__/__add__.
def flat_multiply(*factors: Schedule) -> Schedule:
    """``Multiply(*factors)``, flattening nested products."""
    flat: list[Schedule] = []
    for f in factors:
        flat.extend(f.factors if isinstance(f, multiply) else (f,))
    return multiply(*flat)


def flat_add(*terms: Schedule) -> Schedule:
    """``Add(*terms)``, flattening nested sums."""
    flat: list[Schedule] = []
    for f in terms:
        flat.extend(f.terms if isinstance(f, add) else (f,))
    return add(*flat)


def folded_scale(schedule: Schedule, factor: float) -> Schedule:
    """``Scale(schedule, factor)``, folding nested scales."""
    if isinstance(schedule, scale) and not (is_traced(factor) or is_traced(schedule.factor)):
        return scale(schedule.schedule, float(factor) * schedule.factor)
    return scale(schedule, factor)


# The classes' descriptive CamelCase names, kept for code that imports them (the public
# name, in ``schedules``, its docs, ``help`` and reprs, is the lowercase one).
Join = join
Multiply = multiply
Add = add
Minimum = minimum
Maximum = maximum
Scale = scale
Clip = clip
Shift = shift
Repeat = repeat
Warmup = warmup
Lambda = lambda_
ScaleBatch = scale_batch


# the schedule operators (``a * b``, ``a / x``, ``a + b``) of :class:`schedules._core.Schedule`
OPERATORS.update(multiply=flat_multiply, scale=folded_scale, add=flat_add)
