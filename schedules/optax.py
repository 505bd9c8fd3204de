"""optax's schedule functions, as this project's schedules: a drop-in for ``optax.schedules``.

Every schedule function of ``optax.schedules`` (which optax also exports at top level) with
optax's name, argument names, defaults and conventions (``transition_begin``, ``staircase``,
``end_value`` as a bound for decay *and* growth, ``exponent``, a non-positive
``transition_steps`` giving the constant ``init_value``, the ``ValueError``\\s optax raises).
Each returns a :class:`schedules.Schedule`: it composes (``*``, ``+``, ``S.join``...), prints,
serializes, vmaps, and evaluates on the host in float64 (``float(s(t))``, no JAX dispatch).
Under ``jit`` it performs optax's own float32 operations, in optax's order, so its numbers are
optax's. No optax import: optax is not needed to build or evaluate these.

>>> from schedules import optax as O
>>> s = O.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=10, decay_steps=110)
>>> s(0), s(10), round(s(60), 12), s(110)
(0.0, 1.0, 0.5, 0.0)

Where this project's algebra has a schedule of the same name but another convention, the
facade follows optax and the algebra keeps its meaning: ``S.one_cycle`` ends its phases where
torch's ``OneCycleLR`` does, ``linear_onecycle_schedule`` where optax does; ``S.polynomial``
with zero steps holds its end value, ``polynomial_schedule`` its ``init_value``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from ._core import Schedule, as_schedule
from ._ops import Ops
from ._primitives import constant
from ._validate import Checks, check_float, fail

__all__ = [
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]

#: optax's step counts are Python ints (an int64 count under x64): far beyond int32 is fine
#: on the host path (float64) and under x64.
_STEP_LIMIT = 2**62


def _steps(where: str, name: str, value: Any) -> int:
    """A step count as optax takes it: an integer (an integral float accepted), any sign."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise fail(where, name, value, f"must be an integer, not {type(value).__name__}")
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        raise fail(where, name, value, "must be an integer")
    v = int(value)
    if abs(v) >= _STEP_LIMIT:
        raise fail(where, name, value, "must be below 2**62 in magnitude")
    return v


def _value(where: str, name: str, value: Any) -> float:
    """A value of the schedule (an lr, a bound): any sign (optax's schedules are not only lrs;
    the learning-rate consumers refuse negative values)."""
    return check_float(where, name, value)


def _xp(ops: Ops) -> Any:
    """The array namespace of the path: NumPy float64 on the host (the float64 truth), jnp
    under JAX (optax's own float32 operations)."""
    return jnp if ops.name == "jax" else np


def _host(v: Any, ops: Ops) -> Any:
    return float(v) if ops.host else v



def _seq(where: str, name: str, value: Any) -> Sequence[Any]:
    """A list or tuple argument (a ``ValueError`` naming it otherwise)."""
    if not isinstance(value, list | tuple):
        raise fail(where, name, value, "must be a list or tuple")
    return value


