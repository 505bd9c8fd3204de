"""The ``schedules.torch`` schedulers and their closed forms.

One class per scheduler of ``torch.optim.lr_scheduler`` (bar the composites, in
:mod:`._composite`, and ``ReduceLROnPlateau``, in :mod:`._plateau`), in torch's order: the
arguments checked as torch checks them, then the closed forms (``_cf``: the lr after ``k``
steps of the scheduler's own counter, on the host and on arrays) and the pieces the exact
host replay uses (``_tick``: the factor of one multiplicative update, on the host, in NumPy
and under JAX). torch's recurrences themselves, which give the exact host values, are in
:mod:`._mirror`.

Built from the shared numerics (:mod:`schedules._numerics`), not from the algebra's
primitives (:mod:`schedules._primitives`): no torch class has both a primitive's curve and
its arithmetic. ``CosineAnnealingLR`` keeps oscillating past ``T_max`` (``cosine`` holds),
and it and ``CosineAnnealingWarmRestarts`` form ``pi * k / T`` in torch's order on the host
(``cosine``/``cosine_restarts``: ``pi * (k / T)``, a different rounding) and anneal as
``sin ** 2`` of the half angle on arrays (:func:`_cos_anneal`); ``StepLR``, ``MultiStepLR``
and ``ExponentialLR`` take torch's unsorted or negative milestones and raise ``gamma`` to
integral powers through an exact table or one folded ``exp`` per ``ChainedScheduler``
(``step``/``multistep``/``exponential``: ``ops.pow``); ``LinearLR`` forms
``((T - m) s + m e) / T`` and ``PolynomialLR`` ``(T - k) / T`` (``linear``/``polynomial``:
``1 - k / T``, which loses digits near the end in float32), and both accept
``total_iters <= 0``; ``ConstantLR`` is two constants; ``OneCycleLR`` is defined at step
``total_steps`` and with empty phases, and on arrays anneals from the nearer end of a phase;
``CyclicLR`` takes float step sizes and a ``scale_fn``.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._core import Schedule
from .._numerics import (
    CYCLIC_MODES,
    cos_mix,
    cycle_of,
    cyclic_phase,
    floordiv,
    half_cos_torch,
    one_cycle_ends,
)
from .._ops import PY, Ops
from .._validate import FLOAT32_MAX, Checks
from ._base import (
    Kind,
    Mode,
    TorchSchedule,
    TorchTypeError,
    _call,
    _call_float,
    _check_bool,
    _check_str,
    _gamma,
    _host_error,
    _is_list,
    _momentum_groups,
    _nan_if_fraction,
    _whole_step,
)
from ._recurrence import COS_LOOP_BUDGET, SAFE_TICKS, TICK_BUDGET, CosRun, NoClosedForm

#: the longest table of ``gamma ** n`` gathered on the array path (:func:`_int_pow`).
POW_TABLE_MAX = 4096


def _int_pow(gamma: Any, n: Any, ops: Ops, n_max: int | None = None) -> Any:
    """``gamma ** n`` for an integral ``n >= 0`` on the JAX path as a gather from a table of
    ``gamma ** i`` (float64 on the host, then rounded once to the array's dtype: exact
    rounding, and no ``exp``/``log`` at all), or None where no table applies: ``gamma``
    traced, or the table would need more than :data:`POW_TABLE_MAX` entries (it covers
    ``n <= n_max`` when given, else it must reach an underflow to 0, past which every
    larger ``n`` gives 0 as well)."""
    if ops.name != "jax" or not isinstance(gamma, float) or not 0 <= gamma <= 1:
        return None
    n = jnp.asarray(n)
    if gamma in (0.0, 1.0):
        size = 2
    elif n_max is not None and n_max < POW_TABLE_MAX:
        size = n_max + 1
    else:  # gamma ** i underflows the float32 (or float64) range at i ~ -150 / log2(gamma)
        tiny = np.finfo(n.dtype).smallest_subnormal
        size = math.ceil(math.log(float(tiny) / 2) / math.log(gamma)) + 1
        if size > POW_TABLE_MAX:
            return None
    table = (gamma ** np.arange(size, dtype=np.float64)).astype(n.dtype)
    idx = jnp.clip(n, 0, size - 1).astype(jnp.int32)
    if size <= 8:  # a few selects (exact)
        return ops.select(idx, [table[i] for i in range(size)])
    bits = (size - 1).bit_length()
    if bits <= 8:
        # binary powering: prod of gamma ** (2 ** b) over the bits of n, each rounded once from
        # float64: at most 15 roundings, < 1e-6 relative (XLA:CPU gathers cost 2-3x more)
        out = None
        for b in range(bits):
            g = (gamma ** (2.0**b)).__float__()
            f = jnp.where((idx >> b) & 1 == 1, np.asarray(g, n.dtype), np.asarray(1.0, n.dtype))
            out = f if out is None else out * f
        return out
    return jnp.asarray(table)[idx]


def _gamma_pows(
    start: Any, gamma: Any, n: Any, ops: Ops, n_max: int | None = None
) -> tuple[Any, list[tuple[Any, Any]]]:
    """``start * gamma ** n`` (integral ``n``) as ``_cf_pows``'s ``(coef, pairs)``: a table
    gather where :func:`_int_pow` applies, else the power for :func:`_fold` to fold."""
    tab = _int_pow(gamma, n, ops, n_max)
    return (start * tab, []) if tab is not None else (start, [(gamma, n)])


def _gpow(a: Any, y: Any, ops: Ops) -> Any:
    """``a ** y`` (accurate in float32 under JAX for a concrete base, see :func:`_fold`)."""
    return ops.pow_prod([(a, y)]) if ops.name == "jax" else ops.pow(a, y)


def _cos_anneal(eta: Any, hi: Any, num: Any, den: Any, ops: Ops, *his: Any) -> Any:
    """``eta + (hi - eta) * (1 + cos(pi * num / den)) / 2``: torch's operations on the host,
    :func:`cos_mix` on arrays (in its ``eta <= hi`` form where ``eta`` and every value ``his``
    that ``hi`` takes are known to be in that order)."""
    if ops.host:
        return eta + (hi - eta) * half_cos_torch(num, den, ops)
    return cos_mix(eta, hi, num, den, ops, _known_le(*((eta, h) for h in his)))


def _known_le(*pairs: tuple[Any, Any]) -> bool:
    """Whether every ``a <= b`` holds for concrete (host) numbers."""
    ok = True
    for a, b in pairs:
        concrete = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
        ok = ok and concrete and a <= b
    return ok


# -- LambdaLR / MultiplicativeLR ---------------------------------------------------------------


class _UserLambda(TorchSchedule):
    """The arguments of ``LambdaLR`` and ``MultiplicativeLR``: ``lr``, a user ``lr_lambda``
    (a callable of the int step, or a schedule), ``horizon``."""

    _static = frozenset({"lr_lambda", "horizon"})
    _per_group = ("lr_lambda",)

    def __init__(self, lr: float, lr_lambda: Any, horizon: int | None = None) -> None:
        check = self._check
        if not callable(lr_lambda):  # torch raises TypeError here
            msg = check.fail("lr_lambda", lr_lambda, "must be a callable or a Schedule")
            raise TorchTypeError(str(msg))
        self._init(lr, horizon, lr_lambda=lr_lambda)
        self._check_constructs()

    def _host_capable(self) -> bool:
        f = self.lr_lambda
        return f._host_ok() if isinstance(f, Schedule) else True


class LambdaLR(_UserLambda, name="LambdaLR"):
    """``lr * lr_lambda(t)``, as ``torch.optim.lr_scheduler.LambdaLR``.

    ``lr_lambda`` is a callable of the int step (traceable if used under JAX) or
    a schedule such as ``schedules.expr("0.95 ** step")`` (serializable). A list
    of ``lr`` takes a list of lambdas (one per group).

    >>> from schedules import torch as T
    >>> s = T.LambdaLR(0.1, lambda t: 0.5 ** t)
    >>> s(0), s(3)
    (0.1, 0.0125)
    """

    kind = Kind.ABS

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None) -> Any:
        return base * _call(self.lr_lambda, k, ops)


class MultiplicativeLR(_UserLambda, name="MultiplicativeLR"):
    """``lr * prod_{j=1..t} lr_lambda(j)``, as ``torch.optim.lr_scheduler.MultiplicativeLR``.

    No closed form: the host replays the product (memoized); under JAX the
    exact replay is reached through a host callback, or a ``horizon`` table.

    >>> from schedules import torch as T
    >>> s = T.MultiplicativeLR(1.0, lambda t: 0.5)
    >>> s(0), s(2)
    (1.0, 0.25)
    """

    kind = Kind.NONE


# -- StepLR / MultiStepLR / ConstantLR / LinearLR / ExponentialLR / PolynomialLR ----------------


def _exact_gamma(gamma: float) -> bool:
    """Whether ``lr * gamma ** n`` is exact (every rounded ``lr * gamma`` is exact too)."""
    return gamma in (0.0, 1.0) or abs(gamma) == 0.5


class StepLR(TorchSchedule, name="StepLR"):
    """Multiply by ``gamma`` every ``step_size`` steps (``torch.optim.lr_scheduler.StepLR``).

    >>> from schedules import torch as T
    >>> s = T.StepLR(1.0, step_size=10, gamma=0.5)
    >>> s(9), s(10), s(25)
    (1.0, 0.5, 0.25)
    """

    kind = Kind.MULT

    def __init__(
        self, lr: float, step_size: int, gamma: float = 0.1, horizon: int | None = None
    ) -> None:
        check = self._check
        # torch raises ZeroDivisionError (t % 0) at the first step for step_size=0.
        step_size = check.int("step_size", step_size, gt=0)
        self._init(lr, horizon, step_size=step_size, gamma=_gamma(check, gamma))

    def _cf_pows(
        self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None
    ) -> tuple[Any, list[tuple[Any, Any]]]:
        return _gamma_pows(start, self.gamma, floordiv(k, self.step_size, ops), ops)

    def _tick(self, k: Any, ops: Ops) -> Any:
        s = self.step_size
        hit = (k > 0 and k % s == 0) if ops.host else (k > 0) & (floordiv(k, s, ops) * s == k)
        return ops.where(hit, self.gamma, 1.0)

    def _closed_host_ok(self, k: int) -> bool:
        return k // self.step_size <= SAFE_TICKS

    def _closed_exact(self) -> bool:
        return _exact_gamma(self.gamma)

    def _tick_spec(self) -> Any:  # a tick every step_size steps: lr * gamma
        s, g = self.step_size, self.gamma
        return (lambda k: k // s), (lambda a, b: np.full((b - a, 1), g)), None, 1

    def _mult_period(self) -> int | None:
        return self.step_size


class MultiStepLR(TorchSchedule, name="MultiStepLR"):
    """Multiply by ``gamma`` at each milestone, counting repeats (``MultiStepLR``).

    >>> from schedules import torch as T
    >>> s = T.MultiStepLR(1.0, milestones=[2, 4, 4], gamma=0.5)
    >>> [s(t) for t in range(6)]
    [1.0, 1.0, 0.5, 0.5, 0.125, 0.125]
    """

    _static = frozenset({"milestones", "horizon"})
    kind = Kind.MULT

    def __init__(
        self, lr: float, milestones: Sequence[int], gamma: float = 0.1, horizon: int | None = None
    ) -> None:
        check = self._check
        if not _is_list(milestones) and not (
            isinstance(milestones, np.ndarray) and milestones.ndim == 1
        ):
            raise check.fail("milestones", milestones, "must be a list of ints")
        ms = tuple(check.int(f"milestones[{i}]", m) for i, m in enumerate(milestones))
        self._init(lr, horizon, milestones=ms, gamma=_gamma(check, gamma))

    def _cf_pows(
        self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None
    ) -> tuple[Any, list[tuple[Any, Any]]]:
        n = 1.0 * ops.count_le(sorted(self.milestones), k)
        return _gamma_pows(start, self.gamma, n, ops, n_max=len(self.milestones))

    def _tick(self, k: Any, ops: Ops) -> Any:
        # torch: gamma ** counts[k] (Python's pow, as the host computes each entry)
        ms = sorted(self.milestones)
        top = max(Counter(ms).values(), default=0)
        c = ops.count_le(ms, k) - ops.count_le(ms, k - 1)
        return ops.select(c, [self.gamma**i for i in range(top + 1)])

    def _closed_host_ok(self, k: int) -> bool:
        return len(self.milestones) <= SAFE_TICKS

    def _mult_last(self) -> int | None:
        return max([m for m in self.milestones if m >= 1], default=0)

    def _tick_spec(self) -> Any:  # a tick at each distinct milestone >= 1
        counts = Counter(m for m in self.milestones if m >= 1)
        ms = sorted(counts)
        fs = np.asarray([1.0] + [self.gamma ** counts[m] for m in ms])

        def factors(a: int, b: int) -> np.ndarray:
            idx = np.clip(np.arange(a, b), 0, len(ms))
            return np.where(np.arange(a, b) <= len(ms), fs[idx], 1.0).reshape(-1, 1)

        return (lambda k: bisect_right(ms, k)), factors, len(ms), 1


class ConstantLR(TorchSchedule, name="ConstantLR"):
    """``lr * factor`` until ``total_iters``, then ``lr`` (``torch.optim.lr_scheduler.ConstantLR``).

    >>> from schedules import torch as T
    >>> s = T.ConstantLR(0.3, factor=0.5, total_iters=2)
    >>> s(0), s(1), s(2)
    (0.15, 0.15, 0.3)
    """

    kind = Kind.MULT

    def __init__(
        self, lr: float, factor: float = 1.0 / 3, total_iters: int = 5, horizon: int | None = None
    ) -> None:
        check = self._check
        factor = check.float("factor", factor)
        if factor > 1.0 or factor < 0:
            raise check.fail(
                "factor",
                factor,
                "must be between 0 and 1 (torch: 'Constant multiplicative factor "
                "expected to be between 0 and 1.')",
            )
        total_iters = check.int("total_iters", total_iters)
        self._init(lr, horizon, factor=factor, total_iters=total_iters)

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None) -> Any:
        T = self.total_iters
        # RESTART: torch's closed form at 0 is ``factor + (0 >= T) * (1 - factor)``: 1 when
        # T <= 0, and no later step (k != T) changes it.
        if mode is Mode.RESTART and ops.host and T <= 0:
            return base
        after = (T > 0 and k >= T) if ops.host else ((T > 0) & (k >= T))
        v = ops.where(after, start, start * self.factor)
        if not ops.host:
            v = v * ops.where(after & (self.factor == 0), math.nan, 1.0)
            if mode is Mode.RESTART:
                v = ops.where(T <= 0, base + 0.0 * k, v)
        return v

    def _tick(self, k: Any, ops: Ops) -> Any:
        inv = ops.div(1.0, self.factor)
        return ops.where(k == 0, self.factor, ops.where(k == self.total_iters, inv, 1.0))

    def _closed_host_ok(self, k: int) -> bool:
        return not (self.factor == 0 and self.total_iters > 0 and k >= self.total_iters)

    def _closed_exact(self) -> bool:
        return True

    def _step_factors(self, ks: np.ndarray) -> np.ndarray | None:
        if self.factor == 0 and self.total_iters >= 1:
            return None  # torch: 1.0 / 0 raises (the replay reports it)
        return super()._step_factors(ks)


class LinearLR(TorchSchedule, name="LinearLR"):
    """Linear factor from ``start_factor`` to ``end_factor`` over ``total_iters``
    (``torch.optim.lr_scheduler.LinearLR``).

    >>> from schedules import torch as T
    >>> s = T.LinearLR(1.0, start_factor=0.5, end_factor=1.0, total_iters=4)
    >>> [round(s(t), 12) for t in range(6)]
    [0.5, 0.625, 0.75, 0.875, 1.0, 1.0]
    """

    kind = Kind.MULT

    def __init__(
        self,
        lr: float,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        horizon: int | None = None,
    ) -> None:
        check = self._check
        s = check.float("start_factor", start_factor)
        e = check.float("end_factor", end_factor)
        if s > 1.0 or s <= 0:
            raise check.fail("start_factor", s, "must be in (0, 1] (torch raises ValueError)")
        if e > 1.0 or e < 0:
            raise check.fail("end_factor", e, "must be in [0, 1] (torch raises ValueError)")
        T = check.int("total_iters", total_iters)
        self._init(lr, horizon, start_factor=s, end_factor=e, total_iters=T)

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None) -> Any:
        s, e, T = self.start_factor, self.end_factor, self.total_iters
        if mode is Mode.RESTART and ops.host and T == 0:
            raise NoClosedForm  # torch: ZeroDivisionError
        if not ops.host:  # ((T - m) s + m e) / T: no cancellation when e << s (float32)
            m = ops.minimum(k, 1.0 * T)
            v = ops.div((T - m) * s + m * e, ops.maximum(T, 1))
            return start * ops.where(T > 0, v, s)
        frac = ops.div(ops.minimum(k, 1.0 * T), ops.maximum(T, 1))
        return start * ops.where(T > 0, s + (e - s) * frac, s)

    def _tick(self, k: Any, ops: Ops) -> Any:
        # torch's get_lr: the same float64 operations on the host and in NumPy
        s, e, T = self.start_factor, self.end_factor, self.total_iters
        mid = 1.0 + ops.div(e - s, T * s + (k - 1) * (e - s))
        return ops.where(k == 0, s, ops.where(k > T, 1.0, mid))

    def _closed_host_ok(self, k: int) -> bool:
        return min(k, self.total_iters) <= SAFE_TICKS


class ExponentialLR(TorchSchedule, name="ExponentialLR"):
    """``lr * gamma ** t`` (``torch.optim.lr_scheduler.ExponentialLR``).

    >>> from schedules import torch as T
    >>> T.ExponentialLR(1.0, gamma=0.5)(3)
    0.125
    """

    kind = Kind.MULT

    def __init__(self, lr: float, gamma: float, horizon: int | None = None) -> None:
        self._init(lr, horizon, gamma=_gamma(self._check, gamma))

    def _cf_pows(
        self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None
    ) -> tuple[Any, list[tuple[Any, Any]]]:
        return start, [(self.gamma, k)]

    def _tick(self, k: Any, ops: Ops) -> Any:
        return ops.where(k == 0, 1.0, self.gamma)

    def _closed_host_ok(self, k: int) -> bool:
        return k <= SAFE_TICKS

    def _closed_exact(self) -> bool:
        return _exact_gamma(self.gamma)


class PolynomialLR(TorchSchedule, name="PolynomialLR"):
    """``lr * (1 - min(t, total_iters) / total_iters) ** power`` (``PolynomialLR``).

    >>> from schedules import torch as T
    >>> s = T.PolynomialLR(1.0, total_iters=4, power=2.0)
    >>> [s(t) for t in range(6)]
    [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """

    kind = Kind.MULT

    def __init__(
        self, lr: float, total_iters: int = 5, power: float = 1.0, horizon: int | None = None
    ) -> None:
        check = self._check
        T = check.int("total_iters", total_iters)
        # a negative power makes the lr inf at total_iters (0 ** -p)
        self._init(lr, horizon, total_iters=T, power=check.float("power", power, ge=0))

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None) -> Any:
        T = self.total_iters
        if mode is Mode.RESTART and ops.host and T == 0:
            raise NoClosedForm  # torch: ZeroDivisionError
        rem = ops.div(ops.maximum(T - ops.minimum(k, 1.0 * T), 0.0), ops.maximum(T, 1))
        return ops.where(T > 0, start * ops.pow(rem, self.power), start)

    def _tick(self, k: Any, ops: Ops) -> Any:
        T, p = self.total_iters, self.power
        if ops.name == "jax":  # (1 - k/T) / (1 - (k-1)/T) with no rounding below 0 at k = T
            r = ops.pow(ops.maximum(ops.div(T - k, T - k + 1.0), 0.0), p)
        else:  # torch's get_lr in float64, and C's pow (Python's **, not NumPy's SIMD one)
            r = ops.div(1.0 - k / max(T, 1), 1.0 - (k - 1) / max(T, 1))
            if ops.host:
                r = ops.pow(r, p)
            elif p != 1.0:  # x ** 1.0 == x
                r = np.fromiter(map(math.pow, r.tolist(), itertools.repeat(p)), float, len(r))
        return ops.where((k == 0 or k > T) if ops.host else (k == 0) | (k > T), 1.0, r)

    def _closed_host_ok(self, k: int) -> bool:
        return min(k, max(self.total_iters, 0)) <= SAFE_TICKS

    def _tick_budget(self) -> int:
        return TICK_BUDGET if self.power == 1.0 else COS_LOOP_BUDGET


# -- CosineAnnealingLR / CosineAnnealingWarmRestarts -------------------------------------------


class CosineAnnealingLR(TorchSchedule, name="CosineAnnealingLR"):
    """Cosine annealing to ``eta_min`` over ``T_max`` (``CosineAnnealingLR``), which keeps
    oscillating after ``T_max`` (period ``2 * T_max``), as torch's recursive form does.

    >>> from schedules import torch as T
    >>> s = T.CosineAnnealingLR(1.0, T_max=10)
    >>> s(0), round(s(5), 12), s(10), round(s(15), 12), round(s(20), 12)
    (1.0, 0.5, 0.0, 0.5, 1.0)
    """

    kind = Kind.COS

    def __init__(
        self, lr: float, T_max: int, eta_min: float = 0.0, horizon: int | None = None
    ) -> None:
        check = self._check
        # torch raises ZeroDivisionError at the first step for T_max=0.
        T_max = check.int("T_max", T_max, gt=0)
        self._init(lr, horizon, T_max=T_max, eta_min=check.float("eta_min", eta_min, ge=0))

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None) -> Any:
        T = self.T_max
        same = not ops.host and _known_le((start, base), (base, start))  # one amplitude
        hi = start if same else ops.where(k <= T, start, base)
        return _cos_anneal(self.eta_min, hi, k, T, ops, start, base)

    def _closed_host_ok(self, k: int) -> bool:
        return k <= self.T_max <= SAFE_TICKS

    def _segment(self, v0: float, base: float) -> Callable[[int], float | None] | None:
        return CosRun(self.T_max, self.eta_min, base, v0).value


class CosineAnnealingWarmRestarts(TorchSchedule, name="CosineAnnealingWarmRestarts"):
    """SGDR (``CosineAnnealingWarmRestarts``): cycles of ``T_0 * T_mult ** n`` steps.

    >>> from schedules import torch as T
    >>> s = T.CosineAnnealingWarmRestarts(1.0, T_0=2, T_mult=2)
    >>> [round(s(t), 12) for t in range(7)]
    [1.0, 0.5, 1.0, 0.853553390593, 0.5, 0.146446609407, 1.0]
    """

    kind = Kind.ABS

    def __init__(
        self, lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0, horizon: int | None = None
    ) -> None:
        check = self._check
        rule = "must be a positive integer (torch: 'Expected positive integer T_0')"
        T_0 = _strict_int(check, "T_0", T_0, 1, 2**31, rule)
        rule = "must be an integer >= 1 (torch: 'Expected integer T_mult >= 1')"
        T_mult = _strict_int(check, "T_mult", T_mult, 1, 2**20, rule)
        self._init(
            lr, horizon, T_0=T_0, T_mult=T_mult, eta_min=check.float("eta_min", eta_min, ge=0)
        )

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None) -> Any:
        _, S, Ti = cycle_of(k, self.T_0, self.T_mult, ops)
        return _cos_anneal(self.eta_min, base, k - S, Ti, ops, base)

    def _fractional(self, t: Any, ops: Ops) -> Any:
        """torch's ``step(epoch)`` with a float epoch (documented: ``step(epoch + i / iters)``):
        ``T_cur``/``T_i`` from its own arithmetic, then ``get_lr``'s cosine."""
        T0, Tm, eta = self.T_0, self.T_mult, self.eta_min
        if ops.host:  # torch's Python float operations, in its order
            t_cur, t_i = t, T0
            if t >= T0:
                if Tm == 1:
                    t_cur = t % T0
                else:
                    n = int(math.log((t / T0 * (Tm - 1) + 1), Tm))
                    t_cur = t - T0 * (Tm**n - 1) / (Tm - 1)
                    t_i = T0 * Tm**n
            return eta + (self.lr - eta) * (1 + math.cos(math.pi * t_cur / t_i)) / 2
        concrete = isinstance(Tm, int)  # a traced T_mult (a traced argument): both branches
        if not concrete or Tm == 1:
            t_cur1 = jnp.where(t >= T0, jnp.mod(t, T0), t)
        if not concrete or Tm != 1:
            x = jnp.maximum(t / T0 * (Tm - 1) + 1, 1.0)
            log_m = math.log(Tm) if concrete else jnp.log(Tm)
            n = jnp.floor(jnp.log(x) / log_m)  # int(): truncation, floor for x >= 1
            pw = jnp.power(Tm * 1.0, n)
            t_cur2 = jnp.where(t >= T0, t - T0 * (pw - 1) / (Tm - 1), t)
            t_i2 = jnp.where(t >= T0, T0 * pw, T0 * 1.0)
        if concrete:
            t_cur, t_i = (t_cur1, T0 * 1.0) if Tm == 1 else (t_cur2, t_i2)
        else:
            t_cur = jnp.where(Tm == 1, t_cur1, t_cur2)
            t_i = jnp.where(Tm == 1, T0 * 1.0, t_i2)
        return eta + (self.lr - eta) * (1 + jnp.cos(math.pi * t_cur / t_i)) / 2


# -- CyclicLR ----------------------------------------------------------------------------------


# the step sizes fix the period (integers, used in Python arithmetic): static, so that the
# schedule also works as a traced argument
_CYCLE_FIELDS = frozenset({"mode", "scale_fn", "scale_mode", "step_size_up", "step_size_down"})


class _CyclicPhase:
    """torch's ``CyclicLR`` cycle arithmetic, shared by :class:`CyclicLR` (the lr) and
    :class:`CyclicMomentum` (the momentum it cycles): reads ``step_size_up``,
    ``step_size_down``, ``mode``, ``gamma``, ``scale_fn`` and ``scale_mode``."""

    step_size_up: Any
    step_size_down: Any
    mode: str
    gamma: Any
    scale_fn: Any
    scale_mode: str

    def _scale_mode(self) -> str:
        if self.scale_fn is not None:
            return self.scale_mode
        return "iterations" if self.mode == "exp_range" else "cycle"

    def _scale(self, x: Any, ops: Ops) -> Any:
        if self.scale_fn is not None:
            return _call_float(self.scale_fn, x, ops)
        if self.mode == "triangular":
            return 1.0 + 0.0 * x
        if self.mode == "triangular2":
            return 1 / ops.pow(2.0, x - 1)
        return _gpow(self.gamma, x, ops)

    def _phase(self, k: Any, ops: Ops) -> tuple[Any, Any]:
        """``(scale_factor, scale)`` at counter ``k``, in torch's operation order."""
        # torch: step_size_up/down become floats, total_size their sum
        up = float(self.step_size_up)
        down = float(self.step_size_down) if self.step_size_down is not None else up
        cycle, sf = cyclic_phase(k, up, up + down, ops)
        scale = self._scale(cycle if self._scale_mode() == "cycle" else k, ops)
        return sf, scale


def _cycle_args(
    check: Checks,
    step_size_up: Any,
    step_size_down: Any,
    mode: Any,
    gamma: Any,
    scale_fn: Any,
    scale_mode: Any,
) -> dict[str, Any]:
    """``CyclicLR``'s cycle arguments (``CyclicMomentum``'s too), checked as torch checks them."""
    if scale_fn is None and (not isinstance(mode, str) or mode not in CYCLIC_MODES):
        raise check.fail(
            "mode",
            mode,
            f"must be one of {', '.join(map(repr, CYCLIC_MODES))} "
            "when scale_fn is None (torch: 'mode is invalid and scale_fn is None')",
        )
    _check_str(check, "mode", mode)
    if scale_fn is not None and not callable(scale_fn):
        raise check.fail("scale_fn", scale_fn, "must be a callable or a Schedule")
    up = check.float("step_size_up", step_size_up)
    down = up if step_size_down is None else check.float("step_size_down", step_size_down)
    if not 0 < up + down <= FLOAT32_MAX:
        raise check.fail(
            "step_size_up + step_size_down",
            up + down,
            f"must be > 0 (torch divides by it) and at most {FLOAT32_MAX!r} (float32)",
        )
    return {
        "step_size_up": step_size_up,
        "step_size_down": step_size_down,
        "mode": mode,
        "gamma": _gamma(check, gamma),
        "scale_fn": scale_fn,
        "scale_mode": check.choice("scale_mode", scale_mode, ("cycle", "iterations")),
    }


class CyclicLR(_CyclicPhase, TorchSchedule, name="CyclicLR"):
    """Cyclical learning rate (``torch.optim.lr_scheduler.CyclicLR``); the lr is
    *replaced* by ``base_lr`` (the optimizer's ``lr`` only matters inside composites).

    :meth:`momentum` gives the momentum (SGD) / beta1 (Adam) schedule torch cycles.

    >>> from schedules import torch as T
    >>> s = T.CyclicLR(0.5, base_lr=0.1, max_lr=1.0, step_size_up=2)
    >>> [round(s(t), 12) for t in range(5)]
    [0.1, 0.55, 1.0, 0.55, 0.1]
    >>> m = T.CyclicLR.momentum(base_lr=0.1, max_lr=1.0, step_size_up=2)
    >>> [round(m(t), 12) for t in range(3)]
    [0.9, 0.85, 0.8]
    """

    # the step sizes fix the period (integers, used in Python arithmetic): static, so the
    # schedule also works as a traced argument
    _static = _CYCLE_FIELDS | {"cycle_momentum", "horizon"}
    _per_group = ("base_lr", "max_lr", "base_momentum", "max_momentum")
    kind = Kind.ABS

    def __init__(
        self,
        lr: float,
        base_lr: float,
        max_lr: float,
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: str = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float = 0.8,
        max_momentum: float = 0.9,
        horizon: int | None = None,
    ) -> None:
        check = self._check
        cycle = _cycle_args(check, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)
        self._init(
            lr,
            horizon,
            base_lr=check.float("base_lr", base_lr, ge=0),
            max_lr=check.float("max_lr", max_lr, ge=0),
            **cycle,
            cycle_momentum=_check_bool(check, "cycle_momentum", cycle_momentum),
            base_momentum=check.float("base_momentum", base_momentum),
            max_momentum=check.float("max_momentum", max_momentum),
        )
        self._check_constructs()

    def _host_capable(self) -> bool:
        return True

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None) -> Any:
        sf, scale = self._phase(k, ops)
        v = self.base_lr + (self.max_lr - self.base_lr) * sf * scale
        if mode is Mode.CONSTRUCT:  # the initial step still used base_lrs = initial_lr
            v = ops.where(k == 0, base, v)
        return v

    def _closed(self, k: Any, ops: Ops) -> Any:
        return self._cf(k, ops, self.base_lr, self.base_lr, Mode.CONSTRUCT)

    @staticmethod
    def momentum(
        base_lr: float = 0.0,
        max_lr: float = 1.0,
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: str = "cycle",
        base_momentum: float | list[float] = 0.8,
        max_momentum: float | list[float] = 0.9,
    ) -> Any:
        """The momentum (or Adam beta1) schedule ``CyclicLR`` sets with ``cycle_momentum``:
        ``max_momentum - (max_momentum - base_momentum) * scale_factor * scale``.
        Takes ``CyclicLR``'s arguments (the lrs do not matter); lists give one
        schedule per group. Use with ``optax.inject_hyperparams``."""

        def one(b: Any, m: Any) -> CyclicMomentum:
            return CyclicMomentum(
                b, m, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode
            )

        return _momentum_groups("CyclicLR.momentum", base_momentum, max_momentum, one)


