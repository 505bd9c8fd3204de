"""PyTorch-exact schedules: every scheduler of ``torch.optim.lr_scheduler`` (torch 2.13).

Each class takes torch's own arguments with the ``optimizer`` replaced by the
base learning rate ``lr`` (the optimizer's initial lr) and *is* a pure
:class:`~schedules.Schedule`: ``s(t)`` is the learning rate torch's optimizer
holds after ``t`` calls of ``scheduler.step()`` -- the lr used by optimizer
step ``t`` (0-based), which is optax's count convention::

    optax.adamw(learning_rate=StepLR(1e-3, step_size=30))

A list of learning rates (one per parameter group) returns a list of schedules,
one per group, taking torch's per-group arguments (``lr_lambda`` lists,
``max_lr`` lists, ...). Composites (:class:`SequentialLR`,
:class:`ChainedScheduler`) take children built here with the same ``lr``.

Exactness: on the host (Python int steps) values equal torch's to 1e-12
relative (torch's in-place recurrences are replayed exactly, memoized); under
``jit``/``vmap`` closed forms are used (float32), float64 takes the closed form
where it is exact and the exact replay otherwise (see
:mod:`schedules._recurrence` and ``docs/torch-compat.md``). No torch import.

>>> from schedules import torch as T
>>> s = T.StepLR(0.1, step_size=2, gamma=0.5)
>>> [s(t) for t in range(5)]
[0.1, 0.1, 0.05, 0.05, 0.025]
"""

from __future__ import annotations

import inspect
import itertools
import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._core import Schedule
from ._facade import Scheduler as _BaseScheduler
from ._ops import JNP, JNP_ACCURATE, PY, Ops
from ._primitives import cycle_of
from ._recurrence import SAFE_TICKS, TICK_BUDGET, Chain, NoClosedForm, Recurrence
from ._validate import FLOAT32_MAX, check_choice, check_float, check_int, fail

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PlateauState",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "Scheduler",
    "SequentialLR",
    "StepLR",
]


# ---------------------------------------------------------------------------------------------
# A line-by-line mirror of torch.optim.lr_scheduler for one parameter group (host, float64).
# ``g`` is the param group: {"lr", "initial_lr", and OneCycleLR's "max_lr"/"min_lr"}.
# ---------------------------------------------------------------------------------------------


class _Sim:
    """Mirror of ``LRScheduler`` (lr_scheduler.py: ``__init__``, ``_initial_step``,
    ``step``, ``_update_lr``) for a single param group."""

    has_closed = False

    def __init__(self, g: dict[str, float]) -> None:
        self.g = g
        g.setdefault("initial_lr", g["lr"])
        self.base = g["initial_lr"]
        self.last_epoch = -1
        self._is_initial = False
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def step(self) -> None:
        self._step_count += 1
        self._update_lr(None)

    def _update_lr(self, epoch: int | None) -> None:
        if epoch is None:
            self.last_epoch += 1
            v = self.get_lr()
        else:
            self.last_epoch = epoch
            v = self.closed() if self.has_closed else self.get_lr()
        self.g["lr"] = v

    def get_lr(self) -> float:
        raise NotImplementedError(f"{type(self).__name__[4:]}.get_lr is not implemented in torch")

    def closed(self) -> float:
        raise NotImplementedError


def _run(node: TorchSchedule) -> Iterator[float]:
    g: dict[str, float] = {"lr": float(node.lr)}
    name = type(node).__name__
    try:
        sim = node._sim(g)
    except (ZeroDivisionError, NotImplementedError, OverflowError, ValueError) as e:
        raise ValueError(f"{name}: torch raises {type(e).__name__} at construction: {e}") from None
    yield float(g["lr"])
    k = 0
    while True:
        k += 1
        try:
            sim.step()
        except (ZeroDivisionError, NotImplementedError, OverflowError, ValueError) as e:
            raise ValueError(f"{name}: torch raises {type(e).__name__} at step {k}: {e}") from None
        yield float(g["lr"])


class _Meta(NamedTuple):
    g: dict[str, float]
    sims: list[Any]


# ---------------------------------------------------------------------------------------------
# The schedule nodes
# ---------------------------------------------------------------------------------------------


def _is_list(x: Any) -> bool:
    return isinstance(x, (list, tuple))


def _check_lr_list(where: str, lr: Sequence[Any]) -> None:
    """A list of lrs is one per param group: non-empty, each a number (torch: an
    optimizer needs at least one param group, and a group's lr is a number)."""
    if len(lr) < 1:
        raise fail(
            where, "lr", lr, "must be a number or a non-empty list of numbers (one per param group)"
        )
    for i, x in enumerate(lr):
        check_float(where, f"lr[{i}]", x, ge=0)


def _host_error(where: str, t: Any, ops: Ops, e: ArithmeticError) -> ArithmeticError | ValueError:
    """On the host, Python's arithmetic errors are torch's own (it runs the same float
    arithmetic): they are reported as ``ValueError``, as the replay does. (A plain
    ``try``/``except`` at each site rather than a context manager: the host query is hot.)"""
    if not ops.host:
        return e
    return ValueError(f"{where}: torch raises {type(e).__name__} at step {t!r}: {e}")


