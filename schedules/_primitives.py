"""Primitive schedules: closed forms of the step.

Conventions shared by every primitive (tested in ``tests/schedules``):

* a negative step is treated as step 0 (the schedule holds its initial value);
* past its end, a finite schedule holds its final value; periodic schedules
  (``cyclic``, ``cosine_restarts``) keep cycling unless told otherwise;
* ``t`` below is the step as a float; ``T`` a length in steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._core import Schedule
from ._numerics import (
    CYCLIC_MODES,
    WSD_SHAPES,
    cycle_of,
    cycle_position,
    decay_shape,
    half_cos,
    half_cos_remaining,
    progress,
)
from ._ops import Ops
from ._validate import (
    FLOAT32_MAX,
    INT_LIMIT,
    Checks,
    is_traced,
)

__all__ = [
    "check_cycles",
    "constant",
    "cosine",
    "cosine_restarts",
    "cycle_of",
    "cyclic",
    "exponential",
    "inverse_sqrt",
    "linear",
    "multistep",
    "noam",
    "noise",
    "one_cycle",
    "piecewise_constant",
    "piecewise_linear",
    "polynomial",
    "step",
    "tanh_decay",
    "wsd",
]


def check_cycles(
    check: Checks, period: Any, period_mult: Any, decay: Any, max_cycles: Any
) -> dict[str, Any]:
    """The validated cycle arguments shared by ``cosine_restarts`` and ``repeat``."""
    return {
        "period": check.int("period", period, gt=0),
        # a cycle a million times longer than the last is no restart (and the cycle
        # arithmetic must stay within float32 at any step)
        "period_mult": check.float("period_mult", period_mult, ge=1, le=1e6),
        "decay": check.float("decay", decay, gt=0, le=1),
        "max_cycles": None if max_cycles is None else check.int("max_cycles", max_cycles, gt=0),
    }


class constant(Schedule, name="constant"):
    """``f(t) = value``, any sign (a schedule need not be a learning rate; the
    learning-rate consumers refuse negative values).

    >>> import schedules as S
    >>> S.constant(3e-4)(1000), S.constant(-1.0)(0)
    (0.0003, -1.0)
    """


    def __init__(self, value: float) -> None:
        check = self._check
        self._set(value=check.float("value", value))

    def _eval(self, t: Any, ops: Ops) -> Any:
        return self.value + 0.0 * t


class linear(Schedule, name="linear"):
    """Linear ramp: ``f(t) = init * (1 - p) + end * p`` with ``p = clip(t / steps, 0, 1)``.

    Holds ``end`` from ``t = steps`` on; ``steps = 0`` is ``end`` everywhere.

    >>> import schedules as S
    >>> S.linear(0.0, 1.0, 100)(25)
    0.25
    >>> S.linear(0.0, 1.0, 100)(1000)
    1.0
    """


    def __init__(self, init: float, end: float, steps: int) -> None:
        check = self._check
        self._set(
            init=check.float("init", init, ge=0),
            end=check.float("end", end, ge=0),
            steps=check.int("steps", steps, ge=0, big=True),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        p = progress(t, self.steps, ops)
        # Two-sided lerp: exactly init at p = 0 and exactly end at p = 1.
        return self.init * (1.0 - p) + self.end * p


class cosine(Schedule, name="cosine"):
    """Cosine decay from ``init`` to ``end`` over ``steps``, then hold ``end``.

    ``f(t) = end + (init - end) * (0.5 * (1 + cos(pi * min(t, T) / T))) ** exponent``

    >>> import schedules as S
    >>> s = S.cosine(1.0, 0.0, 100)
    >>> s(0), round(s(50), 12), s(100), s(200)
    (1.0, 0.5, 0.0, 0.0)
    """


    def __init__(self, init: float, end: float, steps: int, exponent: float = 1.0) -> None:
        check = self._check
        self._set(
            init=check.float("init", init, ge=0),
            end=check.float("end", end, ge=0),
            steps=check.int("steps", steps, ge=0, big=True),
            exponent=check.float("exponent", exponent, gt=0),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        c = half_cos_remaining(t, self.steps, ops)
        if type(self.exponent) is not float or self.exponent != 1.0:
            c = ops.pow(c, self.exponent)
        return self.end + (self.init - self.end) * c


class exponential(Schedule, name="exponential"):
    """Exponential decay (or growth): ``f(t) = init * rate ** (t / steps)``.

    With ``staircase=True`` the exponent is ``floor(t / steps)``. An optional
    ``end`` bounds the value (a floor when decaying, a ceiling when growing); growth
    without a bound is allowed (an lr range test), and overflows to ``inf`` far out.

    >>> import schedules as S
    >>> S.exponential(1.0, 0.5, steps=10)(20)
    0.25
    >>> S.exponential(1.0, 0.5, steps=10, staircase=True)(19)
    0.5
    >>> S.exponential(1.0, 2.0, 2)(4)
    4.0
    """

    _static = frozenset({"staircase"})

    def __init__(
        self,
        init: float,
        rate: float,
        steps: int = 1,
        staircase: bool = False,
        end: float | None = None,
    ) -> None:
        check = self._check
        if not isinstance(staircase, bool):
            raise check.fail("staircase", staircase, "must be True or False")
        self._set(
            init=check.float("init", init, ge=0),
            rate=check.float("rate", rate, gt=0),
            steps=check.int("steps", steps, gt=0, big=True),
            staircase=staircase,
            end=None if end is None else check.float("end", end, ge=0),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        t = ops.maximum(t, 0.0)
        e = ops.floordiv(t, self.steps) if self.staircase else ops.div(t, self.steps)
        # 0 * rate ** e is 0 even where rate ** e has overflowed to inf
        v = ops.where(self.init == 0, 0.0, self.init * ops.pow(self.rate, e))
        if self.end is None:
            return v
        return ops.where(self.rate < 1, ops.maximum(v, self.end), ops.minimum(v, self.end))


class step(Schedule, name="step"):
    """Multiply by ``gamma`` every ``step_size`` steps.

    ``f(t) = init * gamma ** floor(t / step_size)``

    >>> import schedules as S
    >>> S.step(1.0, step_size=30, gamma=0.1)(65)
    0.010000000000000002
    """


    def __init__(self, init: float, step_size: int, gamma: float = 0.1) -> None:
        check = self._check
        self._set(
            init=check.float("init", init, ge=0),
            step_size=check.int("step_size", step_size, gt=0),
            # growth (gamma > 1) would overflow at some step: decay only
            gamma=check.float("gamma", gamma, gt=0, le=1),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        t = ops.maximum(t, 0.0)
        return self.init * ops.pow(self.gamma, ops.floordiv(t, self.step_size))


class multistep(Schedule, name="multistep"):
    """``f(t) = init * gamma ** #{m in milestones : m <= t}``.

    A milestone listed twice counts twice (as in PyTorch's ``MultiStepLR``).

    >>> import schedules as S
    >>> s = S.multistep(1.0, [10, 20, 20], gamma=0.5)
    >>> s(9), s(10), s(20)
    (1.0, 0.5, 0.125)
    """


    def __init__(self, init: float, milestones: Any, gamma: float = 0.1) -> None:
        check = self._check
        self._set(
            init=check.float("init", init, ge=0),
            milestones=check.int_seq("milestones", milestones, ge=0, increasing="non-strict"
            ),
            gamma=check.float("gamma", gamma, gt=0),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        return self.init * ops.pow(self.gamma, ops.count_le(self.milestones, t))


class polynomial(Schedule, name="polynomial"):
    """``f(t) = end + (init - end) * (1 - min(t, steps) / steps) ** power``.

    >>> import schedules as S
    >>> S.polynomial(1.0, 0.0, 10, power=2.0)(5)
    0.25
    """


    def __init__(self, init: float, end: float, steps: int, power: float = 1.0) -> None:
        check = self._check
        self._set(
            init=check.float("init", init, ge=0),
            end=check.float("end", end, ge=0),
            steps=check.int("steps", steps, ge=0, big=True),
            power=check.float("power", power, gt=0),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        p = progress(t, self.steps, ops)
        return self.end + (self.init - self.end) * ops.pow(1.0 - p, self.power)


class inverse_sqrt(Schedule, name="inverse_sqrt"):
    """Linear warmup, then inverse square-root decay (as in transformers).

    ``f(t) = init * t / warmup`` for ``t < warmup``, else
    ``init / sqrt((t + timescale - warmup) / timescale)``; ``timescale``
    defaults to ``warmup`` (so the decay starts at ``init``), and must be given
    when ``warmup = 0``.

    >>> import schedules as S
    >>> s = S.inverse_sqrt(1.0, warmup=100)
    >>> s(50), s(100), s(400)
    (0.5, 1.0, 0.5)
    """


    def __init__(self, init: float, warmup: int = 0, timescale: int | None = None) -> None:
        check = self._check
        warmup = check.int("warmup", warmup, ge=0)
        if timescale is None:
            if not is_traced(warmup) and warmup == 0:
                raise check.fail("timescale", None, "must be given when warmup is 0")
            timescale = warmup
        self._set(
            init=check.float("init", init, ge=0),
            warmup=warmup,
            timescale=check.int("timescale", timescale, gt=0),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        t = ops.maximum(t, 0.0)
        shift = self.timescale - self.warmup
        warm = self.init * ops.div(t, ops.maximum(self.warmup, 1))
        decay = self.init / ops.sqrt(ops.div(ops.maximum(t + shift, 1e-12), self.timescale))
        return ops.where(t < self.warmup, warm, decay)


class noam(Schedule, name="noam"):
    """The Transformer schedule (Vaswani et al., 2017), with ``s = t + 1``:

    ``f(t) = scale * d_model ** -0.5 * min(s ** -0.5, s * warmup ** -1.5)``

    >>> import schedules as S
    >>> s = S.noam(d_model=512, warmup=4000)
    >>> round(s(3999) / (512 ** -0.5 * 4000 ** -0.5), 12)
    1.0
    """


    def __init__(self, d_model: int, warmup: int, scale: float = 1.0) -> None:
        check = self._check
        self._set(
            d_model=check.int("d_model", d_model, gt=0),
            warmup=check.int("warmup", warmup, gt=0),
            scale=check.float("scale", scale, ge=0),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        s = ops.maximum(t, 0.0) + 1.0
        rise = s * ops.pow(self.warmup, -1.5)
        fall = ops.pow(s, -0.5)
        return self.scale * ops.pow(self.d_model, -0.5) * ops.minimum(rise, fall)


class wsd(Schedule, name="wsd"):
    """Warmup-stable-decay ("trapezoidal") over ``total`` steps.

    Linear warmup from ``init`` to ``peak`` over ``warmup`` steps, ``peak``
    until ``total - decay``, then a decay to ``end`` over ``decay`` steps with
    progress ``p`` in [0, 1] shaped by ``shape``: ``linear`` ``1 - p``,
    ``cosine`` ``(1 + cos(pi p)) / 2``, ``1-sqrt`` ``1 - sqrt(p)``.

    >>> import schedules as S
    >>> s = S.wsd(1.0, total=100, warmup=10, decay=20, shape="1-sqrt")
    >>> s(5), s(50), s(85), s(100)
    (0.5, 1.0, 0.5, 0.0)
    """

    _static = frozenset({"shape"})

    def __init__(
        self,
        peak: float,
        total: int,
        warmup: int,
        decay: int,
        init: float = 0.0,
        end: float = 0.0,
        shape: str = "linear",
    ) -> None:
        check = self._check
        total = check.int("total", total, gt=0)
        warmup = check.int("warmup", warmup, ge=0)
        decay = check.int("decay", decay, ge=0)
        known = not (is_traced(total) or is_traced(warmup) or is_traced(decay))
        if known and warmup + decay > total:
            raise check.fail("warmup + decay", warmup + decay, f"must be <= total={total}")
        self._set(
            peak=check.float("peak", peak, ge=0),
            total=total,
            warmup=warmup,
            decay=decay,
            init=check.float("init", init, ge=0),
            end=check.float("end", end, ge=0),
            shape=check.choice("shape", shape, WSD_SHAPES),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        warm = self.init + (self.peak - self.init) * progress(t, self.warmup, ops)
        p = progress(t - (self.total - self.decay), self.decay, ops)
        decayed = self.end + (self.peak - self.end) * decay_shape(self.shape, p, ops)
        return ops.where(t < self.total - self.decay, warm, decayed)


class cyclic(Schedule, name="cyclic"):
    """Cyclical learning rate (Smith, 2017), PyTorch's ``CyclicLR`` formula.

    With ``L = up + down``, ``c = floor(1 + t / L)``, ``x = 1 + t / L - c``:
    ``h = x * L / up`` if ``x <= up / L`` else ``(x - 1) / (up / L - 1)``, and
    ``f(t) = low + (high - low) * h * g`` where ``g`` is 1 (``triangular``),
    ``2 ** -(c - 1)`` (``triangular2``) or ``gamma ** t`` (``exp_range``).
    ``down`` defaults to ``up``.

    >>> import schedules as S
    >>> s = S.cyclic(0.1, 1.0, up=10)
    >>> s(0), s(5), s(10), s(15), s(20)
    (0.1, 0.55, 1.0, 0.55, 0.1)
    """

    _static = frozenset({"mode"})

    def __init__(
        self,
        low: float,
        high: float,
        up: int,
        down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
    ) -> None:
        check = self._check
        up = check.int("up", up, gt=0)
        if not is_traced(up):
            d = up if down is None else check.int("down", down, gt=0)
            if not is_traced(d) and up + d >= INT_LIMIT:
                raise check.fail("up + down", up + d, "must be below 2**31 (int32)")
        self._set(
            low=check.float("low", low, ge=0),
            high=check.float("high", high, ge=0),
            up=up,
            down=up if down is None else check.int("down", down, gt=0),
            mode=check.choice("mode", mode, CYCLIC_MODES),
            gamma=check.float("gamma", gamma, gt=0, le=1),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        t = ops.maximum(t, 0.0)
        total = self.up + self.down
        ratio = self.up / total
        # x = t / L - floor(t / L), with the remainder taken exactly (t - n L)
        # so that float32 keeps its precision far from step 0.
        n, r = cycle_position(t, total, ops)
        cycle = n + 1
        x = ops.div(r, total)
        h = ops.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
        h = ops.clip(h, 0.0, 1.0)  # in [0, 1]; float32 far out (t > 2**24) may stray
        height = (self.high - self.low) * h
        if self.mode == "triangular2":
            height = height * (1 / ops.pow(2.0, cycle - 1))
        elif self.mode == "exp_range":
            height = height * ops.pow(self.gamma, t)
        return self.low + height


_ANNEAL = ("cos", "linear")


class one_cycle(Schedule, name="one_cycle"):
    """One-cycle policy (Smith & Topin, 2018) with PyTorch's ``OneCycleLR`` phases.

    ``start = peak / div_factor``, ``floor = start / final_div_factor``. Two
    phases: ``start -> peak`` ending at step ``pct_start * total - 1``, then
    ``peak -> floor`` ending at ``total - 1``. With ``three_phase``: ``start ->
    peak`` (to ``pct_start * total - 1``), ``peak -> start`` (to
    ``2 * pct_start * total - 2``), ``start -> floor`` (to ``total - 1``). Each
    phase anneals by ``cos`` (``end + (start - end) * (1 + cos(pi p)) / 2``) or
    ``linear`` in its progress ``p``. Holds ``floor`` after ``total - 1``.

    >>> import schedules as S
    >>> s = S.one_cycle(1.0, total=101, pct_start=0.5, anneal="linear", div_factor=10)
    >>> s(0), round(s(49.5), 12), round(s(100), 12)
    (0.1, 1.0, 1e-05)
    """

    _static = frozenset({"anneal", "three_phase"})

    def __init__(
        self,
        peak: float,
        total: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal: str = "cos",
        three_phase: bool = False,
    ) -> None:
        check = self._check
        if not isinstance(three_phase, bool):
            raise check.fail("three_phase", three_phase, "must be True or False")
        self._set(
            peak=check.float("peak", peak, ge=0),
            total=check.int("total", total, gt=0),
            pct_start=check.float("pct_start", pct_start, ge=0, le=1),
            div_factor=check.float("div_factor", div_factor, gt=0),
            final_div_factor=check.float("final_div_factor", final_div_factor, gt=0),
            anneal=check.choice("anneal", anneal, _ANNEAL),
            three_phase=three_phase,
        )
        if not any(is_traced(x) for x in (self.peak, self.div_factor, self.final_div_factor)):
            start = self.peak / self.div_factor
            floor = start / self.final_div_factor
            for name, v in (("div_factor", start), ("final_div_factor", floor)):
                if not v <= FLOAT32_MAX:
                    raise check.fail(name, getattr(self, name),
                               f"makes a value {v!r} beyond float32's range ({FLOAT32_MAX!r})")
        if not any(is_traced(x) for x in (self.total, self.pct_start)):
            begin = 0.0
            for i, (end, _, _) in enumerate(self.phases()):
                if not end > begin:
                    raise check.fail(
                        "pct_start",
                        pct_start,
                        f"leaves phase {i} empty (it would end at step {end} <= {begin}) "
                        f"with total={total}",
                    )
                begin = end

    def phases(self) -> list[tuple[Any, Any, Any]]:
        """``(end_step, start_value, end_value)`` of each phase, as PyTorch lays them out."""
        start = self.peak / self.div_factor
        floor = start / self.final_div_factor
        up_end = self.pct_start * self.total - 1
        if self.three_phase:
            return [
                (up_end, start, self.peak),
                (2 * self.pct_start * self.total - 2, self.peak, start),
                (self.total - 1, start, floor),
            ]
        return [(up_end, start, self.peak), (self.total - 1, self.peak, floor)]

    def _anneal(self, a: Any, b: Any, p: Any, ops: Ops) -> Any:
        if self.anneal == "cos":
            return b + (a - b) / 2.0 * (ops.cos(ops.pi * p) + 1)
        return (b - a) * p + a

    def _eval(self, t: Any, ops: Ops) -> Any:
        t = ops.clip(t, 0.0, self.total - 1)
        # PyTorch takes the first phase whose end step is >= t (else the last).
        out: Any = None
        begin: Any = 0.0
        for end, a, b in self.phases():
            v = self._anneal(a, b, ops.div(t - begin, end - begin), ops)
            out = v if out is None else ops.where(t <= begin, out, v)
            begin = end
        return out


class cosine_restarts(Schedule, name="cosine_restarts"):
    """Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter, 2017).

    Cycle ``n`` lasts ``T_n = period * period_mult ** n`` steps and starts at
    ``S_n = period * (period_mult ** n - 1) / (period_mult - 1)`` (``n *
    period`` when ``period_mult = 1``). Within it, with ``u = t - S_n``:

    ``f(t) = end + (init * decay ** n - end) * (1 + cos(pi * u / T_n)) / 2``

    After ``max_cycles`` cycles (if given) the value holds at ``end``.

    >>> import schedules as S
    >>> s = S.cosine_restarts(1.0, 0.0, period=10, period_mult=2)
    >>> s(0), s(5), s(10), s(20), s(30)
    (1.0, 0.5, 1.0, 0.5, 1.0)
    """


    def __init__(
        self,
        init: float,
        end: float,
        period: int,
        period_mult: float = 1.0,
        decay: float = 1.0,
        max_cycles: int | None = None,
    ) -> None:
        check = self._check
        self._set(
            init=check.float("init", init, ge=0),
            end=check.float("end", end, ge=0),
            **check_cycles(check, period, period_mult, decay, max_cycles),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        t = ops.maximum(t, 0.0)
        n, s, T = cycle_of(t, self.period, self.period_mult, ops)
        peak = self.init * ops.pow(self.decay, n)
        v = self.end + (peak - self.end) * half_cos(ops.div(t - s, T), ops)
        if self.max_cycles is None:
            return v
        return ops.where(n >= self.max_cycles, self.end, v)


class tanh_decay(Schedule, name="tanh_decay"):
    """Hyperbolic-tangent decay (Hsueh et al., 2019):

    ``f(t) = end + (init - end) / 2 * (1 - tanh(lower + (upper - lower) * min(t, T) / T))``

    normalised so ``f(0) = init`` and ``f(T) = end`` exactly
    (the raw curve is divided by its value at ``t = 0`` and shifted by its value at ``T``).

    >>> import schedules as S
    >>> s = S.tanh_decay(1.0, 0.0, 100)
    >>> s(0), s(100)
    (1.0, 0.0)
    """


    def __init__(
        self, init: float, end: float, steps: int, lower: float = -6.0, upper: float = 3.0
    ) -> None:
        check = self._check
        lower = check.float("lower", lower)
        upper = check.float("upper", upper)
        if not (is_traced(lower) or is_traced(upper)) and not upper > lower:
            raise check.fail("upper", upper, f"must be > lower={lower}")
        if not (is_traced(lower) or is_traced(upper)):
            a, b = np.tanh(np.float32(lower)), np.tanh(np.float32(upper))
            if not a < b:  # the normalisation divides by tanh(upper) - tanh(lower)
                raise check.fail(
                    "upper",
                    upper,
                    f"must have tanh(upper) > tanh(lower={lower}) in float32 (both saturate)",
                )
        self._set(
            init=check.float("init", init, ge=0),
            end=check.float("end", end, ge=0),
            steps=check.int("steps", steps, ge=0),
            lower=lower,
            upper=upper,
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        p = progress(t, self.steps, ops)
        g0 = 1.0 - ops.tanh(self.lower + 0.0 * p)
        g1 = 1.0 - ops.tanh(self.upper + 0.0 * p)
        g = 1.0 - ops.tanh(self.lower + (self.upper - self.lower) * p)
        # in [0, 1]: (upper - lower) * 1 + lower may round past upper
        frac = ops.clip((g - g1) / (g0 - g1), 0.0, 1.0)
        return self.end + (self.init - self.end) * frac


class piecewise_constant(Schedule, name="piecewise_constant"):
    """``f(t) = values[#{b in boundaries : b <= t}]``; ``len(values) = len(boundaries) + 1``.

    >>> import schedules as S
    >>> s = S.piecewise_constant([10, 20], [1.0, 0.5, 0.1])
    >>> s(9), s(10), s(25)
    (1.0, 0.5, 0.1)
    """


    def __init__(self, boundaries: Any, values: Any) -> None:
        check = self._check
        b = check.int_seq("boundaries", boundaries, increasing="strict")
        v = check.float_seq("values", values, ge=0, min_len=1)
        if len(v) != len(b) + 1:
            raise check.fail(
                "values",
                values,
                f"must have len(boundaries) + 1 = {len(b) + 1} entries",
            )
        self._set(boundaries=b, values=v)

    def _eval(self, t: Any, ops: Ops) -> Any:
        return ops.select(ops.count_le(self.boundaries, t), self.values) + 0.0 * t


class piecewise_linear(Schedule, name="piecewise_linear"):
    """Linear interpolation through ``(steps[i], values[i])``, constant outside.

    >>> import schedules as S
    >>> s = S.piecewise_linear([0, 10, 30], [0.0, 1.0, 0.0])
    >>> s(5), s(20), s(100)
    (0.5, 0.5, 0.0)
    """


    def __init__(self, steps: Any, values: Any) -> None:
        check = self._check
        x = check.int_seq("steps", steps, increasing="strict", min_len=1)
        v = check.float_seq("values", values, ge=0)
        if len(v) != len(x):
            raise check.fail("values", values, f"must have len(steps) = {len(x)} entries")
        self._set(steps=x, values=v)

    def _eval(self, t: Any, ops: Ops) -> Any:
        xs, ys = self.steps, self.values
        out = ys[0] + 0.0 * t
        for i in range(1, len(xs)):
            seg = ys[i - 1] + (ys[i] - ys[i - 1]) * progress(t - xs[i - 1], xs[i] - xs[i - 1], ops)
            out = ops.where(t > xs[i - 1], seg, out)
        return out


class noise(Schedule, name="noise"):
    """Seeded uniform noise in ``[low, high)``: a pure function of ``(seed, floor(t))``.

    A counter-based 32-bit hash (no RNG state), identical on every path, so
    ``s * noise(seed, 0.9, 1.1)`` jitters a schedule reproducibly.

    >>> import schedules as S
    >>> n = S.noise(seed=0, low=0.9, high=1.1)
    >>> n(7) == n(7), 0.9 <= n(7) < 1.1
    (True, True)
    """


    def __init__(self, seed: int, low: float = 0.0, high: float = 1.0) -> None:
        check = self._check
        low = check.float("low", low, ge=0)
        high = check.float("high", high, ge=0)
        if not (is_traced(low) or is_traced(high)) and not high >= low:
            raise check.fail("high", high, f"must be >= low={low}")
        self._set(
            seed=check.int("seed", seed, ge=0),
            low=low,
            high=high,
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        u = ops.uniform_hash(self.seed, ops.floor(ops.maximum(t, 0.0)))
        return self.low + (self.high - self.low) * u


# The classes' descriptive CamelCase names, kept for code that imports them (the public
# name, in ``schedules``, its docs, ``help`` and reprs, is the lowercase one).
Constant = constant
Linear = linear
CosineDecay = cosine
Exponential = exponential
StepDecay = step
MultiStep = multistep
Polynomial = polynomial
InverseSqrt = inverse_sqrt
Noam = noam
WarmupStableDecay = wsd
Cyclic = cyclic
OneCycle = one_cycle
CosineRestarts = cosine_restarts
TanhDecay = tanh_decay
PiecewiseConstant = piecewise_constant
PiecewiseLinear = piecewise_linear
Noise = noise