class CyclicMomentum(_CyclicPhase, Schedule, name="CyclicMomentum"):
    """The momentum schedule of :class:`CyclicLR` (see :meth:`CyclicLR.momentum`).

    >>> from schedules import torch as T
    >>> m = T.CyclicMomentum(0.8, 0.9, step_size_up=2)
    >>> m(0), round(m(2), 12)
    (0.9, 0.8)
    """

    _static = _CYCLE_FIELDS

    def __init__(
        self,
        base_momentum: float = 0.8,
        max_momentum: float = 0.9,
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: str = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: str = "cycle",
    ) -> None:
        check = self._check
        self._set(
            base_momentum=check.float("base_momentum", base_momentum),
            max_momentum=check.float("max_momentum", max_momentum),
            **_cycle_args(check, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode),
        )

    def _host_capable(self) -> bool:
        return True

    def _eval(self, t: Any, ops: Ops) -> Any:
        t0, k = _whole_step(self._check.where, t, ops)
        try:
            sf, scale = self._phase(k, ops)
        except (ZeroDivisionError, OverflowError) as e:
            raise _host_error(self._check.where, t, ops, e) from None
        v = self.max_momentum - (self.max_momentum - self.base_momentum) * sf * scale
        return _nan_if_fraction(v, t0, k, ops)


