"""The base of the ``schedules.torch`` schedules: :class:`TorchSchedule`, the :class:`Kind`
and :class:`Mode` enums its closed forms use, :func:`per_group`, and the argument checks
shared by the schedulers."""

from __future__ import annotations

import enum
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, NamedTuple

import jax.numpy as jnp
import numpy as np

from .._core import Schedule
from .._ops import JNP, JNP_ACCURATE, NP, PY, Ops
from .._validate import FLOAT32_MAX, Checks, check_float, fail
from . import _mirror
from ._recurrence import TICK_BUDGET, Chain, NoClosedForm, Recurrence, fraction_refused

__all__ = ["Kind", "Mode", "TorchSchedule", "per_group"]


class Kind(enum.Enum):
    """How one ``step()`` of a scheduler changes the running lr."""

    MULT = "mult"  #: multiplies it by a factor (``_tick``)
    ABS = "abs"  #: replaces it (``LambdaLR``, ``CyclicLR``, ``OneCycleLR``, SGDR)
    COS = "cos"  #: ``CosineAnnealingLR``'s affine update
    NONE = "none"  #: no closed form (``MultiplicativeLR``, the composites)


class Mode(enum.Enum):
    """Where a closed form starts (see :meth:`TorchSchedule._cf`)."""

    CONSTRUCT = "construct"  #: the initial step at construction
    FRESH = "fresh"  #: ``SequentialLR``'s re-run of the first child's initial step
    RESTART = "restart"  #: ``_update_lr(0)`` at a ``SequentialLR`` milestone


class _Meta(NamedTuple):
    g: dict[str, float]
    sims: list[Any]


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


class TorchTypeError(TypeError, ValueError):
    """An argument torch refuses with ``TypeError`` (a non-callable ``lr_lambda``): both, so
    that code catching torch's type and code catching this project's ``ValueError`` work."""


def _step_text(t: Any) -> str:
    """A step as the user wrote it: ``221``, not ``221.0``."""
    if isinstance(t, float) and t.is_integer():
        return str(int(t))
    return repr(t)


def _host_error(where: str, t: Any, ops: Ops, e: ArithmeticError) -> ArithmeticError | ValueError:
    """On the host, Python's arithmetic errors are torch's own (it runs the same float
    arithmetic): they are reported as ``ValueError``, as the replay does. (A plain
    ``try``/``except`` at each site rather than a context manager: the host query is hot.)"""
    if not ops.host:
        return e
    return ValueError(f"{where}: torch raises {type(e).__name__} at step {_step_text(t)}: {e}")


def _whole_step(where: str, t: Any, ops: Ops) -> tuple[Any, Any]:
    """``(max(t, 0), its floor)``; on the host a fractional step is refused (torch's
    ``step(epoch)`` is deprecated for these schedulers), never floored silently."""
    t0 = ops.maximum(t, 0.0)
    k = ops.floor(t0)
    if ops.host and k != t0:
        raise ValueError(fraction_refused(where, t))
    return t0, k


def _nan_if_fraction(v: Any, t0: Any, k: Any, ops: Ops) -> Any:
    """On arrays: NaN at a fractional step, as the host path raises there."""
    return v if ops.host else ops.where(k == t0, v, math.nan)