def _check_bool(where: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise fail(where, name, value, f"must be True or False, not {type(value).__name__}")
    return bool(value)


def _check_str(where: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise fail(where, name, value, f"must be a str, not {type(value).__name__}")
    return value


def _check_schedulers_list(where: str, schedulers: Any) -> None:
    if not _is_list(schedulers) or len(schedulers) < 1:
        raise fail(
            where,
            "schedulers",
            schedulers,
            "must be a non-empty list of schedules.torch schedulers "
            f"(torch: '{where} expects at least one scheduler')",
        )


class TorchSchedule(Recurrence):
    """Base of the ``schedules.torch`` schedules (not registered itself).

    ``kind`` says how one ``step()`` changes the running lr: ``"mult"``
    (multiplies it by a factor), ``"abs"`` (replaces it), ``"cos"``
    (CosineAnnealingLR's affine update) or ``"none"`` (no closed form).
    """

    kind: ClassVar[str] = "none"
    _per_group: ClassVar[tuple[str, ...]] = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        sig = inspect.signature(cls.__init__)
        try:
            ba = sig.bind(None, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{cls.__name__}: {e}") from None
        ba.apply_defaults()
        a = dict(ba.arguments)
        a.pop("self")
        n = cls._n_groups(a)
        if n is None:
            return super().__new__(cls)
        return [cls(**cls._group_args(a, i, n)) for i in range(n)]

    @classmethod
    def _n_groups(cls, a: dict[str, Any]) -> int | None:
        lr = a.get("lr")
        if not _is_list(lr):
            return None
        _check_lr_list(cls.__name__, lr)
        return len(lr)

    @classmethod
    def _group_args(cls, a: dict[str, Any], i: int, n: int) -> dict[str, Any]:
        out = dict(a)
        if _is_list(a.get("lr")):
            out["lr"] = a["lr"][i]
        for name in cls._per_group:
            v = a.get(name)
            if _is_list(v):
                if len(v) != n:
                    raise ValueError(
                        f"{cls.__name__}: {name} must have the same length as the lr list "
                        f"(param groups): {name} has {len(v)} values, there are {n} groups"
                    )
                out[name] = v[i]
        return out

    # -- simulation ---------------------------------------------------------
    def _sim(self, g: dict[str, float]) -> _Sim:
        raise NotImplementedError

    def _replay_iter(self) -> Iterator[float]:
        return _run(self)

    def _eval(self, t: Any, ops: Ops) -> Any:
        try:
            v = super()._eval(t, ops)
        except (ZeroDivisionError, OverflowError) as e:
            raise _host_error(type(self).__name__, t, ops, e) from None
        if ops.host:
            if not 0.0 <= v <= FLOAT32_MAX:  # False for NaN too; beyond: inf in float32
                raise ValueError(
                    f"{type(self).__name__}: the lr at step {t!r} would be {v!r}; a learning "
                    "rate must be finite and >= 0 (check lr_lambda / scale_fn)"
                )
            return v
        if ops.name == "jax" and self._has_user_fn():
            # a user function may go negative or overflow: NaN marks the step invalid, as
            # the host path raises there
            v = jnp.where((v >= 0) & (v < jnp.inf), v, jnp.nan)
        return v

    def _has_user_fn(self) -> bool:
        """Whether a user function (``lr_lambda``, ``scale_fn``) can set this lr."""
        h = self.__dict__.get("_user_fn_cache")
        if h is None:
            own = any(
                self.__dict__.get(f) is not None and not _is_hf(self.__dict__.get(f))
                for f in ("lr_lambda", "scale_fn")
            )
            kids = self.__dict__.get("schedulers") or ()
            h = own or any(c._has_user_fn() for c in kids)
            object.__setattr__(self, "_user_fn_cache", h)
        return h

    def _meta(self) -> _Meta:
        m = self.__dict__.get("_meta_cache")
        if m is None:
            g: dict[str, float] = {"lr": float(self.lr)}
            sim = self._sim(g)
            m = _Meta(dict(g), list(getattr(sim, "_schedulers", [sim])))
            object.__setattr__(self, "_meta_cache", m)
        return m

    def _check_constructs(self) -> None:
        """Run torch's construction (the initial step) so its errors surface now."""
        if self._host_ok():
            self._replay(0)

    # -- closed forms -------------------------------------------------------
    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        """Closed form after ``k`` steps of this scheduler's own counter.

        ``start``: the lr before its first update; ``base``: its ``base_lrs`` entry;
        ``mode``: ``"construct"`` (initial step at construction), ``"fresh"``
        (``SequentialLR``'s re-run initial step) or ``"restart"`` (``_update_lr(0)``
        at a ``SequentialLR`` milestone); ``g``: the param group after construction.
        """
        raise NoClosedForm

    def _cf_pows(
        self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None
    ) -> tuple[Any, list[tuple[Any, Any]]]:
        """``_cf`` as ``(coef, pairs)``: ``coef * prod(a ** y for a, y in pairs)``, so that
        a ``ChainedScheduler`` folds the powers of all its children into one ``exp``."""
        return self._cf(k, ops, start, base, mode, g), []

    def _tick(self, k: Any, ops: Ops) -> Any:
        """For ``kind == "mult"``: the factor one update at counter ``k`` applies."""
        raise NoClosedForm

    # -- exact host values without replaying every step ----------------------
    def _step_factors(self, ks: np.ndarray) -> np.ndarray | None:
        """For ``kind == "mult"``: the factor ``get_lr`` applies at each step ``ks >= 1``
        (float64, torch's own operations; 1.0 where it returns the lr unchanged), or None."""
        return None

    def _mult_last(self) -> int | None:
        """The last step whose factor may differ from 1 (None: there is no last one)."""
        return None

    def _tick_budget(self) -> int:
        """The most ticks one query computes (factors that cost a Python call: fewer)."""
        return TICK_BUDGET

    def _mult_period(self) -> int | None:
        """Past :meth:`_mult_last` (or from step 1 if None), the factors' period (or None)."""
        return 1

    def _tick_spec(self) -> tuple[Callable[[int], int], Callable[[int, int], np.ndarray],
                                  int | None, int | None] | None:
        """``(tick_of_step, factors(a, b), last_tick, period)``: the :class:`Chain` of the
        steps where this scheduler changes the lr. Default: every step is a tick."""
        if self._step_factors(np.ones(1)) is None:
            return None

        def factors(a: int, b: int) -> np.ndarray:
            f = self._step_factors(np.arange(a, b, dtype=np.float64))
            return np.asarray(f, dtype=np.float64).reshape(-1, 1)

        last = self._mult_last()
        return (lambda k: k), factors, last, self._mult_period()

    def _segment(self, v0: float, base: float) -> Callable[[int], float | None] | None:
        """The exact lr at this scheduler's own step ``j`` given its value ``v0`` at step 0
        (its ``base_lrs`` entry ``base``), for steps where only its ``get_lr`` runs; None
        where not supported (the replay answers)."""
        spec = self._tick_spec() if self.kind == "mult" else None
        if spec is None:
            return None
        tick_of, factors, last, period = spec
        chain = Chain(v0, factors, last=last, period=period, budget=self._tick_budget())

        def value(j: int) -> float | None:
            try:
                return chain.value(tick_of(j))
            except ValueError:  # beyond the budget of one query
                return None

        return value

    def _fast_host(self, k: int) -> float | None:
        seg = self.__dict__.get("_seg_cache", False)
        if seg is False:
            seg = None
            if self.kind in ("mult", "cos"):
                seg = self._segment(self._replay(0), self._meta().sims[0].base)
            object.__setattr__(self, "_seg_cache", seg)
        if seg is None:
            return None
        v = seg(k)
        if v is None:  # beyond one query's budget: the closed form (docs/torch-compat.md)
            try:
                return float(self._closed(float(k), PY))
            except NoClosedForm:
                return None
        return v

    def _closed(self, k: Any, ops: Ops) -> Any:
        return self._cf(k, ops, self.lr, self.lr, "construct")

    def to_config(self) -> dict[str, Any]:
        for f in ("lr_lambda", "scale_fn"):
            v = self.__dict__.get(f)
            if v is not None and not isinstance(v, Schedule):
                raise ValueError(
                    f"{type(self).__name__}: {f} is a Python callable and cannot be "
                    "serialized; pass a schedule (e.g. schedules.expr('...')) instead"
                )
        return super().to_config()


def _lr(where: str, lr: Any) -> Any:
    # torch's optimizers refuse a negative lr ("Invalid learning rate")
    return check_float(where, "lr", lr, ge=0)


#: the largest ``horizon`` table (float64 values computed on the host: 80 MB).
MAX_HORIZON = 10**7


def _horizon(where: str, h: Any) -> int | None:
    if h is None:
        return None
    n = check_int(where, "horizon", h, ge=0)
    if n > MAX_HORIZON:
        raise fail(where, "horizon", h, f"must be at most {MAX_HORIZON:,} (a table of float64)")
    return n


def _gamma(where: str, gamma: Any) -> Any:
    """A decay factor: in [0, 1] (a negative one makes the lr negative, one above 1 makes it
    grow without bound until it overflows to inf)."""
    return check_float(where, "gamma", gamma, ge=0, le=1)


def _is_hf(fn: Any) -> bool:
    """``schedules.hf``'s validated multipliers (never negative, never inf)."""
    return type(fn).__name__ == "HFLambda"


def _call(fn: Any, k: Any, ops: Ops) -> Any:
    """Evaluate a user lambda (a callable or a Schedule) at step ``k``."""
    if isinstance(fn, Schedule):
        if ops is JNP:  # float32 powers of concrete bases (``0.95 ** step``) accurately
            ops = JNP_ACCURATE
        return fn(int(k)) if ops.host else fn._eval(k, ops)
    return fn(int(k)) if ops.host else fn(k)


def _fold(coef: Any, pairs: list[tuple[Any, Any]], ops: Ops) -> Any:
    """``coef * prod(a ** y)``: on the host in torch's order (``coef * a ** y``); under
    JAX as one accurate exponential (:func:`schedules._ops.pow_prod_f32` in float32:
    ``log a`` from float64, exact products with ``y``; ``jnp.power`` otherwise)."""
    if not pairs:
        return coef
    if ops.host or ops.name != "jax":
        for a, y in pairs:
            coef = coef * ops.pow(a, y)
        return coef
    return coef * ops.pow_prod(pairs)


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


def _gpow(a: Any, y: Any, ops: Ops) -> Any:
    """``a ** y`` (accurate in float32 under JAX for a concrete base, see :func:`_fold`)."""
    return ops.pow_prod([(a, y)]) if ops.name == "jax" else ops.pow(a, y)


def _minus_div(k: Any, c: Any, d: Any, ops: Ops) -> Any:
    """``(k - c) / d`` for a traced float32 ``k`` and concrete floats ``c``, ``d``: ``c``
    is split into ``hi + lo`` (``hi`` its float32 rounding; ``k - hi`` is exact near
    ``c``) and ``lo / d`` added last (``(k - hi) - lo`` would be folded by XLA)."""
    if not (isinstance(c, (int, float)) and isinstance(d, (int, float))) or d == 0:
        return ops.div(k - c, d)
    hi = float(np.float32(c))
    return ops.div(k - hi, d) - (c - hi) / d


def _fdiv(k: Any, d: Any, ops: Ops) -> Any:
    """``floor(k / d)``, exact for integral ``k`` on arrays too (XLA may divide by a
    constant through its reciprocal, which can land just below an integer)."""
    if ops.host:
        return ops.floordiv(k, d)
    q = ops.floor(k / d)
    q = ops.where(q * d > k, q - 1, q)
    return ops.where((q + 1) * d <= k, q + 1, q)


def _half_angle(num: Any, den: Any, ops: Ops) -> Any:
    """``pi * (den - m) / (2 den)`` with ``m = num - 2 den floor(num / (2 den))``: the
    half angle whose ``sin ** 2`` is ``(1 + cos(pi num / den)) / 2``, reduced so that it
    stays within about ``[-3 pi / 2, pi / 2]`` (float32 keeps its accuracy far from 0).
    The floor may be one off where ``num / (2 den)`` is integral (XLA may divide through a
    reciprocal): that moves the angle by ``pi``, which ``sin ** 2`` does not see, so no
    correction is needed (``m`` itself is exact: integers below 2**24)."""
    if isinstance(den, (int, float)) and not isinstance(den, bool):
        # concrete period: multiply by rounded reciprocals (XLA does not turn a division by a
        # constant into a multiplication by itself); a floor one off is harmless (above), and
        # the angle picks up one more rounding (~1e-7 relative: sin ** 2 stays within 1e-6)
        den = float(den)  # a Python int beyond int32 would not reach XLA
        m = num - 2 * den * ops.floor(num * (1.0 / (2 * den)))
        return (den - m) * (math.pi / (2 * den))
    m = num - 2 * den * ops.floor(num / (2 * den))
    return ops.pi * (den - m) / (2 * den)


def _half_cos1(num: Any, den: Any, ops: Ops) -> Any:
    """``(1 + cos(pi * num / den)) / 2``: torch's operation order on the host; on
    arrays ``sin(_half_angle) ** 2``, accurate near the minimum (float32)."""
    if ops.host:
        return (1 + math.cos(math.pi * num / den)) / 2
    return ops.sin(_half_angle(num, den, ops)) ** 2


def _cos_mix(lo: Any, hi: Any, num: Any, den: Any, ops: Ops, lo_le_hi: bool = False) -> Any:
    """``lo + (hi - lo) * (1 + cos(pi * num / den)) / 2`` on arrays. With ``lo <= hi``
    known (concrete values) as ``lo + (hi - lo) * s**2`` (two non-negative terms: no
    cancellation, one ``sin``); otherwise ``hi * s**2 + lo * c**2`` (``s, c``: sin, cos of
    the half angle), which has no cancellation when ``lo > hi`` (float32)."""
    ang = _half_angle(num, den, ops)
    s2 = ops.sin(ang) ** 2
    if lo_le_hi:
        return lo + (hi - lo) * s2
    return hi * s2 + lo * ops.cos(ang) ** 2


def _known_le(*pairs: tuple[Any, Any]) -> bool:
    """Whether every ``a <= b`` holds for concrete (host) numbers."""
    ok = True
    for a, b in pairs:
        concrete = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
        ok = ok and concrete and a <= b
    return ok


# -- LambdaLR / MultiplicativeLR ---------------------------------------------------------------


class LambdaLR(TorchSchedule, name="LambdaLR"):
    """``lr * lr_lambda(t)``, as ``torch.optim.lr_scheduler.LambdaLR``.

    ``lr_lambda`` is a callable of the int step (traceable if used under JAX) or
    a schedule such as ``schedules.expr("0.95 ** step")`` (serializable). A list
    of ``lr`` takes a list of lambdas (one per group).

    >>> from schedules import torch as T
    >>> s = T.LambdaLR(0.1, lambda t: 0.5 ** t)
    >>> s(0), s(3)
    (0.1, 0.0125)
    """

    _fields = ("lr", "lr_lambda", "horizon")
    _static = frozenset({"lr_lambda", "horizon"})
    _per_group = ("lr_lambda",)
    kind = "abs"

    def __init__(self, lr: float, lr_lambda: Any, horizon: int | None = None) -> None:
        if not callable(lr_lambda):
            raise fail(
                type(self).__name__, "lr_lambda", lr_lambda, "must be a callable or a Schedule"
            )
        self._set(
            lr=_lr(type(self).__name__, lr),
            lr_lambda=lr_lambda,
            horizon=_horizon(type(self).__name__, horizon),
        )
        self._check_constructs()

    def _host_capable(self) -> bool:
        f = self.lr_lambda
        return f._host_ok() if isinstance(f, Schedule) else True

    def _sim(self, g: dict[str, float]) -> _Sim:
        node = self

        class _SimLambdaLR(_Sim):
            def get_lr(self) -> float:
                return self.base * _call(node.lr_lambda, self.last_epoch, PY)

        return _SimLambdaLR(g)

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        return base * _call(self.lr_lambda, k, ops)

    def _closed_host_ok(self, k: int) -> bool:
        return True

    def _closed_exact(self) -> bool:
        return True


class MultiplicativeLR(TorchSchedule, name="MultiplicativeLR"):
    """``lr * prod_{j=1..t} lr_lambda(j)``, as ``torch.optim.lr_scheduler.MultiplicativeLR``.

    No closed form: the host replays the product (memoized); under JAX the
    exact replay is reached through a host callback, or a ``horizon`` table.

    >>> from schedules import torch as T
    >>> s = T.MultiplicativeLR(1.0, lambda t: 0.5)
    >>> s(0), s(2)
    (1.0, 0.25)
    """

    _fields = ("lr", "lr_lambda", "horizon")
    _static = frozenset({"lr_lambda", "horizon"})
    _per_group = ("lr_lambda",)
    kind = "none"

    def __init__(self, lr: float, lr_lambda: Any, horizon: int | None = None) -> None:
        if not callable(lr_lambda):
            raise fail(
                "MultiplicativeLR", "lr_lambda", lr_lambda, "must be a callable or a Schedule"
            )
        self._set(
            lr=_lr("MultiplicativeLR", lr),
            lr_lambda=lr_lambda,
            horizon=_horizon("MultiplicativeLR", horizon),
        )
        self._check_constructs()

    def _host_capable(self) -> bool:
        f = self.lr_lambda
        return f._host_ok() if isinstance(f, Schedule) else True

    def _sim(self, g: dict[str, float]) -> _Sim:
        node = self

        class _SimMultiplicativeLR(_Sim):
            def get_lr(self) -> float:
                if not self._is_initial:
                    return self.g["lr"] * _call(node.lr_lambda, self.last_epoch, PY)
                return self.g["lr"]

        return _SimMultiplicativeLR(g)


# -- StepLR / MultiStepLR / ConstantLR / LinearLR / ExponentialLR / PolynomialLR ----------------


class StepLR(TorchSchedule, name="StepLR"):
    """Multiply by ``gamma`` every ``step_size`` steps (``torch.optim.lr_scheduler.StepLR``).

    >>> from schedules import torch as T
    >>> s = T.StepLR(1.0, step_size=10, gamma=0.5)
    >>> s(9), s(10), s(25)
    (1.0, 0.5, 0.25)
    """

    _fields = ("lr", "step_size", "gamma", "horizon")
    _static = frozenset({"horizon"})
    kind = "mult"

    def __init__(
        self, lr: float, step_size: int, gamma: float = 0.1, horizon: int | None = None
    ) -> None:
        # torch raises ZeroDivisionError (t % 0) at the first step for step_size=0.
        self._set(
            lr=_lr("StepLR", lr),
            step_size=check_int("StepLR", "step_size", step_size, gt=0),
            gamma=_gamma("StepLR", gamma),
            horizon=_horizon("StepLR", horizon),
        )

    def _sim(self, g: dict[str, float]) -> _Sim:
        node = self

        class _SimStepLR(_Sim):
            has_closed = True

            def get_lr(self) -> float:
                if self.last_epoch == 0 or self.last_epoch % node.step_size != 0:
                    return self.g["lr"]
                return self.g["lr"] * node.gamma

            def closed(self) -> float:
                return self.base * node.gamma ** (self.last_epoch // node.step_size)

        return _SimStepLR(g)

    def _cf_pows(
        self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None
    ) -> tuple[Any, list[tuple[Any, Any]]]:
        if mode == "restart":
            start = base
        n = _fdiv(k, self.step_size, ops)
        tab = _int_pow(self.gamma, n, ops)
        if tab is not None:
            return start * tab, []
        return start, [(self.gamma, n)]

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        return _fold(*self._cf_pows(k, ops, start, base, mode, g), ops)

    def _tick(self, k: Any, ops: Ops) -> Any:
        hit = (
            (k > 0) & (_fdiv(k, self.step_size, ops) * self.step_size == k)
            if not ops.host
            else (k > 0 and k % self.step_size == 0)
        )
        return ops.where(hit, self.gamma, 1.0)

    def _closed_host_ok(self, k: int) -> bool:
        return k // self.step_size <= SAFE_TICKS

    def _closed_exact(self) -> bool:
        return self.gamma in (0.0, 1.0) or abs(self.gamma) == 0.5

    def _step_factors(self, ks: np.ndarray) -> np.ndarray | None:
        return np.where(ks % self.step_size == 0, self.gamma, 1.0)

    def _mult_period(self) -> int | None:
        return self.step_size

    def _tick_spec(self) -> Any:  # a tick every step_size steps: lr * gamma
        s, g = self.step_size, self.gamma
        return (lambda k: k // s), (lambda a, b: np.full((b - a, 1), g)), None, 1


class MultiStepLR(TorchSchedule, name="MultiStepLR"):
    """Multiply by ``gamma`` at each milestone, counting repeats (``MultiStepLR``).

    >>> from schedules import torch as T
    >>> s = T.MultiStepLR(1.0, milestones=[2, 4, 4], gamma=0.5)
    >>> [s(t) for t in range(6)]
    [1.0, 1.0, 0.5, 0.5, 0.125, 0.125]
    """

    _fields = ("lr", "milestones", "gamma", "horizon")
    _static = frozenset({"milestones", "horizon"})
    kind = "mult"

    def __init__(
        self, lr: float, milestones: Sequence[int], gamma: float = 0.1, horizon: int | None = None
    ) -> None:
        if not _is_list(milestones) and not (
            isinstance(milestones, np.ndarray) and milestones.ndim == 1
        ):
            raise fail("MultiStepLR", "milestones", milestones, "must be a list of ints")
        ms = tuple(
            check_int("MultiStepLR", f"milestones[{i}]", m) for i, m in enumerate(milestones)
        )
        self._set(
            lr=_lr("MultiStepLR", lr),
            milestones=ms,
            gamma=_gamma("MultiStepLR", gamma),
            horizon=_horizon("MultiStepLR", horizon),
        )

    def _sim(self, g: dict[str, float]) -> _Sim:
        node = self
        counts = Counter(self.milestones)
        ordered = sorted(counts.elements())

        class _SimMultiStepLR(_Sim):
            has_closed = True

            def get_lr(self) -> float:
                if self.last_epoch not in counts:
                    return self.g["lr"]
                return self.g["lr"] * node.gamma ** counts[self.last_epoch]

            def closed(self) -> float:
                return self.base * node.gamma ** bisect_right(ordered, self.last_epoch)

        return _SimMultiStepLR(g)

    def _cf_pows(
        self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None
    ) -> tuple[Any, list[tuple[Any, Any]]]:
        if mode == "restart":
            start = base
        n = 1.0 * ops.count_le(sorted(self.milestones), k)
        tab = _int_pow(self.gamma, n, ops, n_max=len(self.milestones))
        if tab is not None:
            return start * tab, []
        return start, [(self.gamma, n)]

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        return _fold(*self._cf_pows(k, ops, start, base, mode, g), ops)

    def _tick(self, k: Any, ops: Ops) -> Any:
        ms = sorted(self.milestones)
        return ops.pow(self.gamma, 1.0 * (ops.count_le(ms, k) - ops.count_le(ms, k - 1)))

    def _closed_host_ok(self, k: int) -> bool:
        return len(self.milestones) <= SAFE_TICKS

    def _closed_exact(self) -> bool:
        return len(self.milestones) <= SAFE_TICKS

    def _step_factors(self, ks: np.ndarray) -> np.ndarray | None:
        counts = Counter(self.milestones)
        out = np.ones(ks.shape)
        for m, c in counts.items():
            if m >= 1:
                out = np.where(ks == m, self.gamma**c, out)  # torch: gamma ** counts[k]
        return out

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

    _fields = ("lr", "factor", "total_iters", "horizon")
    _static = frozenset({"horizon"})
    kind = "mult"

    def __init__(
        self, lr: float, factor: float = 1.0 / 3, total_iters: int = 5, horizon: int | None = None
    ) -> None:
        factor = check_float("ConstantLR", "factor", factor)
        if factor > 1.0 or factor < 0:
            raise fail(
                "ConstantLR",
                "factor",
                factor,
                "must be between 0 and 1 (torch: 'Constant multiplicative factor "
                "expected to be between 0 and 1.')",
            )
        self._set(
            lr=_lr("ConstantLR", lr),
            factor=factor,
            total_iters=check_int("ConstantLR", "total_iters", total_iters),
            horizon=_horizon("ConstantLR", horizon),
        )

    def _sim(self, g: dict[str, float]) -> _Sim:
        node = self

        class _SimConstantLR(_Sim):
            has_closed = True

            def get_lr(self) -> float:
                if self.last_epoch == 0:
                    return self.g["lr"] * node.factor
                if self.last_epoch != node.total_iters:
                    return self.g["lr"]
                return self.g["lr"] * (1.0 / node.factor)

            def closed(self) -> float:
                return self.base * (
                    node.factor + (self.last_epoch >= node.total_iters) * (1 - node.factor)
                )

        return _SimConstantLR(g)

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        T = self.total_iters
        if mode == "restart":
            # torch's closed form at 0 is ``factor + (0 >= T) * (1 - factor)``: 1 when T <= 0,
            # and no later step (k != T) changes it.
            start = base
            if ops.host and T <= 0:
                return base
        after = ((T > 0) & (k >= T)) if not ops.host else (T > 0 and k >= T)
        v = ops.where(after, start, start * self.factor)
        if not ops.host:
            v = v * ops.where(after & (self.factor == 0), math.nan, 1.0)
            if mode == "restart":
                v = ops.where(T <= 0, base + 0.0 * k, v)
        return v

    def _tick(self, k: Any, ops: Ops) -> Any:
        T = self.total_iters
        inv = ops.div(1.0, self.factor)
        return ops.where(k == 0, self.factor, ops.where(k == T, inv, 1.0))

    def _closed_host_ok(self, k: int) -> bool:
        return not (self.factor == 0 and self.total_iters > 0 and k >= self.total_iters)

    def _step_factors(self, ks: np.ndarray) -> np.ndarray | None:
        T = self.total_iters
        if T < 1:
            return np.ones(ks.shape)
        if self.factor == 0:
            return None  # torch: 1.0 / 0 raises (the replay reports it)
        return np.where(ks == T, 1.0 / self.factor, 1.0)

    def _mult_last(self) -> int | None:
        return max(self.total_iters, 0)

    def _closed_exact(self) -> bool:
        return True


class LinearLR(TorchSchedule, name="LinearLR"):
    """Linear factor from ``start_factor`` to ``end_factor`` over ``total_iters``
    (``torch.optim.lr_scheduler.LinearLR``).

    >>> from schedules import torch as T
    >>> s = T.LinearLR(1.0, start_factor=0.5, end_factor=1.0, total_iters=4)
    >>> [round(s(t), 12) for t in range(6)]
    [0.5, 0.625, 0.75, 0.875, 1.0, 1.0]
    """

    _fields = ("lr", "start_factor", "end_factor", "total_iters", "horizon")
    _static = frozenset({"horizon"})
    kind = "mult"

    def __init__(
        self,
        lr: float,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        horizon: int | None = None,
    ) -> None:
        s = check_float("LinearLR", "start_factor", start_factor)
        e = check_float("LinearLR", "end_factor", end_factor)
        if s > 1.0 or s <= 0:
            raise fail("LinearLR", "start_factor", s, "must be in (0, 1] (torch raises ValueError)")
        if e > 1.0 or e < 0:
            raise fail("LinearLR", "end_factor", e, "must be in [0, 1] (torch raises ValueError)")
        self._set(
            lr=_lr("LinearLR", lr),
            start_factor=s,
            end_factor=e,
            total_iters=check_int("LinearLR", "total_iters", total_iters),
            horizon=_horizon("LinearLR", horizon),
        )

    def _sim(self, g: dict[str, float]) -> _Sim:
        node = self

        class _SimLinearLR(_Sim):
            has_closed = True

            def get_lr(self) -> float:
                s, e, T = node.start_factor, node.end_factor, node.total_iters
                if self.last_epoch == 0:
                    return self.g["lr"] * s
                if self._is_initial or self.last_epoch > T:
                    return self.g["lr"]
                return self.g["lr"] * (1.0 + (e - s) / (T * s + (self.last_epoch - 1) * (e - s)))

            def closed(self) -> float:
                s, e, T = node.start_factor, node.end_factor, node.total_iters
                return self.base * (s + (e - s) * min(T, self.last_epoch) / T)

        return _SimLinearLR(g)

    def _factor(self, k: Any, ops: Ops) -> Any:
        s, e, T = self.start_factor, self.end_factor, self.total_iters
        if not ops.host:  # ((T - m) s + m e) / T: no cancellation when e << s (float32)
            m = ops.minimum(k, 1.0 * T)
            v = ops.div((T - m) * s + m * e, ops.maximum(T, 1))
            return ops.where(T > 0, v, s)
        frac = ops.div(ops.minimum(k, 1.0 * T), ops.maximum(T, 1))
        return ops.where(T > 0, s + (e - s) * frac, s)

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        if mode == "restart":
            if ops.host and self.total_iters == 0:
                raise NoClosedForm  # torch: ZeroDivisionError
            start = base
        return start * self._factor(k, ops)

    def _tick(self, k: Any, ops: Ops) -> Any:
        s, e, T = self.start_factor, self.end_factor, self.total_iters
        mid = 1.0 + ops.div(e - s, T * s + (k - 1) * (e - s))
        return ops.where(k == 0, s, ops.where(k > T, 1.0, mid))

    def _closed_host_ok(self, k: int) -> bool:
        return min(k, self.total_iters) <= SAFE_TICKS

    def _closed_exact(self) -> bool:
        return self.total_iters <= SAFE_TICKS

    def _step_factors(self, ks: np.ndarray) -> np.ndarray | None:
        s, e, T = self.start_factor, self.end_factor, self.total_iters
        with np.errstate(all="ignore"):  # the same float64 operations as torch's get_lr
            mid = 1.0 + (e - s) / (float(T) * s + (ks - 1) * (e - s))
        return np.where(ks > T, 1.0, mid)

    def _mult_last(self) -> int | None:
        return max(self.total_iters, 0)


class ExponentialLR(TorchSchedule, name="ExponentialLR"):
    """``lr * gamma ** t`` (``torch.optim.lr_scheduler.ExponentialLR``).

    >>> from schedules import torch as T
    >>> T.ExponentialLR(1.0, gamma=0.5)(3)
    0.125
    """

    _fields = ("lr", "gamma", "horizon")
    _static = frozenset({"horizon"})
    kind = "mult"

    def __init__(self, lr: float, gamma: float, horizon: int | None = None) -> None:
        self._set(
            lr=_lr("ExponentialLR", lr),
            gamma=_gamma("ExponentialLR", gamma),
            horizon=_horizon("ExponentialLR", horizon),
        )

    def _sim(self, g: dict[str, float]) -> _Sim:
        node = self

        class _SimExponentialLR(_Sim):
            has_closed = True

            def get_lr(self) -> float:
                if self._is_initial:
                    return self.g["lr"]
                return self.g["lr"] * node.gamma

            def closed(self) -> float:
                return self.base * node.gamma**self.last_epoch

        return _SimExponentialLR(g)

    def _cf_pows(
        self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None
    ) -> tuple[Any, list[tuple[Any, Any]]]:
        if mode == "restart":
            start = base
        return start, [(self.gamma, k)]

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        return _fold(*self._cf_pows(k, ops, start, base, mode, g), ops)

    def _tick(self, k: Any, ops: Ops) -> Any:
        return ops.where(k == 0, 1.0, self.gamma)

    def _closed_host_ok(self, k: int) -> bool:
        return k <= SAFE_TICKS

    def _closed_exact(self) -> bool:
        return self.gamma in (0.0, 1.0) or abs(self.gamma) == 0.5

    def _step_factors(self, ks: np.ndarray) -> np.ndarray | None:
        return np.full(ks.shape, self.gamma)


class PolynomialLR(TorchSchedule, name="PolynomialLR"):
    """``lr * (1 - min(t, total_iters) / total_iters) ** power`` (``PolynomialLR``).

    >>> from schedules import torch as T
    >>> s = T.PolynomialLR(1.0, total_iters=4, power=2.0)
    >>> [s(t) for t in range(6)]
    [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """

    _fields = ("lr", "total_iters", "power", "horizon")
    _static = frozenset({"horizon"})
    kind = "mult"

    def __init__(
        self, lr: float, total_iters: int = 5, power: float = 1.0, horizon: int | None = None
    ) -> None:
        self._set(
            lr=_lr("PolynomialLR", lr),
            total_iters=check_int("PolynomialLR", "total_iters", total_iters),
            # a negative power makes the lr inf at total_iters (0 ** -p)
            power=check_float("PolynomialLR", "power", power, ge=0),
            horizon=_horizon("PolynomialLR", horizon),
        )

    def _sim(self, g: dict[str, float]) -> _Sim:
        node = self

        class _SimPolynomialLR(_Sim):
            has_closed = True

            def get_lr(self) -> float:
                T = node.total_iters
                if self._is_initial or self.last_epoch > T:
                    return self.g["lr"]
                decay = (
                    (1.0 - self.last_epoch / T) / (1.0 - (self.last_epoch - 1) / T)
                ) ** node.power
                return self.g["lr"] * decay

            def closed(self) -> float:
                T = node.total_iters
                return self.base * (1.0 - min(T, self.last_epoch) / T) ** node.power

        return _SimPolynomialLR(g)

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        T = self.total_iters
        if mode == "restart":
            if ops.host and T == 0:
                raise NoClosedForm
            start = base
        rem = ops.div(ops.maximum(T - ops.minimum(k, 1.0 * T), 0.0), ops.maximum(T, 1))
        return ops.where(T > 0, start * ops.pow(rem, self.power), start)

    def _tick(self, k: Any, ops: Ops) -> Any:
        T = self.total_iters
        if ops.host:
            Ts = max(T, 1)
            r = ops.pow((1.0 - k / Ts) / (1.0 - (k - 1) / Ts), self.power)
        else:  # (1 - k/T) / (1 - (k-1)/T) without the rounding that could go negative at k = T
            r = ops.pow(ops.maximum(ops.div(T - k, T - k + 1.0), 0.0), self.power)
        return ops.where((k == 0) | (k > T) if not ops.host else (k == 0 or k > T), 1.0, r)

    def _closed_host_ok(self, k: int) -> bool:
        return min(k, max(self.total_iters, 0)) <= SAFE_TICKS

    def _step_factors(self, ks: np.ndarray) -> np.ndarray | None:
        T, p = self.total_iters, self.power
        inside = ks <= T
        out = np.ones(ks.shape)
        if not inside.any():
            return out
        k = ks[inside]
        with np.errstate(all="ignore"):
            r = (1.0 - k / T) / (1.0 - (k - 1) / T)
        if p != 1.0:  # x ** 1.0 == x; otherwise C's pow, as Python's ** (not NumPy's SIMD)
            r = np.fromiter(map(math.pow, r.tolist(), itertools.repeat(p)), float, len(r))
        out[inside] = r
        return out

    def _mult_last(self) -> int | None:
        return max(self.total_iters, 0)

    def _tick_budget(self) -> int:
        return TICK_BUDGET if self.power == 1.0 else COS_LOOP_BUDGET

    def _closed_exact(self) -> bool:
        return self.total_iters <= SAFE_TICKS


# -- CosineAnnealingLR / CosineAnnealingWarmRestarts -------------------------------------------


class CosineAnnealingLR(TorchSchedule, name="CosineAnnealingLR"):
    """Cosine annealing to ``eta_min`` over ``T_max`` (``CosineAnnealingLR``), which keeps
    oscillating after ``T_max`` (period ``2 * T_max``), as torch's recursive form does.

    >>> from schedules import torch as T
    >>> s = T.CosineAnnealingLR(1.0, T_max=10)
    >>> s(0), round(s(5), 12), s(10), round(s(15), 12), round(s(20), 12)
    (1.0, 0.5, 0.0, 0.5, 1.0)
    """

    _fields = ("lr", "T_max", "eta_min", "horizon")
    _static = frozenset({"horizon"})
    kind = "cos"

    def __init__(
        self, lr: float, T_max: int, eta_min: float = 0.0, horizon: int | None = None
    ) -> None:
        # torch raises ZeroDivisionError at the first step for T_max=0.
        self._set(
            lr=_lr("CosineAnnealingLR", lr),
            T_max=check_int("CosineAnnealingLR", "T_max", T_max, gt=0),
            eta_min=check_float("CosineAnnealingLR", "eta_min", eta_min, ge=0),
            horizon=_horizon("CosineAnnealingLR", horizon),
        )

    def _sim(self, g: dict[str, float]) -> _Sim:
        node = self

        class _SimCosineAnnealingLR(_Sim):
            has_closed = True

            def get_lr(self) -> float:
                T, eta, k = node.T_max, node.eta_min, self.last_epoch
                if self._is_initial:
                    return self.g["lr"]
                if self._step_count == 1 and k > 0:
                    return eta + (self.base - eta) * (1 + math.cos(k * math.pi / T)) / 2
                if (k - 1 - T) % (2 * T) == 0:
                    return self.g["lr"] + (self.base - eta) * (1 - math.cos(math.pi / T)) / 2
                return (1 + math.cos(math.pi * k / T)) / (1 + math.cos(math.pi * (k - 1) / T)) * (
                    self.g["lr"] - eta
                ) + eta

            def closed(self) -> float:
                T, eta = node.T_max, node.eta_min
                return eta + (self.base - eta) * (1 + math.cos(math.pi * self.last_epoch / T)) / 2

        return _SimCosineAnnealingLR(g)

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        T, eta = self.T_max, self.eta_min
        if mode == "restart":
            start = base
        if not ops.host:
            le = _known_le((eta, start), (eta, base))
            same = _known_le((start, base), (base, start))  # one amplitude: no select
            hi = start if same else ops.where(k <= T, start, base)
            return _cos_mix(eta, hi, k, T, ops, le)
        amp = ops.where(k <= T, start, base) - eta
        return eta + amp * _half_cos1(k, T, ops)

    def _closed_host_ok(self, k: int) -> bool:
        return k <= self.T_max <= SAFE_TICKS

    def _closed_exact(self) -> bool:
        return False

    def _segment(self, v0: float, base: float) -> Callable[[int], float | None] | None:
        return _CosRun(self.T_max, self.eta_min, base, v0).value


#: the most steps of CosineAnnealingLR's recursion one host query runs in a Python loop (with
#: ``eta_min != 0``, where the steps are affine, not a product): ~0.1 us each.
COS_LOOP_BUDGET = 2**22


class _CosRun:
    """``CosineAnnealingLR.get_lr`` (the recursive form) from step 0 (value ``v0``), exact.

    At ``j = T (mod 2 T)`` torch's factor ``1 + cos(pi j / T)`` is exactly 0 (as long as
    ``math.cos`` returns exactly -1.0 there, checked), so the lr is exactly ``eta_min``
    whatever came before: a query replays at most the ``2 T`` steps since the last such
    step. The cosines are ``math.cos`` (C's, as torch) of arguments formed with NumPy's
    correctly rounded ``(pi * j) / T``; with ``eta_min = 0`` each step is one rounded
    multiplication (``np.multiply.accumulate``), otherwise a Python loop of torch's
    ``r * (lr - eta_min) + eta_min``. Runs are memoized (sequential queries are O(1))."""

    def __init__(self, T: int, eta: float, base: float, v0: float) -> None:
        self.T, self.eta, self.v0 = T, eta, v0
        self.c = (base - eta) * (1 - math.cos(math.pi / T)) / 2  # the re-entry step
        # the current run: its first step, the first step of each chunk, the chunks of
        # values and the last step computed
        self.js: int | None = None
        self.starts: list[int] = []
        self.chunks: list[np.ndarray] = []
        self.end = -1

    def value(self, j: int) -> float | None:
        T = self.T
        if j <= T:
            js, vs = 0, self.v0
        else:
            js = T + 2 * T * ((j - T) // (2 * T))
            if 1 + math.cos(math.pi * js / T) != 0:
                return None  # far out: torch's reset is no longer exact
            vs = self.eta
        if self.js != js:  # a new run: from step 0, or from an exact reset to eta_min
            self.js, self.starts, self.chunks, self.end = js, [js], [np.asarray([vs])], js
        if j > self.end:
            budget = COS_LOOP_BUDGET if self.eta else TICK_BUDGET // 4
            if j - self.end > budget:
                return None
            target = min(js + 2 * T, max(j, self.end + 4096))
            more = self._steps(self.end, float(self.chunks[-1][-1]), target)
            self.starts.append(self.end + 1)
            self.chunks.append(more)
            self.end = target
        i = bisect_right(self.starts, j) - 1
        return float(self.chunks[i][j - self.starts[i]])

    def _steps(self, e: int, v: float, target: int) -> np.ndarray:
        """Values at steps ``e + 1 .. target`` given ``v`` at step ``e``."""
        T, eta = self.T, self.eta
        ks = np.arange(e + 1, target + 1, dtype=np.float64)
        cos = np.fromiter(map(math.cos, ((math.pi * ks) / T).tolist()), float, len(ks))
        prev = np.concatenate([[math.cos(math.pi * e / T)], cos[:-1]])
        with np.errstate(all="ignore"):
            ratio = (1 + cos) / (1 + prev)
        reset = (ks - 1 - T) % (2 * T) == 0
        if eta == 0:  # r * (lr - 0) + 0 == r * lr: a product, except at the re-entry step
            out = np.empty(len(ks))
            start, val = 0, v
            for i in [*np.flatnonzero(reset).tolist(), len(ks)]:
                if i > start:
                    buf = np.concatenate([[val], ratio[start:i]])
                    out[start:i] = np.multiply.accumulate(buf)[1:]
                    val = float(out[i - 1])
                if i < len(ks):
                    val = val + self.c
                    out[i] = val
                    start = i + 1
            return out
        vals = []
        c = self.c
        for r, rs in zip(ratio.tolist(), reset.tolist()):
            v = v + c if rs else r * (v - eta) + eta
            vals.append(v)
        return np.asarray(vals)


class CosineAnnealingWarmRestarts(TorchSchedule, name="CosineAnnealingWarmRestarts"):
    """SGDR (``CosineAnnealingWarmRestarts``): cycles of ``T_0 * T_mult ** n`` steps.

    >>> from schedules import torch as T
    >>> s = T.CosineAnnealingWarmRestarts(1.0, T_0=2, T_mult=2)
    >>> [round(s(t), 12) for t in range(7)]
    [1.0, 0.5, 1.0, 0.853553390593, 0.5, 0.146446609407, 1.0]
    """

    _fields = ("lr", "T_0", "T_mult", "eta_min", "horizon")
    _static = frozenset({"horizon"})
    kind = "abs"

    def __init__(
        self, lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0, horizon: int | None = None
    ) -> None:
        if isinstance(T_0, bool) or not isinstance(T_0, int) or not 0 < T_0 < 2**31:
            raise fail(
                "CosineAnnealingWarmRestarts",
                "T_0",
                T_0,
                "must be a positive integer (torch: 'Expected positive integer T_0')",
            )
        if isinstance(T_mult, bool) or not isinstance(T_mult, int) or not 1 <= T_mult < 2**20:
            raise fail(
                "CosineAnnealingWarmRestarts",
                "T_mult",
                T_mult,
                "must be an integer >= 1 (torch: 'Expected integer T_mult >= 1')",
            )
        self._set(
            lr=_lr("CosineAnnealingWarmRestarts", lr),
            T_0=T_0,
            T_mult=T_mult,
            eta_min=check_float("CosineAnnealingWarmRestarts", "eta_min", eta_min, ge=0),
            horizon=_horizon("CosineAnnealingWarmRestarts", horizon),
        )

    def _sim(self, g: dict[str, float]) -> _Sim:
        node = self

        class _SimCAWR(_Sim):
            def __init__(self, g: dict[str, float]) -> None:
                self.T_i = node.T_0
                self.T_cur = -1
                super().__init__(g)

            def get_lr(self) -> float:
                eta = node.eta_min
                return eta + (self.base - eta) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2

            def step(self) -> None:  # torch's override, epoch=None
                if self.last_epoch < 0:
                    self.T_i = node.T_0
                    self.T_cur = 0
                    epoch = 0
                else:
                    epoch = self.last_epoch + 1
                    self.T_cur = self.T_cur + 1
                    if self.T_cur >= self.T_i:
                        self.T_cur = self.T_cur % self.T_i
                        self.T_i = self.T_i * node.T_mult
                self.last_epoch = epoch
                self.g["lr"] = self.get_lr()

        return _SimCAWR(g)

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        _, S, Ti = cycle_of(k, self.T_0, self.T_mult, ops)
        eta = self.eta_min
        if not ops.host:
            return _cos_mix(eta, base, k - S, Ti, ops, _known_le((eta, base)))
        return eta + (base - eta) * _half_cos1(k - S, Ti, ops)

    def _closed_host_ok(self, k: int) -> bool:
        return True

    def _closed_exact(self) -> bool:
        return True


# -- CyclicLR ----------------------------------------------------------------------------------

_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


class CyclicLR(TorchSchedule, name="CyclicLR"):
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

    _fields = (
        "lr",
        "base_lr",
        "max_lr",
        "step_size_up",
        "step_size_down",
        "mode",
        "gamma",
        "scale_fn",
        "scale_mode",
        "cycle_momentum",
        "base_momentum",
        "max_momentum",
        "horizon",
    )
    # the step sizes fix the period (integers, used in Python arithmetic): static, so the
    # schedule also works as a traced argument
    _static = frozenset({"mode", "scale_fn", "scale_mode", "cycle_momentum", "horizon",
                         "step_size_up", "step_size_down"})
    _per_group = ("base_lr", "max_lr", "base_momentum", "max_momentum")
    kind = "abs"

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
        w = "CyclicLR"
        if scale_fn is None and (not isinstance(mode, str) or mode not in _CYCLIC_MODES):
            raise fail(
                w,
                "mode",
                mode,
                f"must be one of {', '.join(map(repr, _CYCLIC_MODES))} "
                "when scale_fn is None (torch: 'mode is invalid and scale_fn is None')",
            )
        _check_str(w, "mode", mode)
        if scale_fn is not None and not callable(scale_fn):
            raise fail(w, "scale_fn", scale_fn, "must be a callable or a Schedule")
        up = check_float(w, "step_size_up", step_size_up)
        down = up if step_size_down is None else check_float(w, "step_size_down", step_size_down)
        if not 0 < up + down <= FLOAT32_MAX:
            raise fail(
                w,
                "step_size_up + step_size_down",
                up + down,
                f"must be > 0 (torch divides by it) and at most {FLOAT32_MAX!r} (float32)",
            )
        self._set(
            lr=_lr(w, lr),
            base_lr=check_float(w, "base_lr", base_lr, ge=0),
            max_lr=check_float(w, "max_lr", max_lr, ge=0),
            step_size_up=step_size_up,
            step_size_down=step_size_down,
            mode=mode,
            gamma=_gamma(w, gamma),
            scale_fn=scale_fn,
            scale_mode=check_choice(w, "scale_mode", scale_mode, ("cycle", "iterations")),
            cycle_momentum=_check_bool(w, "cycle_momentum", cycle_momentum),
            base_momentum=check_float(w, "base_momentum", base_momentum),
            max_momentum=check_float(w, "max_momentum", max_momentum),
            horizon=_horizon(w, horizon),
        )
        self._check_constructs()

    def _host_capable(self) -> bool:
        return True

    # torch: step_size_up/down become floats; total_size and step_ratio as in __init__
    def _sizes(self) -> tuple[float, float]:
        up = float(self.step_size_up)
        down = float(self.step_size_down) if self.step_size_down is not None else up
        total = up + down
        return total, up / total

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
        total, ratio = self._sizes()
        if ops.host:
            cycle = ops.floor(1 + k / total)
            x = 1.0 + k / total - cycle
        else:  # the same, without cancellation: x = (k mod total) / total
            q = _fdiv(k, total, ops)
            cycle = q + 1
            x = (k - q * total) / total
        if ops.host:  # torch's if/else: the branch not taken may divide by 0
            sf = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        else:  # x / ratio = m / up, (x - 1) / (ratio - 1) = (total - m) / down (m exact)
            m = k - q * total
            up = float(self.step_size_up)
            sf = ops.where(x <= ratio, ops.div(m, up), ops.div(total - m, total - up))
            sf = ops.clip(sf, 0.0, 1.0)  # in [0, 1]; float32 far out (k > 2**24) may stray
        scale = self._scale(cycle if self._scale_mode() == "cycle" else k, ops)
        return sf, scale

    def _sim(self, g: dict[str, float]) -> _Sim:
        node = self
        g["lr"] = node.base_lr

        class _SimCyclicLR(_Sim):
            def get_lr(self) -> float:
                sf, scale = node._phase(float(self.last_epoch), PY)
                return self.base + (node.max_lr - self.base) * sf * scale

        sim = _SimCyclicLR(g)
        sim.construct_base = sim.base  # type: ignore[attr-defined]
        sim.base = node.base_lr  # torch sets self.base_lrs after the initial step
        return sim

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        sf, scale = self._phase(k, ops)
        v = self.base_lr + (self.max_lr - self.base_lr) * sf * scale
        if mode == "construct":  # the initial step still used base_lrs = initial_lr
            v = ops.where(k == 0, base, v)
        return v

    def _closed(self, k: Any, ops: Ops) -> Any:
        return self._cf(k, ops, self.base_lr, self.base_lr, "construct")

    def _closed_host_ok(self, k: int) -> bool:
        return True

    def _closed_exact(self) -> bool:
        return True

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
        groups = _momentum_groups("CyclicLR.momentum", base_momentum, max_momentum)
        if groups is not None:
            return [
                CyclicMomentum(
                    b, m, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode
                )
                for b, m in groups
            ]
        return CyclicMomentum(
            base_momentum,
            max_momentum,
            step_size_up,
            step_size_down,
            mode,
            gamma,
            scale_fn,
            scale_mode,
        )


def _momentum_groups(where: str, base: Any, top: Any) -> list[tuple[Any, Any]] | None:
    """Per-group ``(base_momentum, max_momentum)`` pairs when either is a list, else None."""
    if not (_is_list(base) or _is_list(top)):
        return None
    lists = [(n, v) for n, v in (("base_momentum", base), ("max_momentum", top)) if _is_list(v)]
    n = len(lists[0][1])
    for name, v in lists:
        if len(v) < 1 or len(v) != n:
            raise fail(
                where,
                name,
                v,
                f"must have one entry per param group ({n}, >= 1) when given as a list",
            )
    return [
        (base[i] if _is_list(base) else base, top[i] if _is_list(top) else top) for i in range(n)
    ]


def _call_float(fn: Any, x: Any, ops: Ops) -> Any:
    if isinstance(fn, Schedule):
        return fn(float(x)) if ops.host else fn._eval(x, ops)
    return fn(x)


class CyclicMomentum(Schedule, name="CyclicMomentum"):
    """The momentum schedule of :class:`CyclicLR` (see :meth:`CyclicLR.momentum`).

    >>> from schedules import torch as T
    >>> m = T.CyclicMomentum(0.8, 0.9, step_size_up=2)
    >>> m(0), round(m(2), 12)
    (0.9, 0.8)
    """

    _fields = (
        "base_momentum",
        "max_momentum",
        "step_size_up",
        "step_size_down",
        "mode",
        "gamma",
        "scale_fn",
        "scale_mode",
    )
    _static = frozenset({"mode", "scale_fn", "scale_mode", "step_size_up", "step_size_down"})

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
        helper = CyclicLR(
            0.0, 0.0, 1.0, step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode
        )
        self._set(
            base_momentum=check_float("CyclicMomentum", "base_momentum", base_momentum),
            max_momentum=check_float("CyclicMomentum", "max_momentum", max_momentum),
            step_size_up=step_size_up,
            step_size_down=step_size_down,
            mode=mode,
            gamma=helper.gamma,
            scale_fn=scale_fn,
            scale_mode=scale_mode,
        )

    def _host_capable(self) -> bool:
        return True

    def _eval(self, t: Any, ops: Ops) -> Any:
        k = ops.floor(ops.maximum(t, 0.0))
        helper = object.__new__(CyclicLR)
        for f in CyclicLR._fields:
            object.__setattr__(helper, f, None)
        object.__setattr__(helper, "step_size_up", self.step_size_up)
        object.__setattr__(helper, "step_size_down", self.step_size_down)
        object.__setattr__(helper, "mode", self.mode)
        object.__setattr__(helper, "gamma", self.gamma)
        object.__setattr__(helper, "scale_fn", self.scale_fn)
        object.__setattr__(helper, "scale_mode", self.scale_mode)
        try:
            sf, scale = helper._phase(k, ops)
        except (ZeroDivisionError, OverflowError) as e:
            raise _host_error("CyclicMomentum", t, ops, e) from None
        return self.max_momentum - (self.max_momentum - self.base_momentum) * sf * scale


# -- OneCycleLR --------------------------------------------------------------------------------


class OneCycleLR(TorchSchedule, name="OneCycleLR"):
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

    _fields = (
        "lr",
        "max_lr",
        "total_steps",
        "epochs",
        "steps_per_epoch",
        "pct_start",
        "anneal_strategy",
        "cycle_momentum",
        "base_momentum",
        "max_momentum",
        "div_factor",
        "final_div_factor",
        "three_phase",
        "horizon",
    )
    # pct_start fixes the phase ends (torch computes them in Python): static like total_steps
    _static = frozenset(
        {
            "total_steps",
            "epochs",
            "steps_per_epoch",
            "pct_start",
            "anneal_strategy",
            "cycle_momentum",
            "three_phase",
            "horizon",
        }
    )
    _per_group = ("max_lr", "base_momentum", "max_momentum")
    kind = "abs"

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
        w = "OneCycleLR"
        total = _one_cycle_total(total_steps, epochs, steps_per_epoch)
        pct_start = _pct_start(w, pct_start)
        check_choice(w, "anneal_strategy", anneal_strategy, ("cos", "linear"))
        self._set(
            lr=_lr(w, lr),
            max_lr=check_float(w, "max_lr", max_lr, ge=0),
            total_steps=total,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            pct_start=pct_start,
            anneal_strategy=anneal_strategy,
            cycle_momentum=_check_bool(w, "cycle_momentum", cycle_momentum),
            base_momentum=check_float(w, "base_momentum", base_momentum),
            max_momentum=check_float(w, "max_momentum", max_momentum),
            div_factor=check_float(w, "div_factor", div_factor, gt=0),
            final_div_factor=check_float(w, "final_div_factor", final_div_factor, gt=0),
            three_phase=_check_bool(w, "three_phase", three_phase),
            horizon=_horizon(w, horizon),
        )
        for name, v in self._group().items():
            if "lr" in name and not v <= FLOAT32_MAX:
                raise fail(
                    w,
                    "div_factor" if name == "initial_lr" else "final_div_factor",
                    self.div_factor if name == "initial_lr" else self.final_div_factor,
                    f"makes {name} = {v!r} exceed float32's range ({FLOAT32_MAX!r})",
                )
        self._check_constructs()

    def _phases(self) -> list[tuple[float, str, str, str, str]]:
        """torch's ``_schedule_phases``: (end_step, start_lr, end_lr, start_mom, end_mom)."""
        n, p = self.total_steps, self.pct_start
        if self.three_phase:
            return [
                (float(p * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (float(2 * p * n) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                (n - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        return [
            (float(p * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
            (n - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
        ]

    def _group(self) -> dict[str, Any]:
        initial = self.max_lr / self.div_factor
        return {
            "initial_lr": initial,
            "max_lr": self.max_lr,
            "min_lr": initial / self.final_div_factor,
            "max_momentum": self.max_momentum,
            "base_momentum": self.base_momentum,
        }

    def _anneal(self, a: Any, b: Any, pct: Any, rem: Any, ops: Ops) -> Any:
        if self.anneal_strategy == "cos":
            if ops.host:
                return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
            # (cos(pi pct) + 1) / 2 = sin(pi rem / 2)**2 = 1 - sin(pi pct / 2)**2: start from
            # the nearer end, so the float32 value has no cancellation at either end
            near_b = b + (a - b) * ops.sin(ops.pi * rem / 2.0) ** 2
            near_a = a + (b - a) * ops.sin(ops.pi * pct / 2.0) ** 2
            return ops.where(pct <= 0.5, near_a, near_b)
        if not ops.host:
            return ops.where(pct <= 0.5, (b - a) * pct + a, (a - b) * rem + b)
        return (b - a) * pct + a

    def _value(self, k: Any, ops: Ops, grp: dict[str, Any], lr_keys: bool = True) -> Any:
        phases = self._phases()
        if ops.host:
            start = 0.0
            for i, (end, s_lr, e_lr, s_m, e_m) in enumerate(phases):
                if k <= end or i == len(phases) - 1:
                    pct = (k - start) / (end - start)
                    a, b = (grp[s_lr], grp[e_lr]) if lr_keys else (grp[s_m], grp[e_m])
                    return self._anneal(a, b, pct, None, ops)
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
            s2 = ops.sin(ops.pi * ops.where(first, pct, rem) / 2.0) ** 2
            out = ops.where(first, a + (b - a) * s2, b + (a - b) * s2)
        else:
            out = ops.where(first, (b - a) * pct + a, (a - b) * rem + b)
        return ops.where(k > self.total_steps, math.nan, out)

    def _sim(self, g: dict[str, float]) -> _Sim:
        node = self
        grp = self._group()
        g["initial_lr"] = grp["initial_lr"]
        g["max_lr"] = grp["max_lr"]
        g["min_lr"] = grp["min_lr"]

        class _SimOneCycleLR(_Sim):
            def get_lr(self) -> float:
                if self.last_epoch > node.total_steps:
                    raise ValueError(
                        f"Tried to step {self.last_epoch} times. The specified "
                        f"number of total steps is {node.total_steps}"
                    )
                return node._value(float(self.last_epoch), PY, self.g)

        return _SimOneCycleLR(g)

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        return self._value(k, ops, g if g is not None else self._group())

    def _closed_host_ok(self, k: int) -> bool:
        return k <= self.total_steps

    def _closed_exact(self) -> bool:
        return True

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
        groups = _momentum_groups("OneCycleLR.momentum", base_momentum, max_momentum)
        if groups is not None:
            return [
                OneCycleMomentum(
                    total_steps,
                    epochs,
                    steps_per_epoch,
                    pct_start,
                    anneal_strategy,
                    b,
                    m,
                    three_phase,
                )
                for b, m in groups
            ]
        return OneCycleMomentum(
            total_steps,
            epochs,
            steps_per_epoch,
            pct_start,
            anneal_strategy,
            base_momentum,
            max_momentum,
            three_phase,
        )


def _pct_start(where: str, pct_start: Any) -> float:
    # torch: ``pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float)``; NaN
    # (which passes torch's check and makes every lr NaN) is refused too.
    if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
        raise fail(
            where,
            "pct_start",
            pct_start,
            "must be a float between 0 and 1 (torch: 'Expected float between 0 and 1 pct_start')",
        )
    return pct_start


def _one_cycle_total(total_steps: Any, epochs: Any, steps_per_epoch: Any) -> int:
    w = "OneCycleLR"
    if total_steps is not None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
            raise fail(w, "total_steps", total_steps, "must be a positive integer")
        if total_steps >= 2**31:
            raise fail(w, "total_steps", total_steps, "must be below 2**31 (int32)")
        return total_steps
    if epochs is not None and steps_per_epoch is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
            raise fail(w, "epochs", epochs, "must be a positive integer")
        if (
            isinstance(steps_per_epoch, bool)
            or not isinstance(steps_per_epoch, int)
            or steps_per_epoch <= 0
        ):
            raise fail(w, "steps_per_epoch", steps_per_epoch, "must be a positive integer")
        if epochs * steps_per_epoch >= 2**31:
            raise fail(w, "epochs * steps_per_epoch", epochs * steps_per_epoch,
                       "must be below 2**31 (int32)")
        return epochs * steps_per_epoch
    raise fail(
        w,
        "total_steps",
        total_steps,
        "must be given, or both epochs and steps_per_epoch (torch raises ValueError)",
    )


class OneCycleMomentum(Schedule, name="OneCycleMomentum"):
    """The momentum schedule of :class:`OneCycleLR` (see :meth:`OneCycleLR.momentum`).

    >>> from schedules import torch as T
    >>> T.OneCycleMomentum(total_steps=100)(0)
    0.95
    """

    _fields = (
        "total_steps",
        "epochs",
        "steps_per_epoch",
        "pct_start",
        "anneal_strategy",
        "base_momentum",
        "max_momentum",
        "three_phase",
    )
    _static = frozenset(
        {"total_steps", "epochs", "steps_per_epoch", "pct_start", "anneal_strategy", "three_phase"}
    )

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
        OneCycleLR(
            1.0,
            1.0,
            total_steps,
            epochs,
            steps_per_epoch,
            pct_start,
            anneal_strategy,
            three_phase=three_phase,
        )
        self._set(
            total_steps=total_steps,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            pct_start=pct_start,
            anneal_strategy=anneal_strategy,
            base_momentum=check_float("OneCycleMomentum", "base_momentum", base_momentum),
            max_momentum=check_float("OneCycleMomentum", "max_momentum", max_momentum),
            three_phase=bool(three_phase),
        )

    def _eval(self, t: Any, ops: Ops) -> Any:
        helper = object.__new__(OneCycleLR)
        object.__setattr__(
            helper,
            "total_steps",
            _one_cycle_total(self.total_steps, self.epochs, self.steps_per_epoch),
        )
        object.__setattr__(helper, "pct_start", self.pct_start)
        object.__setattr__(helper, "three_phase", self.three_phase)
        object.__setattr__(helper, "anneal_strategy", self.anneal_strategy)
        grp = {"max_momentum": self.max_momentum, "base_momentum": self.base_momentum}
        k = ops.floor(ops.maximum(t, 0.0))
        if ops.host and k > helper.total_steps:
            raise ValueError(
                f"OneCycleMomentum: step {int(k)} is beyond total_steps="
                f"{helper.total_steps} (torch raises ValueError)"
            )
        try:
            return helper._value(k, ops, grp, lr_keys=False)
        except (ZeroDivisionError, OverflowError) as e:
            raise _host_error("OneCycleMomentum", t, ops, e) from None


# -- SequentialLR / ChainedScheduler -----------------------------------------------------------


def _children(where: str, schedulers: Any, lr: Any) -> tuple[TorchSchedule, ...]:
    _check_schedulers_list(where, schedulers)
    out = []
    for i, s in enumerate(schedulers):
        if isinstance(s, ReduceLROnPlateau):
            raise fail(where, f"schedulers[{i}]", s, "cannot be ReduceLROnPlateau (as in torch)")
        if not isinstance(s, TorchSchedule):
            raise fail(
                where,
                f"schedulers[{i}]",
                s,
                "must be a schedules.torch scheduler built with the same lr",
            )
        if lr is not None and not (s.lr == lr):
            raise fail(
                where,
                f"schedulers[{i}].lr",
                s.lr,
                f"must equal the composite's lr={lr!r} (one optimizer)",
            )
        out.append(s)
    return tuple(out)


class SequentialLR(TorchSchedule, name="SequentialLR"):
    """Run ``schedulers[i]`` from ``milestones[i - 1]`` on (torch's ``SequentialLR``).

    As torch: the lr is reset to the initial lr at construction and the first
    scheduler re-runs its initial step; at a milestone the next scheduler
    restarts through its closed form (``_get_closed_form_lr``) at its step 0
    (schedulers without one -- ``MultiplicativeLR`` -- carry on from the
    current lr); the previous one is cut off.

    >>> from schedules import torch as T
    >>> s = T.SequentialLR(1.0, [T.LinearLR(1.0, 0.5, total_iters=2),
    ...                          T.ExponentialLR(1.0, gamma=0.5)], milestones=[3])
    >>> [s(t) for t in range(6)]
    [0.5, 0.75, 1.0, 1.0, 0.5, 0.25]
    """

    _fields = ("lr", "schedulers", "milestones", "horizon")
    _static = frozenset({"milestones", "horizon"})
    kind = "none"

    def __init__(
        self,
        lr: float,
        schedulers: Sequence[TorchSchedule],
        milestones: Sequence[int],
        horizon: int | None = None,
    ) -> None:
        w = "SequentialLR"
        lr = _lr(w, lr)
        ch = _children(w, schedulers, lr)
        if not _is_list(milestones):
            raise fail(w, "milestones", milestones, "must be a list of ints")
        ms = tuple(check_int(w, f"milestones[{i}]", m) for i, m in enumerate(milestones))
        if len(ms) != len(ch) - 1:
            raise fail(
                w,
                "milestones",
                milestones,
                f"must have len(schedulers) - 1 = {len(ch) - 1} entries (torch raises)",
            )
        self._set(lr=lr, schedulers=ch, milestones=ms, horizon=_horizon(w, horizon))
        self._check_constructs()

    @classmethod
    def _group_args(cls, a: dict[str, Any], i: int, n: int) -> dict[str, Any]:
        out = super()._group_args(a, i, n)
        _check_schedulers_list(cls.__name__, a["schedulers"])
        out["schedulers"] = [_pick(s, i, n, cls.__name__, j) for j, s in enumerate(a["schedulers"])]
        return out

    def _sim(self, g: dict[str, float]) -> _Sim:
        sims = [c._sim(g) for c in self.schedulers]
        return _SimSequentialLR(g, sims, list(self.milestones))

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        if mode != "construct":
            raise NoClosedForm
        ms = self.milestones
        if any(b > a for a, b in zip(ms[1:], ms)) or any(
            c.kind in ("none",) for c in self.schedulers
        ):
            raise NoClosedForm
        meta = self._meta()
        i0 = bisect_right(list(ms), 0)
        out: Any = None
        for i in range(i0, len(self.schedulers)):
            c, sim = self.schedulers[i], meta.sims[i]
            if i == i0:
                v = c._cf(k, ops, meta.g["initial_lr"], sim.base, "fresh", meta.g)
                out = v
            else:
                v = c._cf(k - ms[i - 1], ops, sim.base, sim.base, "restart", meta.g)
                if ops.host:
                    out = v if k >= ms[i - 1] else out
                else:
                    out = ops.where(k >= ms[i - 1], v, out)
        return out

    def _closed(self, k: Any, ops: Ops) -> Any:
        return self._cf(k, ops, self.lr, self.lr, "construct")

    def _concrete(self) -> bool:
        return all(c._host_ok() for c in self.schedulers) and self._host_ok()

    def _closed_exact(self) -> bool:
        return all(c._closed_exact() for c in self.schedulers)

    def _fast_host(self, k: int) -> float | None:
        """The child running at ``k``, from where it (re)started: at step 0 (the replay's
        exact value) or at its milestone (torch's ``_update_lr(0)``: its closed form at 0,
        whatever came before), then its own steps (see :meth:`TorchSchedule._segment`)."""
        ms = self.milestones
        if any(b < a for a, b in itertools.pairwise(ms)):
            return None
        i = bisect_right(list(ms), k)
        cache = self.__dict__.get("_segs")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_segs", cache)
        if i not in cache:
            cache[i] = self._make_segment(i)
        seg = cache[i]
        if seg is None:
            return None
        v = seg(k if i == bisect_right(list(ms), 0) else k - ms[i - 1])
        if v is None:  # beyond one query's budget: the closed form (docs/torch-compat.md)
            try:
                return float(self._closed(float(k), PY))
            except NoClosedForm:
                return None
        return v

    def _make_segment(self, i: int) -> Callable[[int], float | None] | None:
        child = self.schedulers[i]
        if child.kind not in ("mult", "cos"):
            return None
        sim = self._meta().sims[i]
        if i == bisect_right(list(self.milestones), 0):
            v0 = self._replay(0)
        else:
            if not getattr(sim, "has_closed", False):
                return None
            saved = sim.last_epoch
            try:
                sim.last_epoch = 0
                v0 = float(sim.closed())
            except (ArithmeticError, ValueError):
                return None  # torch raises at the milestone: the replay reports it
            finally:
                sim.last_epoch = saved
        return child._segment(v0, sim.base)


def _pick(s: Any, i: int, n: int, where: str, j: int) -> Any:
    """Group ``i`` of ``schedulers[j]``: with a list of lrs, each child is a list of
    ``n`` schedulers (one per group, as built from the same list of lrs)."""
    if _is_list(s):
        if len(s) != n:
            raise fail(where, f"schedulers[{j}]", s, f"must have {n} entries (one per group)")
        return s[i]
    raise fail(
        where,
        f"schedulers[{j}]",
        s,
        "must be a list of schedulers, one per group (the composite has a list of lrs)",
    )


class _SimSequentialLR(_Sim):
    """Mirror of ``SequentialLR.__init__``/``recursive_undo``/``step``."""

    def __init__(self, g: dict[str, float], sims: list[_Sim], milestones: list[int]) -> None:
        self._schedulers = sims
        self._milestones = milestones
        self.last_epoch = 0
        self.g = g
        self._is_initial = False
        g["lr"] = g["initial_lr"]
        self.recursive_undo()
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()

    def recursive_undo(self, sched: Any = None) -> None:
        s = self if sched is None else sched
        if hasattr(s, "_schedulers"):
            for c in s._schedulers:
                self.recursive_undo(c)
        elif hasattr(s, "last_epoch"):
            s.last_epoch -= 1

    def step(self) -> None:
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        sch = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            sch._update_lr(0)
        else:
            sch.step()


class _SimChainedScheduler(_Sim):
    """Mirror of ``ChainedScheduler`` (it never calls ``LRScheduler.__init__``)."""

    def __init__(self, g: dict[str, float], sims: list[_Sim]) -> None:
        self._schedulers = sims
        self.g = g
        self._is_initial = False

    def step(self) -> None:
        for s in self._schedulers:
            s.step()


class ChainedScheduler(TorchSchedule, name="ChainedScheduler"):
    """Step every scheduler in order, each over the running lr (``ChainedScheduler``).

    Not a product of closed forms: order matters, and a scheduler that sets the
    lr absolutely (``LambdaLR``, ``CyclicLR``, ``OneCycleLR``,
    ``CosineAnnealingWarmRestarts``) overrides the ones before it.

    >>> from schedules import torch as T
    >>> s = T.ChainedScheduler([T.ConstantLR(1.0, factor=0.5, total_iters=2),
    ...                         T.ExponentialLR(1.0, gamma=0.5)])
    >>> [s(t) for t in range(4)]
    [0.5, 0.25, 0.25, 0.125]
    """

    _fields = ("schedulers", "lr", "horizon")
    _static = frozenset({"horizon"})
    kind = "none"

    def __init__(
        self,
        schedulers: Sequence[TorchSchedule],
        lr: float | None = None,
        horizon: int | None = None,
    ) -> None:
        w = "ChainedScheduler"
        ch = _children(w, schedulers, None)
        lr = ch[0].lr if lr is None else _lr(w, lr)  # torch: the children's optimizer
        self._set(schedulers=_children(w, schedulers, lr), lr=lr, horizon=_horizon(w, horizon))
        self._check_constructs()

    @classmethod
    def _n_groups(cls, a: dict[str, Any]) -> int | None:
        if _is_list(a.get("lr")):
            _check_lr_list(cls.__name__, a["lr"])
            return len(a["lr"])
        ss = a.get("schedulers")
        if _is_list(ss) and ss and _is_list(ss[0]):
            if len(ss[0]) < 1:
                raise fail(
                    cls.__name__,
                    "schedulers[0]",
                    ss[0],
                    "must not be empty (one scheduler per param group)",
                )
            return len(ss[0])
        return None

    @classmethod
    def _group_args(cls, a: dict[str, Any], i: int, n: int) -> dict[str, Any]:
        out = dict(a)
        if _is_list(a.get("lr")):
            out["lr"] = a["lr"][i]
        _check_schedulers_list(cls.__name__, a["schedulers"])
        out["schedulers"] = [_pick(s, i, n, cls.__name__, j) for j, s in enumerate(a["schedulers"])]
        return out

    def _sim(self, g: dict[str, float]) -> _Sim:
        sims = [c._sim(g) for c in self.schedulers]
        return _SimChainedScheduler(g, sims)

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: str, g: Any = None) -> Any:
        if mode != "construct":
            raise NoClosedForm
        kinds = [c.kind for c in self.schedulers]
        last_abs = max((i for i, kd in enumerate(kinds) if kd == "abs"), default=None)
        tail = kinds[(last_abs + 1) if last_abs is not None else 0 :]
        if any(kd != "mult" for kd in tail):
            raise NoClosedForm
        meta = self._meta()
        if last_abs is None:
            out = self.lr
            if not ops.host:  # every power in ONE exponential (accurate in float32)
                pairs: list[tuple[Any, Any]] = []
                for c, sim in zip(self.schedulers, meta.sims):
                    coef, ps = c._cf_pows(k, ops, 1.0, sim.base, "construct", meta.g)
                    out = out * coef
                    pairs += ps
                return _fold(out, pairs, ops)
            for c, sim in zip(self.schedulers, meta.sims):
                out = out * c._cf(k, ops, 1.0, sim.base, "construct", meta.g)
            return out
        c = self.schedulers[last_abs]
        sim = meta.sims[last_abs]
        out = c._cf(k, ops, self.lr, getattr(sim, "construct_base", sim.base), "construct", meta.g)
        for c in self.schedulers[last_abs + 1 :]:
            out = out * c._tick(k, ops)
        return out

    def _closed(self, k: Any, ops: Ops) -> Any:
        return self._cf(k, ops, self.lr, self.lr, "construct")

    def _concrete(self) -> bool:
        return all(c._host_ok() for c in self.schedulers) and self._host_ok()

    def _closed_exact(self) -> bool:
        return all(c._closed_exact() for c in self.schedulers)

    def _fast_host(self, k: int) -> float | None:
        """Multiplicative children only: each step multiplies the running lr by every
        child's factor in turn, a :class:`Chain` with one column per child."""
        ch = self.__dict__.get("_chain", False)
        if ch is False:
            ch = self._make_chain()
            object.__setattr__(self, "_chain", ch)
        if ch is None:
            return None
        try:
            return ch.value(k)
        except ValueError:  # beyond one query's budget
            try:
                return float(self._closed(float(k), PY))
            except NoClosedForm:
                return None

    def _make_chain(self) -> Chain | None:
        kids = self.schedulers
        if not all(c.kind == "mult" for c in kids):
            return None
        if any(c._step_factors(np.ones(1)) is None for c in kids):
            return None

        def factors(a: int, b: int) -> np.ndarray:
            ks = np.arange(a, b, dtype=np.float64)
            return np.stack([np.asarray(c._step_factors(ks), np.float64) for c in kids], axis=1)

        lasts = [c._mult_last() for c in kids]
        endless = [c._mult_period() for c, la in zip(kids, lasts) if la is None]
        last = None if endless else max(lasts, default=0)
        steady = max([la for la in lasts if la is not None], default=0)
        period = math.lcm(*endless) if endless and None not in endless else None
        return Chain(self._replay(0), factors, last=last, steady=steady, period=period)


# ---------------------------------------------------------------------------------------------
# ReduceLROnPlateau: an optax GradientTransformation
# ---------------------------------------------------------------------------------------------


class PlateauState(NamedTuple):
    """State of :func:`ReduceLROnPlateau`: torch's ``last_epoch``, the current
    ``lr``, ``best``, ``num_bad_epochs`` and ``cooldown_counter``."""

    last_epoch: Any
    lr: Any
    best: Any
    num_bad_epochs: Any
    cooldown_counter: Any


class ReduceLROnPlateau:
    """torch's ``ReduceLROnPlateau`` as an optax ``GradientTransformationExtraArgs``.

    ``update(updates, state, params=None, *, value=metric)`` performs torch's
    ``scheduler.step(metric)`` and multiplies the updates by ``lr_now / lr`` (so
    put it after an optimizer built with ``learning_rate=lr``); ``state.lr`` is
    torch's ``param_group["lr"]``. Semantics (mode, factor, patience, threshold,
    threshold_mode, cooldown, min_lr, eps) follow torch exactly.

    >>> import jax.numpy as jnp, optax
    >>> from schedules import torch as T
    >>> tx = T.ReduceLROnPlateau(1.0, patience=0, factor=0.5)
    >>> st = tx.init(jnp.zeros(1))
    >>> for loss in [1.0, 1.0, 1.0]:
    ...     _, st = tx.update(jnp.ones(1), st, value=loss)
    >>> float(st.lr)
    0.25
    """

    def __new__(
        cls,
        lr: float,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | list[float] = 0,
        eps: float = 1e-8,
    ) -> Any:
        import optax

        w = "ReduceLROnPlateau"
        if _is_list(lr):
            _check_lr_list(w, lr)
            mins = min_lr if _is_list(min_lr) else [min_lr] * len(lr)
            if len(mins) != len(lr):  # type: ignore[arg-type]
                raise fail(
                    w,
                    "min_lr",
                    min_lr,
                    f"must have {len(lr)} entries, one per lr "
                    f"(torch: 'expected {len(lr)} min_lrs')",
                )
            return [
                cls(x, mode, factor, patience, threshold, threshold_mode, cooldown, m, eps)
                for x, m in zip(lr, mins)
            ]  # type: ignore[arg-type]
        if _is_list(min_lr):  # one param group: torch takes a list of one min_lr
            if len(min_lr) != 1:
                raise fail(
                    w,
                    "min_lr",
                    min_lr,
                    f"must have 1 entry, one per lr "
                    f"(torch: 'expected 1 min_lrs, got {len(min_lr)}')",
                )
            min_lr = min_lr[0]
        factor = check_float(w, "factor", factor)
        if factor >= 1.0:
            raise fail(w, "factor", factor, "must be < 1.0 (torch: 'Factor should be < 1.0.')")
        check_choice(w, "mode", mode, ("min", "max"))
        check_choice(w, "threshold_mode", threshold_mode, ("rel", "abs"))
        patience = check_int(w, "patience", patience)
        threshold = check_float(w, "threshold", threshold)
        cooldown = check_int(w, "cooldown", cooldown)
        eps = check_float(w, "eps", eps)
        lr0 = check_float(w, "lr", lr, ge=0)
        floor = check_float(w, "min_lr", min_lr, ge=0)

        def init(params: Any) -> PlateauState:
            del params
            f = jnp.result_type(float)
            return PlateauState(
                jnp.zeros((), jnp.int32),
                jnp.asarray(lr0, f),
                jnp.asarray(math.inf if mode == "min" else -math.inf, f),
                jnp.zeros((), jnp.int32),
                jnp.zeros((), jnp.int32),
            )

        def is_better(a: Any, best: Any) -> Any:
            if mode == "min" and threshold_mode == "rel":
                return a < best * (1.0 - threshold)
            if mode == "min":
                return a < best - threshold
            if threshold_mode == "rel":
                return a > best * (threshold + 1.0)
            return a > best + threshold

        def update(
            updates: Any, state: PlateauState, params: Any = None, *, value: Any, **extra: Any
        ) -> tuple[Any, PlateauState]:
            del params, extra
            cur = jnp.asarray(value, state.best.dtype)
            better = is_better(cur, state.best)
            best = jnp.where(better, cur, state.best)
            bad = jnp.where(better, 0, state.num_bad_epochs + 1)
            in_cd = state.cooldown_counter > 0
            cd = jnp.where(in_cd, state.cooldown_counter - 1, state.cooldown_counter)
            bad = jnp.where(in_cd, 0, bad)
            reduce = bad > patience
            new_lr = jnp.maximum(state.lr * factor, floor)
            lr = jnp.where(reduce & (state.lr - new_lr > eps), new_lr, state.lr)
            cd = jnp.where(reduce, cooldown, cd)
            bad = jnp.where(reduce, 0, bad)
            new = PlateauState(state.last_epoch + 1, lr, best, bad, cd)
            scale = lr / lr0 if lr0 != 0 else jnp.zeros_like(lr)
            updates = jax.tree_util.tree_map(lambda u: (u * scale).astype(u.dtype), updates)
            return updates, new

        return optax.GradientTransformationExtraArgs(init, update)


# ---------------------------------------------------------------------------------------------
# The stateful facade
# ---------------------------------------------------------------------------------------------


def _torch_last_epoch(sd: dict[str, Any]) -> int:
    if "last_epoch" in sd:
        return int(sd["last_epoch"])
    subs = sd.get("_schedulers")
    if subs:  # ChainedScheduler has no last_epoch: every child stepped as often as it
        return _torch_last_epoch(subs[0])
    raise ValueError(
        "load_state_dict: expected a dict with a 'last_epoch' entry "
        "(ours or a torch scheduler's state_dict())"
    )


class Scheduler(_BaseScheduler):
    """:class:`schedules.Scheduler` that also loads any torch scheduler's ``state_dict()``
    (including ``ChainedScheduler``'s, which has no ``last_epoch`` of its own).

    >>> from schedules import torch as T
    >>> sch = T.Scheduler(T.StepLR(0.1, step_size=2, gamma=0.5))
    >>> sch.load_state_dict({"last_epoch": 4, "_step_count": 5})
    >>> sch.get_last_lr()
    [0.025]
    >>> sch.step(); sch.state_dict()
    {'last_epoch': 5}
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict):
            raise ValueError("load_state_dict: expected a dict")
        super().load_state_dict({"last_epoch": _torch_last_epoch(state_dict)})