# -- OneCycleLR --------------------------------------------------------------------------------


# the group's keys each phase of OneCycleLR goes between: (start_lr, end_lr, start_mom, end_mom)
_TWO_PHASES = [
    ("initial_lr", "max_lr", "max_momentum", "base_momentum"),
    ("max_lr", "min_lr", "base_momentum", "max_momentum"),
]
_THREE_PHASES = [
    ("initial_lr", "max_lr", "max_momentum", "base_momentum"),
    ("max_lr", "initial_lr", "base_momentum", "max_momentum"),
    ("initial_lr", "min_lr", "max_momentum", "max_momentum"),
]


# they fix the phase ends (torch computes them in Python): static
_PHASE_FIELDS = frozenset(
    {"total_steps", "epochs", "steps_per_epoch", "pct_start", "anneal_strategy", "three_phase"}
)


class _OneCyclePhases:
    """torch's ``OneCycleLR`` phases, shared by :class:`OneCycleLR` (the lr) and
    :class:`OneCycleMomentum` (the momentum it cycles): reads ``pct_start``,
    ``three_phase``, ``anneal_strategy`` and ``total_steps``."""

    total_steps: int
    pct_start: float
    three_phase: bool
    anneal_strategy: str
    _phases_cache: list[tuple[float, str, str, str, str]] | None = None

    def _phases(self) -> list[tuple[float, str, str, str, str]]:
        """torch's ``_schedule_phases``: (end_step, start_lr, end_lr, start_mom, end_mom)
        (static fields only: computed once)."""
        phases = self._phases_cache
        if phases is None:
            ends = one_cycle_ends(self.total_steps, self.pct_start, self.three_phase)
            keys = _THREE_PHASES if self.three_phase else _TWO_PHASES
            phases = [(end, *k) for end, k in zip(ends, keys)]
            object.__setattr__(self, "_phases_cache", phases)
        return phases

    def _anneal(self, a: float, b: float, pct: float) -> float:
        """torch's ``_annealing_cos`` / ``_annealing_linear`` (host)."""
        if self.anneal_strategy == "cos":
            return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (b - a) * pct + a

    def _value(self, k: Any, ops: Ops, grp: dict[str, Any], lr_keys: bool = True) -> Any:
        """The lr (``lr_keys``) or the momentum at step ``k``: on the host torch's
        ``get_lr`` phase loop; on arrays the same phases without cancellation."""
        phases = self._phases()
        if ops.host:
            start = 0.0
            for i, (end, s_lr, e_lr, s_m, e_m) in enumerate(phases):
                if k <= end or i == len(phases) - 1:
                    pct = (k - start) / (end - start)
                    a, b = (grp[s_lr], grp[e_lr]) if lr_keys else (grp[s_m], grp[e_m])
                    return self._anneal(a, b, pct)
                start = end

        # The phase's constants are selected first (torch: the first phase whose end is
        # >= k), so that ONE phase is annealed: one sin, not one per phase and end.
        # (k - start) / len and (end - k) / len with the (fractional) phase ends split
        # hi + lo (hi: the float32 rounding, so k - hi is exact near the end).
        def split(c: float, d: float) -> tuple[float, float]:
            hi = float(np.float32(c))
            return hi, (c - hi) / d if d else 0.0  # an empty phase: k - hi over 0 (inf/NaN)

        start = 0.0
        cols: list[tuple[Any, ...]] = []
        for end, s_lr, e_lr, s_m, e_m in phases:
            a, b = (grp[s_lr], grp[e_lr]) if lr_keys else (grp[s_m], grp[e_m])
            d = end - start
            cols.append((*split(start, d), *split(end, d), float(d), a, b, start))
            start = end
        sel = list(cols[0][:7])
        for col in cols[1:]:
            later = k > col[7]  # past the previous phase's end
            sel = [ops.where(later, c, s) for c, s in zip(col[:7], sel)]
        hs, ls, he, le, d, a, b = sel
        pct = ops.div(k - hs, d) - ls
        rem = -(ops.div(k - he, d) - le)
        first = pct <= 0.5
        if self.anneal_strategy == "cos":  # from the nearer end: no cancellation (float32)
            s2 = ops.sin2(ops.pi * ops.where(first, pct, rem) / 2.0)
            out = ops.where(first, a + (b - a) * s2, b + (a - b) * s2)
        else:
            out = ops.where(first, (b - a) * pct + a, (a - b) * rem + b)
        return ops.where(k > self.total_steps, math.nan, out)