def _check_bool(check: Checks, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise check.fail(name, value, f"must be True or False, not {type(value).__name__}")
    return bool(value)


def _check_str(check: Checks, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise check.fail(name, value, f"must be a str, not {type(value).__name__}")
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


def _per_group_hint(where: str, name: str, value: Any) -> ValueError:
    return fail(
        where,
        name,
        value,
        "must be one param group's (a schedule is one group's lr); for several param groups "
        f"use schedules.torch.per_group({where}, {value!r}, ...), one schedule per group",
    )


def _lr(check: Checks, lr: Any) -> Any:
    if _is_list(lr):
        raise _per_group_hint(check.where, "lr", lr)
    # torch's optimizers refuse a negative lr ("Invalid learning rate")
    return check.float("lr", lr, ge=0)


#: the largest ``horizon`` table (float64 values computed on the host: 80 MB).
MAX_HORIZON = 10**7


def _horizon(check: Checks, h: Any) -> int | None:
    if h is None:
        return None
    n = check.int("horizon", h, ge=0)
    if n > MAX_HORIZON:
        raise check.fail("horizon", h, f"must be at most {MAX_HORIZON:,} (a table of float64)")
    return n


def _gamma(check: Checks, gamma: Any) -> Any:
    """A decay factor: in [0, 1] (a negative one makes the lr negative, one above 1 makes it
    grow without bound until it overflows to inf)."""
    return check.float("gamma", gamma, ge=0, le=1)


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


def _call_float(fn: Any, x: Any, ops: Ops) -> Any:
    if isinstance(fn, Schedule):
        return fn(float(x)) if ops.host else fn._eval(x, ops)
    return fn(x)


def _momentum_groups(where: str, base: Any, top: Any, one: Callable[[Any, Any], Any]) -> Any:
    """``one(base_momentum, max_momentum)``, or a list of one per group when either is a list."""
    if not (_is_list(base) or _is_list(top)):
        return one(base, top)
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
        one(base[i] if _is_list(base) else base, top[i] if _is_list(top) else top) for i in range(n)
    ]


class TorchSchedule(Recurrence):
    """Base of the ``schedules.torch`` schedules (not registered itself).

    ``kind`` (a :class:`Kind`) says how one ``step()`` changes the running lr; the
    exact host values come from torch's own recurrence (:mod:`._mirror`), the traced
    ones from the closed form ``_cf``. ``_per_group`` names the arguments that
    :func:`per_group` splits, one entry per param group.
    """

    kind: ClassVar[Kind] = Kind.NONE
    _static = frozenset({"horizon"})  # a table's length is structure, not a hyperparameter
    _per_group: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _bind(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The constructor's arguments by name, defaults applied."""
        try:
            ba = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{cls._check.where}: {e}") from None
        ba.apply_defaults()
        a = dict(ba.arguments)
        a.pop("self")
        return a

    @classmethod
    def _n_groups(cls, a: dict[str, Any]) -> int | None:
        lr = a.get("lr")
        if not _is_list(lr):
            return None
        _check_lr_list(cls._check.where, lr)
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
                        f"{cls._check.where}: {name} must have the same length as the lr list "
                        f"(param groups): {name} has {len(v)} values, there are {n} groups"
                    )
                out[name] = v[i]
        return out

    # -- torch's recurrence (the exact host values) ------------------------------
    def _replay_iter(self) -> Iterator[float]:
        return _mirror.replay(self)

    def _eval(self, t: Any, ops: Ops) -> Any:
        try:
            v = super()._eval(t, ops)
        except (ZeroDivisionError, OverflowError) as e:
            raise _host_error(self._check.where, t, ops, e) from None
        if ops.host:
            # torch's numbers, negative ones included (a negative lr is refused where it does
            # harm: by the trainer); only a value float32 cannot hold is refused
            if not -FLOAT32_MAX <= v <= FLOAT32_MAX:  # False for NaN too
                blame = " (check lr_lambda / scale_fn)" if self._has_user_fn() else ""
                raise ValueError(
                    f"{self._check.where}: the lr at step {_step_text(t)} would be {v!r}; a "
                    f"learning rate must be finite (within float32's range){blame}"
                )
            return v
        if ops.name == "jax" and self._has_user_fn():
            # a user function may overflow: NaN marks the step invalid, as the host path
            # raises there
            v = jnp.where(jnp.abs(v) < jnp.inf, v, jnp.nan)
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
            sim = _mirror.build(self, g)
            m = _Meta(dict(g), list(getattr(sim, "_schedulers", [sim])))
            object.__setattr__(self, "_meta_cache", m)
        return m

    def _init(self, lr: Any, horizon: Any, **fields: Any) -> None:
        """Set the checked ``lr``, the (checked) ``fields`` and the checked ``horizon``."""
        self._set(lr=_lr(self._check, lr), **fields, horizon=_horizon(self._check, horizon))

    def _closed_host_ok(self, k: int) -> bool:
        # an absolute scheduler's step computes its closed form: the two are the same
        return self.kind is Kind.ABS

    def _closed_exact(self) -> bool:
        # exact at every step: where it is after (almost) any number of steps
        return self.kind is Kind.ABS or self._closed_host_ok(2**62)

    def _check_constructs(self) -> None:
        """Run torch's construction (the initial step) so its errors surface now."""
        if self._host_ok():
            self._replay(0)

    # -- closed forms -------------------------------------------------------
    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None) -> Any:
        """Closed form after ``k`` steps of this scheduler's own counter (a subclass defines
        this or :meth:`_cf_pows`).

        ``start``: the lr before its first update (``base`` itself in ``Mode.RESTART``);
        ``base``: its ``base_lrs`` entry; ``mode``: where it starts (:class:`Mode`); ``g``:
        the param group after construction.
        """
        return _fold(*self._cf_pows(k, ops, start, base, mode, g), ops)

    def _cf_pows(
        self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None
    ) -> tuple[Any, list[tuple[Any, Any]]]:
        """``_cf`` as ``(coef, pairs)``: ``coef * prod(a ** y for a, y in pairs)``, so that
        a ``ChainedScheduler`` folds the powers of all its children into one ``exp``."""
        if type(self)._cf is TorchSchedule._cf:
            raise NoClosedForm
        return self._cf(k, ops, start, base, mode, g), []

    def _tick(self, k: Any, ops: Ops) -> Any:
        """For ``Kind.MULT``: the factor one update at counter ``k`` applies (the same
        float64 operations as torch's ``get_lr`` on the host and in NumPy, ``k >= 1``)."""
        raise NoClosedForm

    # -- exact host values without replaying every step ----------------------
    def _step_factors(self, ks: np.ndarray) -> np.ndarray | None:
        """For ``Kind.MULT``: the factor ``get_lr`` applies at each step ``ks >= 1``
        (float64, torch's own operations: :meth:`_tick` in NumPy), or None where only the
        replay has them."""
        with np.errstate(all="ignore"):
            return np.asarray(self._tick(ks, NP), dtype=np.float64)

    def _mult_last(self) -> int | None:
        """The last step whose factor may differ from 1 (None: there is no last one);
        by default ``total_iters`` where the scheduler has one."""
        T = self.__dict__.get("total_iters")
        return None if T is None else max(T, 0)

    def _tick_budget(self) -> int:
        """The most ticks one query computes (factors that cost a Python call: fewer)."""
        return TICK_BUDGET

    def _mult_period(self) -> int | None:
        """Past :meth:`_mult_last` (or from step 1 if None), the factors' period (or None)."""
        return 1

    def _tick_spec(self) -> Any:
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
        spec = self._tick_spec() if self.kind is Kind.MULT else None
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
            if self.kind in (Kind.MULT, Kind.COS):
                seg = self._segment(self._replay(0), self._meta().sims[0].base)
            object.__setattr__(self, "_seg_cache", seg)
        if seg is None:
            return None
        v = seg(k)
        if v is None:  # beyond one query's budget: the closed form (docs/torch-compat.md)
            return self._closed_or_none(k)
        return v

    def _closed_or_none(self, k: int) -> float | None:
        """The host closed form at step ``k``, or None where there is none."""
        try:
            return float(self._closed(float(k), PY))
        except NoClosedForm:
            return None

    def _closed(self, k: Any, ops: Ops) -> Any:
        return self._cf(k, ops, self.lr, self.lr, Mode.CONSTRUCT)

    def to_config(self) -> dict[str, Any]:
        for f in ("lr_lambda", "scale_fn"):
            v = self.__dict__.get(f)
            if v is not None and not isinstance(v, Schedule):
                raise ValueError(
                    f"{self._check.where}: {f} is a Python callable and cannot be "
                    "serialized; pass a schedule (e.g. schedules.expr('...')) instead"
                )
        return super().to_config()


def per_group(scheduler: type[TorchSchedule], *args: Any, **kwargs: Any) -> list[TorchSchedule]:
    """One schedule per param group: ``scheduler``'s arguments as torch takes them for an
    optimizer with several param groups (a list of ``lr``, one per group, and lists for its
    per-group arguments: ``lr_lambda``, ``base_lr``/``max_lr``, the momenta, composite
    children as lists of per-group schedules).

    >>> from schedules import torch as T
    >>> a, b = T.per_group(T.StepLR, [0.1, 0.01], step_size=2)
    >>> a(2), b(2)
    (0.010000000000000002, 0.001)
    """
    if not (isinstance(scheduler, type) and issubclass(scheduler, TorchSchedule)):
        raise fail("per_group", "scheduler", scheduler, "must be a schedules.torch scheduler class")
    a = scheduler._bind(args, kwargs)
    n = scheduler._n_groups(a)
    if n is None:
        return [scheduler(**a)]
    return [scheduler(**scheduler._group_args(a, i, n)) for i in range(n)]