def _boundaries_scales(where: str, boundaries: Any, scales: Any
                       ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """optax's piecewise ``boundaries`` (sorted steps) and ``scales`` (one per boundary, >= 0:
    optax raises ``ValueError`` for a negative one)."""
    b = tuple(_steps(where, f"boundaries[{i}]", x)
              for i, x in enumerate(_seq(where, "boundaries", boundaries)))
    s = tuple(check_float(where, f"scales[{i}]", x)
              for i, x in enumerate(_seq(where, "scales", scales)))
    if len(b) != len(s):
        raise fail(where, "scales", scales, f"must have one entry per boundary ({len(b)})")
    if list(b) != sorted(b):
        raise fail(where, "boundaries", boundaries, "must be sorted")
    if not all(x >= 0.0 for x in s):
        raise fail(where, "scales", scales, "must be non-negative (optax raises ValueError)")
    return b, s

class _Optax(Schedule):
    """Base of the optax facade's nodes (not registered)."""

    def _eval(self, t: Any, ops: Ops) -> Any:
        xp = _xp(ops)
        if ops.host:
            t = np.float64(t)
        with np.errstate(all="ignore"):
            return _host(self._optax(t, xp), ops)

    def _optax(self, t: Any, xp: Any) -> Any:
        raise NotImplementedError


class OptaxPolynomial(_Optax, name="optax_polynomial"):
    """optax's ``polynomial_schedule`` (built by :func:`polynomial_schedule`)."""

    _static = frozenset({"transition_steps", "transition_begin"})
    _check = Checks("polynomial_schedule")

    def __init__(
        self,
        init_value: float,
        end_value: float,
        power: float,
        transition_steps: int,
        transition_begin: int = 0,
    ) -> None:
        w = self._check.where
        steps = _steps(w, "transition_steps", transition_steps)
        if steps <= 0:
            raise fail(w, "transition_steps", transition_steps, "must be > 0 (this node)")
        p = power if isinstance(power, int) and not isinstance(power, bool) else None
        self._set(
            init_value=_value(w, "init_value", init_value),
            end_value=_value(w, "end_value", end_value),
            # an int power stays an int: jnp raises by an integer exponent exactly, as optax's
            # linear_schedule (power=1) does
            power=p if p is not None else check_float(w, "power", power),
            transition_steps=steps,
            transition_begin=max(_steps(w, "transition_begin", transition_begin), 0),
        )

    def _optax(self, t: Any, xp: Any) -> Any:
        count = xp.clip(t - self.transition_begin, 0, self.transition_steps)
        frac = 1 - count / self.transition_steps
        return (self.init_value - self.end_value) * (frac**self.power) + self.end_value


class OptaxExponential(_Optax, name="optax_exponential"):
    """optax's ``exponential_decay`` (built by :func:`exponential_decay`)."""

    _static = frozenset({"transition_steps", "transition_begin", "staircase", "bound"})
    _check = Checks("exponential_decay")

    def __init__(
        self,
        init_value: float,
        transition_steps: int,
        decay_rate: float,
        transition_begin: int = 0,
        staircase: bool = False,
        end_value: float | None = None,
        bound: str | None = None,
    ) -> None:
        w = self._check.where
        steps = _steps(w, "transition_steps", transition_steps)
        if steps <= 0:
            raise fail(w, "transition_steps", transition_steps, "must be > 0 (this node)")
        rate = check_float(w, "decay_rate", decay_rate)
        if not isinstance(staircase, (bool, np.bool_)):
            raise fail(w, "staircase", staircase, "must be True or False")
        end = None if end_value is None else _value(w, "end_value", end_value)
        if bound is None and end is not None:  # optax: a floor for decay, a cap for growth
            bound = "max" if rate < 1.0 else "min"
        if bound not in (None, "max", "min"):
            raise fail(w, "bound", bound, "must be None, 'max' or 'min'")
        self._set(
            init_value=_value(w, "init_value", init_value),
            transition_steps=steps,
            decay_rate=rate,
            transition_begin=max(_steps(w, "transition_begin", transition_begin), 0),
            staircase=bool(staircase),
            end_value=end,
            bound=bound if end is not None else None,
        )

    def _optax(self, t: Any, xp: Any) -> Any:
        decreased = t - self.transition_begin
        p = decreased / self.transition_steps
        if self.staircase:
            p = xp.floor(p)
        v = xp.where(
            decreased <= 0, self.init_value, self.init_value * xp.power(self.decay_rate, p)
        )
        if self.end_value is not None:
            v = (xp.maximum if self.bound == "max" else xp.minimum)(v, self.end_value)
        return v


class OptaxCosineDecay(_Optax, name="optax_cosine_decay"):
    """optax's ``cosine_decay_schedule`` (built by :func:`cosine_decay_schedule`)."""

    _static = frozenset({"decay_steps"})
    _check = Checks("cosine_decay_schedule")

    def __init__(
        self, init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
    ) -> None:
        w = self._check.where
        steps = _steps(w, "decay_steps", decay_steps)
        if not steps > 0:  # optax raises ValueError here
            raise fail(w, "decay_steps", decay_steps, "must be > 0 (optax raises ValueError)")
        self._set(
            init_value=_value(w, "init_value", init_value),
            decay_steps=steps,
            alpha=check_float(w, "alpha", alpha),
            exponent=check_float(w, "exponent", exponent),
        )

    def _optax(self, t: Any, xp: Any) -> Any:
        count = xp.minimum(t, float(self.decay_steps))
        cosine = 0.5 * (1 + xp.cos(xp.pi * count / float(self.decay_steps)))
        return self.init_value * ((1 - self.alpha) * cosine**self.exponent + self.alpha)


class OptaxPiecewiseConstant(_Optax, name="optax_piecewise_constant"):
    """optax's ``piecewise_constant_schedule`` (built by :func:`piecewise_constant_schedule`):
    ``boundaries`` sorted, ``scales`` theirs."""

    _static = frozenset({"boundaries"})
    _check = Checks("piecewise_constant_schedule")

    def __init__(
        self, init_value: float, boundaries: Sequence[int] = (), scales: Sequence[float] = ()
    ) -> None:
        w = self._check.where
        b, s = _boundaries_scales(w, boundaries, scales)
        self._set(init_value=_value(w, "init_value", init_value), boundaries=b, scales=s)

    def _optax(self, t: Any, xp: Any) -> Any:
        v = self.init_value
        for threshold, scale in zip(self.boundaries, self.scales):
            indicator = xp.maximum(0.0, xp.sign(threshold - t))
            v = v * indicator + (1 - indicator) * scale * v
        return v


class OptaxPiecewiseInterpolate(_Optax, name="optax_piecewise_interpolate"):
    """optax's ``piecewise_interpolate_schedule`` (built by
    :func:`piecewise_interpolate_schedule`): ``boundaries`` sorted, ``scales`` theirs."""

    _static = frozenset({"interpolate_type", "boundaries"})
    _check = Checks("piecewise_interpolate_schedule")

    def __init__(
        self,
        interpolate_type: str,
        init_value: float,
        boundaries: Sequence[int] = (),
        scales: Sequence[float] = (),
    ) -> None:
        w = self._check.where
        if interpolate_type not in ("linear", "cosine"):
            raise fail(w, "interpolate_type", interpolate_type, "must be 'cosine' or 'linear'")
        b, s = _boundaries_scales(w, boundaries, scales)
        self._set(
            interpolate_type=interpolate_type,
            init_value=_value(w, "init_value", init_value),
            boundaries=b,
            scales=s,
        )

    def _optax(self, t: Any, xp: Any) -> Any:
        bounds = xp.asarray((0, *self.boundaries))
        values = xp.cumprod(xp.stack([xp.asarray(x) for x in (self.init_value, *self.scales)]))
        t = xp.asarray(t)
        if xp is np:
            bounds, values = bounds.astype(np.float64), values.astype(np.float64)
        else:
            values = values.astype(t.dtype)
        sizes = xp.maximum(bounds[1:] - bounds[:-1], 1)
        tt = t[..., None]
        inside = xp.logical_and(bounds[:-1] <= tt, tt < bounds[1:])
        pct = (tt - bounds[:-1]) / sizes
        start, end = values[:-1], values[1:]
        if self.interpolate_type == "linear":
            interp = (end - start) * pct + start
        else:
            interp = end + (start - end) / 2.0 * (xp.cos(xp.pi * pct) + 1)
        # optax's indicator.dot(...): exactly one term (or none) is selected
        picked = xp.sum(xp.where(inside, interp, 0.0), axis=-1)
        return picked + (bounds[-1] <= t) * values[-1]


class OptaxJoin(Schedule, name="optax_join"):
    """optax's ``join_schedules`` (built by :func:`join_schedules`): from each boundary on,
    the next schedule at ``step - boundary``."""

    _static = frozenset({"boundaries"})
    _varargs = "schedules"
    _check = Checks("join_schedules")

    def __init__(self, *schedules: Schedule, boundaries: Sequence[int] = ()) -> None:
        w = self._check.where
        kids = []
        for i, s in enumerate(_seq(w, "schedules", schedules)):
            try:
                kids.append(as_schedule(s))
            except ValueError:
                raise fail(w, f"schedules[{i}]", s, "must be a Schedule or a number") from None
        if not kids:
            raise fail(w, "schedules", schedules, "must hold at least one schedule")
        b = tuple(_steps(w, f"boundaries[{i}]", x)
                  for i, x in enumerate(_seq(w, "boundaries", boundaries)))
        self._set(schedules=tuple(kids), boundaries=b)

    def _eval(self, t: Any, ops: Ops) -> Any:
        out = self.schedules[0]._eval(t, ops)
        # optax's zip: schedules without a boundary (or boundaries without one) are ignored
        for boundary, s in zip(self.boundaries, self.schedules[1:]):
            out = ops.where(t < boundary, out, s._eval(t - boundary, ops))
        return out


# -- optax's functions --------------------------------------------------------------------------


def constant_schedule(value: float) -> Schedule:
    """optax's ``constant_schedule``: ``value`` at every step.

    >>> from schedules import optax as O
    >>> O.constant_schedule(0.1)(5), O.constant_schedule(-1.0)(0)
    (0.1, -1.0)
    """
    return constant(value)


def polynomial_schedule(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """optax's ``polynomial_schedule``: from ``init_value`` to ``end_value`` over
    ``transition_steps`` steps after ``transition_begin``, as ``(1 - p) ** power``.
    A non-positive ``transition_steps`` holds ``init_value`` (optax's convention; the
    algebra's ``S.polynomial`` with 0 steps holds its end); a negative ``transition_begin``
    is 0.

    >>> from schedules import optax as O
    >>> s = O.polynomial_schedule(1.0, 0.0, power=2, transition_steps=10, transition_begin=5)
    >>> s(0), s(10), s(15), O.polynomial_schedule(10, 20, 1, 0)(3)
    (1.0, 0.25, 0.0, 10.0)
    """
    if _steps("polynomial_schedule", "transition_steps", transition_steps) <= 0:
        return constant(_value("polynomial_schedule", "init_value", init_value))
    return OptaxPolynomial(init_value, end_value, power, transition_steps, transition_begin)


def linear_schedule(
    init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """optax's ``linear_schedule``: :func:`polynomial_schedule` with ``power=1``.

    >>> from schedules import optax as O
    >>> O.linear_schedule(0.0, 1.0, transition_steps=4)(1)
    0.25
    """
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def piecewise_constant_schedule(
    init_value: float, boundaries_and_scales: Mapping[int, float] | None = None
) -> Schedule:
    """optax's ``piecewise_constant_schedule``: from each boundary on, the value is multiplied
    by its scale (non-negative, as optax requires).

    >>> from schedules import optax as O
    >>> s = O.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.5})
    >>> s(9), s(10), s(25)
    (1.0, 0.1, 0.05)
    """
    items = sorted((boundaries_and_scales or {}).items())
    return OptaxPiecewiseConstant(init_value, [b for b, _ in items], [s for _, s in items])


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: float,
    boundaries_and_scales: Mapping[int, float] | None = None,
) -> Schedule:
    """optax's ``piecewise_interpolate_schedule``: between boundaries, linear or cosine
    interpolation from one value to the next (each the previous times its scale). As in
    optax, a step before 0 gives 0.

    >>> from schedules import optax as O
    >>> s = O.piecewise_interpolate_schedule("linear", 1.0, {10: 2.0, 20: 0.5})
    >>> s(5), s(10), s(15), s(30)
    (1.5, 2.0, 1.5, 1.0)
    """
    items = sorted((boundaries_and_scales or {}).items())
    return OptaxPiecewiseInterpolate(
        interpolate_type, init_value, [b for b, _ in items], [s for _, s in items]
    )


def _onecycle_steps(where: str, transition_steps: Any) -> int:
    steps = _steps(where, "transition_steps", transition_steps)
    if steps <= 0:
        raise fail(where, "transition_steps", transition_steps, "must be > 0 (optax raises)")
    return steps


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """optax's ``linear_onecycle_schedule``: up to ``peak_value`` at ``pct_start``, back down
    at ``pct_final``, then to ``init / final_div_factor`` at ``transition_steps``. Its phases
    end where optax's do (``int(pct * transition_steps)``), not where ``S.one_cycle`` (torch's
    ``OneCycleLR``) ends them.

    >>> from schedules import optax as O
    >>> s = O.linear_onecycle_schedule(1000, 1.0)
    >>> s(0), s(300), s(850)
    (0.04, 1.0, 0.04)
    """
    where = "linear_onecycle_schedule"
    steps = _onecycle_steps(where, transition_steps)
    div = check_float(where, "div_factor", div_factor)
    fdiv = check_float(where, "final_div_factor", final_div_factor)
    if div == 0 or fdiv == 0:
        raise fail(where, "div_factor" if div == 0 else "final_div_factor", 0.0, "must be != 0")
    peak = _value(where, "peak_value", peak_value)
    table = {  # a dict, as optax builds it: coinciding boundaries keep the last scale
        int(check_float(where, "pct_start", pct_start) * steps): div,
        int(check_float(where, "pct_final", pct_final) * steps): 1.0 / div,
        steps: 1.0 / fdiv,
    }
    return piecewise_interpolate_schedule("linear", peak / div, table)


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """optax's ``cosine_onecycle_schedule``: cosine up to ``peak_value`` at ``pct_start``,
    then cosine down to ``peak / (div_factor * final_div_factor)`` at ``transition_steps``.

    >>> from schedules import optax as O
    >>> s = O.cosine_onecycle_schedule(100, 1.0)
    >>> round(s(0), 12), s(30), s(100)
    (0.04, 1.0, 4e-06)
    """
    where = "cosine_onecycle_schedule"
    steps = _onecycle_steps(where, transition_steps)
    div = check_float(where, "div_factor", div_factor)
    fdiv = check_float(where, "final_div_factor", final_div_factor)
    if div == 0 or fdiv == 0:
        raise fail(where, "div_factor" if div == 0 else "final_div_factor", 0.0, "must be != 0")
    peak = _value(where, "peak_value", peak_value)
    start = int(check_float(where, "pct_start", pct_start) * steps)
    table = {start: div, steps: 1.0 / (div * fdiv)}
    return piecewise_interpolate_schedule("cosine", peak / div, table)


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """optax's ``exponential_decay``: ``init * decay_rate ** ((step - begin) / steps)``
    (``floor``-ed with ``staircase``), ``end_value`` a floor when decaying and a cap when
    growing (``decay_rate > 1``; no bound needed). A non-positive ``transition_steps`` or
    a zero ``decay_rate`` holds ``init_value``.

    >>> from schedules import optax as O
    >>> O.exponential_decay(1.0, 2, 2.0)(4), O.exponential_decay(1.0, 1, 2.0, end_value=5.0)(10)
    (4.0, 5.0)
    """
    where = "exponential_decay"
    if _steps(where, "transition_steps", transition_steps) <= 0 or check_float(
        where, "decay_rate", decay_rate
    ) == 0:
        return constant(_value(where, "init_value", init_value))
    return OptaxExponential(
        init_value, transition_steps, decay_rate, transition_begin, staircase, end_value
    )


def cosine_decay_schedule(
    init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """optax's ``cosine_decay_schedule``: ``init * ((1 - alpha) * c ** exponent + alpha)``,
    ``c`` the half cosine over ``decay_steps`` (which must be > 0, as optax requires).

    >>> from schedules import optax as O
    >>> s = O.cosine_decay_schedule(1.0, 100, alpha=0.1)
    >>> s(0), round(s(50), 12), s(200)
    (1.0, 0.55, 0.1)
    """
    return OptaxCosineDecay(init_value, decay_steps, alpha, exponent)


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """optax's ``join_schedules``: from ``boundaries[i]`` on, ``schedules[i + 1]`` at
    ``step - boundaries[i]``.

    >>> from schedules import optax as O
    >>> s = O.join_schedules([O.constant_schedule(1.0), O.linear_schedule(1.0, 0.0, 10)], [5])
    >>> s(4), s(10)
    (1.0, 0.5)
    """
    return OptaxJoin(*schedules, boundaries=boundaries)


def warmup_constant_schedule(init_value: float, peak_value: float, warmup_steps: int) -> Schedule:
    """optax's ``warmup_constant_schedule``: linear from ``init_value`` to ``peak_value``.

    >>> from schedules import optax as O
    >>> O.warmup_constant_schedule(0.0, 1.0, 10)(5)
    0.5
    """
    return linear_schedule(init_value, peak_value, warmup_steps)


def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> Schedule:
    """optax's ``warmup_cosine_decay_schedule``: a linear warmup to ``peak_value`` over
    ``warmup_steps``, then a cosine to ``end_value`` at ``decay_steps`` (which counts the
    warmup; ``decay_steps <= warmup_steps`` raises, as in optax).

    >>> from schedules import optax as O
    >>> s = O.warmup_cosine_decay_schedule(0.0, 1.0, 10, 20, end_value=-3.0)
    >>> s(5), s(20)
    (0.5, -3.0)
    """
    where = "warmup_cosine_decay_schedule"
    peak = _value(where, "peak_value", peak_value)
    end = _value(where, "end_value", end_value)
    alpha = 0.0 if peak == 0.0 else end / peak
    w = _steps(where, "warmup_steps", warmup_steps)
    d = _steps(where, "decay_steps", decay_steps)
    if not d - w > 0:
        raise fail(
            where,
            "decay_steps",
            decay_steps,
            f"must be > warmup_steps={warmup_steps} (the cosine has decay_steps - warmup_steps "
            "steps; optax raises ValueError)",
        )
    return join_schedules(
        [linear_schedule(init_value, peak, w), cosine_decay_schedule(peak, d - w, alpha, exponent)],
        [w],
    )


def warmup_exponential_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """optax's ``warmup_exponential_decay_schedule``: a linear warmup to ``peak_value``, then
    :func:`exponential_decay` from ``peak_value``.

    >>> from schedules import optax as O
    >>> s = O.warmup_exponential_decay_schedule(0.0, 1.0, 10, 10, 0.5)
    >>> s(5), s(20)
    (0.5, 0.5)
    """
    w = _steps("warmup_exponential_decay_schedule", "warmup_steps", warmup_steps)
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, w),
            exponential_decay(
                peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value
            ),
        ],
        [w],
    )


def sgdr_schedule(cosine_kwargs: Sequence[Mapping[str, Any]]) -> Schedule:
    """optax's ``sgdr_schedule``: one :func:`warmup_cosine_decay_schedule` per dict of
    arguments, each for its ``decay_steps``.

    >>> from schedules import optax as O
    >>> kw = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=10)
    >>> s = O.sgdr_schedule([kw, kw])
    >>> s(2), s(10), s(12)
    (1.0, 0.0, 1.0)
    """
    kids, bounds, step = [], [], 0
    for i, kw in enumerate(cosine_kwargs):
        if not isinstance(kw, Mapping):
            raise fail("sgdr_schedule", f"cosine_kwargs[{i}]", kw, "must be a dict of arguments")
        kids.append(warmup_cosine_decay_schedule(**kw))
        step += _steps("sgdr_schedule", f"cosine_kwargs[{i}]['decay_steps']", kw["decay_steps"])
        bounds.append(step)
    if not kids:
        raise fail("sgdr_schedule", "cosine_kwargs", cosine_kwargs, "must not be empty")
    return join_schedules(kids, bounds[:-1])