class OneCycleLR(_OneCyclePhases, TorchSchedule, name="OneCycleLR"):
    """The 1cycle policy (``torch.optim.lr_scheduler.OneCycleLR``), torch's phase layout:
    phase ends at ``pct_start * total_steps - 1`` (and ``2 * pct_start * total_steps - 2``
    with ``three_phase``) and ``total_steps - 1``. Step ``total_steps`` is still
    defined (the last phase extrapolated); beyond it torch raises, so the host
    path raises ``ValueError`` and the traced path returns NaN.

    :meth:`momentum` gives the momentum / beta1 schedule torch cycles.

    >>> from schedules import torch as T
    >>> s = T.OneCycleLR(0.1, max_lr=1.0, total_steps=10, anneal_strategy="linear", pct_start=0.5)
    >>> s(0), round(s(4), 12), round(s(9), 12)
    (0.04, 1.0, 4e-06)
    """

    _static = _PHASE_FIELDS | {"cycle_momentum", "horizon"}
    _per_group = ("max_lr", "base_momentum", "max_momentum")
    kind = Kind.ABS

    def __init__(
        self,
        lr: float,
        max_lr: float,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        horizon: int | None = None,
    ) -> None:
        check = self._check
        phases = _phase_args(
            check, total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy
        )
        self._init(
            lr,
            horizon,
            max_lr=check.float("max_lr", max_lr, ge=0),
            **phases,
            cycle_momentum=_check_bool(check, "cycle_momentum", cycle_momentum),
            base_momentum=check.float("base_momentum", base_momentum),
            max_momentum=check.float("max_momentum", max_momentum),
            div_factor=check.float("div_factor", div_factor, gt=0),
            final_div_factor=check.float("final_div_factor", final_div_factor, gt=0),
            three_phase=_check_bool(check, "three_phase", three_phase),
        )
        for name, v in self._group().items():
            if "lr" in name and not v <= FLOAT32_MAX:
                raise check.fail(
                    "div_factor" if name == "initial_lr" else "final_div_factor",
                    self.div_factor if name == "initial_lr" else self.final_div_factor,
                    f"makes {name} = {v!r} exceed float32's range ({FLOAT32_MAX!r})",
                )
        self._check_constructs()

    def _group(self) -> dict[str, Any]:
        initial = self.max_lr / self.div_factor
        return {
            "initial_lr": initial,
            "max_lr": self.max_lr,
            "min_lr": initial / self.final_div_factor,
            "max_momentum": self.max_momentum,
            "base_momentum": self.base_momentum,
        }

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None) -> Any:
        return self._value(k, ops, g if g is not None else self._group())

    def _closed_host_ok(self, k: int) -> bool:
        return k <= self.total_steps

    @staticmethod
    def momentum(
        max_lr: float = 1.0,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        three_phase: bool = False,
    ) -> Any:
        """The momentum (or Adam beta1) schedule ``OneCycleLR`` sets with
        ``cycle_momentum``: ``max_momentum -> base_momentum -> max_momentum`` over
        the same phases. Takes ``OneCycleLR``'s arguments; lists give one schedule
        per group. Use with ``optax.inject_hyperparams``.

        >>> from schedules import torch as T
        >>> m = T.OneCycleLR.momentum(total_steps=10, pct_start=0.5, anneal_strategy="linear")
        >>> m(0), round(m(4), 12), round(m(9), 12)
        (0.95, 0.85, 0.95)
        """

        def one(b: Any, m: Any) -> OneCycleMomentum:
            return OneCycleMomentum(
                total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy, b, m, three_phase
            )

        return _momentum_groups("OneCycleLR.momentum", base_momentum, max_momentum, one)


def _phase_args(
    check: Checks,
    total_steps: Any,
    epochs: Any,
    steps_per_epoch: Any,
    pct_start: Any,
    anneal_strategy: Any,
) -> dict[str, Any]:
    """``OneCycleLR``'s phase arguments (``OneCycleMomentum``'s too), checked as torch does."""
    total = _one_cycle_total(check, total_steps, epochs, steps_per_epoch)
    # torch: ``pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float)``; NaN
    # (which passes torch's check and makes every lr NaN) is refused too.
    if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
        raise check.fail(
            "pct_start",
            pct_start,
            "must be a float between 0 and 1 (torch: 'Expected float between 0 and 1 pct_start')",
        )
    return {
        "total_steps": total,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "pct_start": pct_start,
        "anneal_strategy": check.choice("anneal_strategy", anneal_strategy, ("cos", "linear")),
    }


def _strict_int(check: Checks, name: str, value: Any, lo: int, hi: int, rule: str) -> int:
    """An ``int`` (torch's ``isinstance`` check: not a bool, not a float) in ``[lo, hi)``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value < hi:
        raise check.fail(name, value, rule)
    return value


def _one_cycle_total(check: Checks, total_steps: Any, epochs: Any, steps_per_epoch: Any) -> int:
    rule = "must be a positive integer below 2**31 (int32)"
    if total_steps is not None:
        return _strict_int(check, "total_steps", total_steps, 1, 2**31, rule)
    if epochs is not None and steps_per_epoch is not None:
        n = _strict_int(check, "epochs", epochs, 1, 2**31, rule)
        n *= _strict_int(check, "steps_per_epoch", steps_per_epoch, 1, 2**31, rule)
        return _strict_int(check, "epochs * steps_per_epoch", n, 1, 2**31, rule)
    raise check.fail(
        "total_steps",
        total_steps,
        "must be given, or both epochs and steps_per_epoch (torch raises ValueError)",
    )


class OneCycleMomentum(_OneCyclePhases, Schedule, name="OneCycleMomentum"):
    """The momentum schedule of :class:`OneCycleLR` (see :meth:`OneCycleLR.momentum`).

    >>> from schedules import torch as T
    >>> T.OneCycleMomentum(total_steps=100)(0)
    0.95
    """

    _static = _PHASE_FIELDS

    def __init__(
        self,
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        three_phase: bool = False,
    ) -> None:
        check = self._check
        self._set(
            **_phase_args(check, total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy),
            base_momentum=check.float("base_momentum", base_momentum),
            max_momentum=check.float("max_momentum", max_momentum),
            three_phase=_check_bool(check, "three_phase", three_phase),
        )
        self._eval(0.0, PY)  # torch's construction: its errors surface now

    def _eval(self, t: Any, ops: Ops) -> Any:
        grp = {"max_momentum": self.max_momentum, "base_momentum": self.base_momentum}
        t0, k = _whole_step(self._check.where, t, ops)
        if ops.host and k > self.total_steps:
            raise ValueError(
                f"OneCycleMomentum: step {int(k)} is beyond total_steps="
                f"{self.total_steps} (torch raises ValueError)"
            )
        try:
            return _nan_if_fraction(self._value(k, ops, grp, lr_keys=False), t0, k, ops)
        except (ZeroDivisionError, OverflowError) as e:
            raise _host_error(self._check.where, t, ops, e) from None
