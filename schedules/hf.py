"""The schedules of ``transformers.optimization``, as pure schedules.

Each function takes transformers' arguments with the ``optimizer`` replaced by
its learning rate ``lr`` and returns :class:`schedules.torch.LambdaLR` of an
:class:`HFLambda` multiplier, which reproduces transformers' lambda
operation for operation on the host (Python int steps, float64: exact) and as
a closed form under JAX. ``s(t)`` is the lr of optimizer step ``t``.

>>> from schedules import hf
>>> s = hf.get_linear_schedule_with_warmup(1e-3, num_warmup_steps=10, num_training_steps=110)
>>> s(5), s(10), round(s(60), 12), s(200)
(0.0005, 0.001, 0.0005, 0.0)
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from ._core import Schedule
from ._numerics import WSD_SHAPES, decay_shape, half_cos_cycles
from ._ops import Ops
from ._primitives import inverse_sqrt
from ._validate import check_choice, check_float, check_int, fail
from .torch import LambdaLR, per_group

__all__ = [
    "HFLambda",
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
    "get_inverse_sqrt_schedule",
    "get_polynomial_decay_schedule_with_warmup",
    "get_scheduler",
    "get_wsd_schedule",
]

# -- the lambdas: per kind, transformers' formula (optimization.py, transformers 5.x) written
# ONCE over the backend ``ops`` (schedules._ops). On the host (``k`` a Python int step >= 0,
# the step counts ints) it performs transformers' operations in transformers' order, so its
# values are transformers' bit for bit; on arrays (``k`` a floored array; the step counts as
# floats: their sums may pass int32, which XLA would refuse) it is the same closed form, the
# branches selected by ``where``. Only the cosines differ: transformers' ``0.5 * (1 + cos(x))``
# loses float32 accuracy near its zeros, so arrays take it as ``sin(...) ** 2`` of an exactly
# reduced argument (:func:`_wave`, :func:`_restart_wave`). Most kinds share transformers'
# warmup (``warm=True``): ``k / max(1, num_warmup_steps)`` while ``k < num_warmup_steps``
# (the host does not evaluate the formula there). ``inverse_sqrt`` is the algebra's
# :class:`~schedules.inverse_sqrt` (its operations are transformers', warmup included).
#
# The parameters of each lambda, in the formula's argument order: name -> rule. ``count``: an
# int >= 0 (a step count); ``real``: a finite float; ``rate``: a finite float >= 0 (a negative
# one can make the lr negative); ``rate?``: None or a rate; ``nonzero``: a finite float > 0
# (the optimizer's lr: the lambda divides by it); ``timescale``: an int > 0; ``type``: one of
# WSD_SHAPES. Every parameter but those of _DEFAULTS is required.
_W, _N, _C = "num_warmup_steps", "num_training_steps", "num_cycles"
_DEFAULTS = {_W: 0, "warmup_lr_rate": None}


class _Kind(NamedTuple):
    params: dict[str, str]
    formula: Callable[..., Any]  # (k, ops, *parameters) -> the multiplier
    warm: bool = True


def _wave(cycles: Any, num: Any, den: Any, ops: Ops) -> Any:
    """transformers' ``0.5 * (1 + cos(pi * cycles * 2 * progress))``, ``progress = num / den``;
    on arrays :func:`~schedules._numerics.half_cos_cycles` (accurate near the zeros)."""
    if ops.host:
        return 0.5 * (1.0 + math.cos(math.pi * float(cycles) * 2.0 * (float(num) / float(den))))
    return half_cos_cycles(cycles, num, den, ops)


def _restart_wave(cycles: Any, num: Any, den: Any, ops: Ops) -> Any:
    """transformers' ``0.5 * (1 + cos(pi * ((cycles * progress) % 1)))``; on arrays
    ``sin(pi (den - r) / (2 den)) ** 2`` with ``r`` the exact remainder of ``cycles num`` by
    ``den`` (``(cycles * progress) % 1`` times ``den``)."""
    if ops.host:
        return 0.5 * (1.0 + math.cos(math.pi * ((float(cycles) * (float(num) / float(den))) % 1.0)))
    a = cycles * num
    r = a - den * ops.floor(ops.div(a, den))
    return ops.sin2(ops.pi * ops.div(den - r, 2.0 * den))


def _cosine(k: Any, ops: Ops, w: Any, n: Any, c: Any, r: Any = 0.0) -> Any:
    """``cosine`` (``r = 0``) and ``cosine_with_min_lr`` (``min_lr_rate = r``)."""
    return ops.maximum(0.0, _wave(c, k - w, max(1, n - w), ops) * (1 - r) + r)


def _restarts(k: Any, ops: Ops, w: Any, n: Any, c: Any) -> Any:
    d = max(1, n - w)  # progress >= 1 <=> k - w >= d (exactly: d < 2**31)
    return ops.where(k - w >= d, 0.0, ops.maximum(0.0, _restart_wave(c, k - w, d, ops)))


def _polynomial(k: Any, ops: Ops, w: Any, n: Any, lr_init: Any, lr_end: Any, power: Any) -> Any:
    if ops.host and k > n:  # transformers returns before dividing by n - w (0 when n == w)
        return lr_end / lr_init
    pct = ops.maximum(1 - (k - w) / (n - w), 0.0)  # the host raises where n == w, as transformers
    v = ((lr_init - lr_end) * ops.pow(pct, power) + lr_end) / lr_init
    return ops.where(k > n, lr_end / lr_init, v)


def _warmup_min_lr(k: Any, ops: Ops, w: Any, n: Any, c: Any, r: Any, wr: Any) -> Any:
    if wr is None:
        warm = ops.div(k + 1.0, max(1.0, w))
    else:
        warm = wr + ops.div((1.0 - wr) * k, max(1, w - 1))
    f = _wave(c, k - w + 1.0, max(1.0, n - w), ops) * (1 - r) + r
    return ops.where(k < w, warm, ops.maximum(0.0, f))


def _wsd(k: Any, ops: Ops, w: Any, st: Any, dc: Any, wt: str, dt: str, r: Any, c: Any) -> Any:
    # each phase's step, clipped to the phase (values elsewhere are unused, and kept finite)
    kw, kd = ops.minimum(k, w), ops.clip(k - w - st, 0.0, dc)
    pw = ops.div(kw, max(1, w))
    if wt == "linear":
        fw = pw
    elif wt == "cosine":  # 0.5 * (1 - cos(pi pw)) as sin(pi pw / 2) ** 2 on arrays
        fw = 0.5 * (1.0 - math.cos(math.pi * pw)) if ops.host else ops.sin2(ops.pi * pw / 2)
    else:
        fw = 1.0 - ops.sqrt(ops.maximum(1.0 - pw, 0.0))
    if dt == "cosine":  # with num_cycles
        fd = _wave(c, kd, max(1, dc), ops)
    else:
        fd = decay_shape(dt, ops.div(kd, max(1, dc)), ops)
    vw = ops.maximum(0.0, fw * (1.0 - r) + r)
    vd = ops.maximum(0.0, fd * (1.0 - r) + r)
    return ops.where(k < w, vw, ops.where(k < w + st, 1.0, ops.where(k < w + st + dc, vd, r)))


_WAVE = {_W: "count", _N: "count", _C: "real"}
_MIN_LR = {**_WAVE, "min_lr_rate": "rate"}

#: kind (transformers' ``SchedulerType`` value) -> parameters, formula, warmup
_TABLE: dict[str, _Kind] = {
    "constant": _Kind({}, lambda k, ops: 1.0 + 0.0 * k, warm=False),
    "constant_with_warmup": _Kind({_W: "count"}, lambda k, ops, w: 1.0 + 0.0 * k),
    "linear": _Kind(
        {_W: "count", _N: "count"},
        lambda k, ops, w, n: ops.maximum(0.0, ops.div(n - k, max(1, n - w))),
    ),
    "cosine": _Kind(_WAVE, _cosine),
    "cosine_with_restarts": _Kind(_WAVE, _restarts),
    "polynomial": _Kind(
        {_W: "count", _N: "count", "lr_init": "nonzero", "lr_end": "rate", "power": "rate"},
        _polynomial,
    ),
    "inverse_sqrt": _Kind(
        {_W: "count", "timescale": "timescale"},
        lambda k, ops, w, ts: _inverse_sqrt(1.0, w, ts)._eval(k, ops),
        warm=False,
    ),
    "cosine_with_min_lr": _Kind(_MIN_LR, _cosine),
    "cosine_warmup_with_min_lr": _Kind(
        {**_MIN_LR, "warmup_lr_rate": "rate?"}, _warmup_min_lr, warm=False
    ),
    "warmup_stable_decay": _Kind(
        {
            _W: "count",
            "num_stable_steps": "count",
            "num_decay_steps": "count",
            "warmup_type": "type",
            "decay_type": "type",
            "min_lr_ratio": "rate",
            _C: "real",
        },
        _wsd,
        warm=False,
    ),
}
_KINDS = tuple(_TABLE)
_inverse_sqrt = functools.lru_cache(maxsize=64)(inverse_sqrt)


def _lambda(entry: _Kind, k: Any, args: tuple[Any, ...], ops: Ops) -> Any:
    """The multiplier (transformers' ``lr_lambda``) of the kind ``entry`` at step ``k``."""
    if not entry.warm:
        return entry.formula(k, ops, *args)
    w = args[0]  # num_warmup_steps: a warm kind's first parameter
    if ops.host and k < w:
        return ops.div(k, max(1, w))
    return ops.where(k < w, ops.div(k, max(1, w)), entry.formula(k, ops, *args))


def _check_param(where: str, name: str, value: Any, rule: str) -> Any:
    if rule == "count":
        return check_int(where, name, value, ge=0)
    if rule == "timescale":
        return check_int(where, name, value, gt=0)
    if rule == "type":
        return check_choice(where, name, value, WSD_SHAPES)
    if rule == "rate?" and value is None:
        return None
    if rule in ("rate", "rate?"):
        return check_float(where, name, value, ge=0)
    v = check_float(where, name, value)
    if rule == "nonzero" and not v > 0:
        raise fail(where, name, value, "must be > 0 (the lambda divides by it)")
    return v


def _check_params(where: str, kind: str, params: Any, kw: dict[str, Any]) -> dict[str, Any]:
    """``params`` (None, a mapping or (name, value) pairs) and ``kw``, checked against the
    parameters of ``kind``'s lambda."""
    if params is None:
        items: dict[str, Any] = {}
    elif isinstance(params, Mapping):
        items = dict(params)
    elif isinstance(params, (list, tuple)) and all(
        isinstance(kv, (list, tuple)) and len(kv) == 2 for kv in params
    ):
        items = {kv[0]: kv[1] for kv in params}
    else:
        raise fail(where, "params", params, "must be None, a dict or a list of (name, value) pairs")
    items.update(kw)
    rules = _TABLE[kind].params
    for name in items:
        if not isinstance(name, str) or name not in rules:
            allowed = ", ".join(rules) or "none"
            raise fail(where, "params", params if name not in kw else kw, f"has {name!r}, "
                       f"which is not a parameter of kind={kind!r} (its parameters: {allowed})")
    missing = [n for n in rules if n not in items and n not in _DEFAULTS]
    if missing:
        why = f"is missing {', '.join(missing)} (required by kind={kind!r})"
        raise fail(where, "params", params, why)
    return {n: _check_param(where, n, v, rules[n]) for n, v in items.items()}


class HFLambda(Schedule, name="hf_lambda"):
    """transformers' ``lr_lambda`` multiplier named ``kind`` (a ``SchedulerType``
    value) with its keyword ``params``; wrap it in :class:`schedules.torch.LambdaLR`.

    >>> from schedules.hf import HFLambda
    >>> HFLambda("linear", num_warmup_steps=2, num_training_steps=4)(1)
    0.5
    """

    _static = frozenset({"kind", "params"})

    def __init__(self, kind: str, params: Any = None, **kw: Any) -> None:
        check = self._check
        if not isinstance(kind, str) or kind not in _KINDS:
            raise check.fail("kind", kind, f"must be one of {', '.join(_KINDS)}")
        items = _check_params(check.where, kind, params, kw)
        self._set(kind=kind, params=tuple(sorted(items.items())))

    def _host_capable(self) -> bool:
        return True

    _host_args: tuple[Any, ...] | None = None  # the formula's arguments (host), computed once

    def _args(self) -> tuple[Any, ...]:
        p = dict(self.params)
        return tuple(p[n] if n in p else _DEFAULTS[n] for n in _TABLE[self.kind].params)

    def _eval(self, t: Any, ops: Ops) -> Any:
        entry = _TABLE[self.kind]
        if not ops.host:  # the step counts as floats
            args = tuple(float(v) if type(v) is int else v for v in self._args())
            return _lambda(entry, ops.floor(ops.maximum(t, 0.0)), args, ops)
        if not math.isfinite(t):
            raise ValueError(f"{self._name}: step={t!r} must be finite")
        k = math.floor(t) if t > 0 else 0
        args = self._host_args
        if args is None:
            args = self._args()
            object.__setattr__(self, "_host_args", args)
        try:
            return float(_lambda(entry, k, args, ops))
        except (ZeroDivisionError, OverflowError) as e:  # as transformers' own lambda
            raise ValueError(
                f"{self._name}: transformers' {self.kind!r} lambda raises "
                f"{type(e).__name__} at step {k}: {e}"
            ) from None


def _lam(where: str, lr: Any, kind: str, p: dict[str, Any]) -> Any:
    """``LambdaLR(lr, HFLambda(kind, ...))`` of the lambda's parameters found in ``p``, with
    errors reported under ``where`` (the transformers function's name) and its own names."""
    if isinstance(lr, (list, tuple)):
        for i, x in enumerate(lr):
            check_float(where, f"lr[{i}]", x, ge=0)
    else:
        check_float(where, "lr", lr, ge=0)
    rules = _TABLE[kind].params
    p = {n: p[n] for n in rules if n in p}
    for name, v in p.items():
        if name != "lr_init":
            _check_param(where, name, v, rules[name])
    if isinstance(lr, (list, tuple)):  # one schedule per param group, as torch's LambdaLR
        return per_group(LambdaLR, list(lr), HFLambda(kind, **p))
    return LambdaLR(lr, HFLambda(kind, **p))


#: ``SchedulerType`` value -> transformers' ``get_*`` function (filled by :func:`_schedule`)
_BY_NAME: dict[str, Callable[..., Any]] = {}


def _schedule(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Makes transformers' ``get_*`` function of ``kind`` from a function with its signature
    whose body checks what goes beyond the lambda's parameters and returns the parameters it
    derives (a dict, or None); the schedule is ``LambdaLR(lr, HFLambda(kind, ...))`` of the
    arguments and those."""

    def make(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def get(*args: Any, **kw: Any) -> Any:
            derived = fn(*args, **kw) or {}  # first: Python's own TypeError for bad calls
            bound = sig.bind(*args, **kw)
            bound.apply_defaults()
            p = {**bound.arguments, **derived}
            return _lam(fn.__name__, p.pop("lr"), kind, p)

        _BY_NAME[kind] = get
        return get

    return make


def _one_lr(where: str, lr: Any, why: str) -> float:
    if isinstance(lr, (list, tuple)):
        raise fail(where, "lr", lr, f"must be a single number here: {why}")
    return check_float(where, "lr", lr, ge=0)


@_schedule("constant")
def get_constant_schedule(lr: float) -> Any:
    """Constant ``lr``.

    >>> from schedules import hf
    >>> hf.get_constant_schedule(0.1)(100)
    0.1
    """


@_schedule("constant_with_warmup")
def get_constant_schedule_with_warmup(lr: float, num_warmup_steps: int) -> Any:
    """Linear warmup from 0 over ``num_warmup_steps``, then constant.

    >>> from schedules import hf
    >>> hf.get_constant_schedule_with_warmup(1.0, 4)(2)
    0.5
    """


@_schedule("linear")
def get_linear_schedule_with_warmup(
    lr: float, num_warmup_steps: int, num_training_steps: int
) -> Any:
    """Linear warmup, then linear decay to 0 at ``num_training_steps``.

    >>> from schedules import hf
    >>> hf.get_linear_schedule_with_warmup(1.0, 0, 10)(5)
    0.5
    """


@_schedule("cosine")
def get_cosine_schedule_with_warmup(
    lr: float, num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5
) -> Any:
    """Linear warmup, then cosine decay (``num_cycles`` waves).

    >>> from schedules import hf
    >>> round(hf.get_cosine_schedule_with_warmup(1.0, 0, 10)(5), 12)
    0.5
    """


@_schedule("cosine_with_restarts")
def get_cosine_with_hard_restarts_schedule_with_warmup(
    lr: float, num_warmup_steps: int, num_training_steps: int, num_cycles: int = 1
) -> Any:
    """Linear warmup, then ``num_cycles`` cosine decays with hard restarts.

    >>> from schedules import hf
    >>> s = hf.get_cosine_with_hard_restarts_schedule_with_warmup(1.0, 0, 10, num_cycles=2)
    >>> s(0), s(5)
    (1.0, 1.0)
    """


@_schedule("polynomial")
def get_polynomial_decay_schedule_with_warmup(
    lr: float,
    num_warmup_steps: int,
    num_training_steps: int,
    lr_end: float = 1e-7,
    power: float = 1.0,
) -> Any:
    """Linear warmup, then polynomial decay from ``lr`` to ``lr_end``.

    >>> from schedules import hf
    >>> hf.get_polynomial_decay_schedule_with_warmup(1.0, 0, 10, lr_end=0.0)(5)
    0.5
    """
    w = "get_polynomial_decay_schedule_with_warmup"
    lr0 = _one_lr(w, lr, "the lambda is relative to the optimizer's lr (lr_end / lr)")
    lr_end = check_float(w, "lr_end", lr_end, ge=0)
    if not (lr0 > lr_end):
        raise fail(w, "lr_end", lr_end, f"must be smaller than the initial lr={lr!r} "
                   f"(transformers: 'lr_end ({lr_end}) must be smaller than initial lr ({lr})')")
    if lr0 == 0:
        raise fail(w, "lr", lr, "must be nonzero (the lambda divides by it)")
    return {"lr_init": lr}


@_schedule("inverse_sqrt")
def get_inverse_sqrt_schedule(
    lr: float, num_warmup_steps: int, timescale: int | None = None
) -> Any:
    """Linear warmup, then ``1 / sqrt((t + timescale - warmup) / timescale)``.

    >>> from schedules import hf
    >>> hf.get_inverse_sqrt_schedule(1.0, 4)(16)
    0.5
    """
    if timescale is None:
        w = "get_inverse_sqrt_schedule"
        return {"timescale": check_int(w, "num_warmup_steps", num_warmup_steps, ge=0) or 10_000}
    return None


def _min_lr_rate(where: str, lr: Any, min_lr: Any, min_lr_rate: Any) -> dict[str, Any]:
    if min_lr is not None and min_lr_rate is not None:
        raise fail(where, "min_lr", min_lr, f"and min_lr_rate={min_lr_rate!r} are both set "
                   "(transformers: 'Only one of min_lr or min_lr_rate should be set')")
    if min_lr is not None:
        lr0 = _one_lr(where, lr, "min_lr is converted to min_lr / lr")
        min_lr = check_float(where, "min_lr", min_lr, ge=0)
        if lr0 == 0:
            raise fail(where, "lr", lr, "must be nonzero when min_lr is given (min_lr / lr)")
        return {"min_lr_rate": min_lr / lr0}
    if min_lr_rate is None:
        raise fail(where, "min_lr_rate", min_lr_rate, "must be set, or min_lr "
                   "(transformers: 'One of min_lr or min_lr_rate should be set')")
    return {"min_lr_rate": check_float(where, "min_lr_rate", min_lr_rate, ge=0)}


@_schedule("cosine_with_min_lr")
def get_cosine_with_min_lr_schedule_with_warmup(
    lr: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
) -> Any:
    """Linear warmup, then cosine decay to ``min_lr`` (or ``min_lr_rate * lr``).

    >>> from schedules import hf
    >>> hf.get_cosine_with_min_lr_schedule_with_warmup(1.0, 0, 10, min_lr=0.1)(10)
    0.1
    """
    return _min_lr_rate("get_cosine_with_min_lr_schedule_with_warmup", lr, min_lr, min_lr_rate)


@_schedule("cosine_warmup_with_min_lr")
def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
    lr: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
) -> Any:
    """As transformers' ``..._lr_rate`` variant (warmup from ``warmup_lr_rate``).

    >>> from schedules import hf
    >>> hf.get_cosine_with_min_lr_schedule_with_warmup_lr_rate(1.0, 2, 10, min_lr_rate=0.1)(0)
    0.5
    """
    w = "get_cosine_with_min_lr_schedule_with_warmup_lr_rate"
    return _min_lr_rate(w, lr, min_lr, min_lr_rate)


@_schedule("warmup_stable_decay")
def get_wsd_schedule(
    lr: float,
    num_warmup_steps: int,
    num_decay_steps: int,
    num_training_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0,
    num_cycles: float = 0.5,
) -> Any:
    """Warmup-stable-decay, as transformers' ``get_wsd_schedule``.

    >>> from schedules import hf
    >>> s = hf.get_wsd_schedule(1.0, 2, 2, num_training_steps=8, decay_type="linear")
    >>> [s(t) for t in range(9)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0]
    """
    w = "get_wsd_schedule"
    if num_training_steps is None and num_stable_steps is None:
        raise fail(w, "num_stable_steps", num_stable_steps, "must be given, or "
                   "num_training_steps (transformers: 'Either num_training_steps or "
                   "num_stable_steps must be specified')")
    for name, v in (("warmup_type", warmup_type), ("decay_type", decay_type)):
        check_choice(w, name, v, WSD_SHAPES)
    if num_stable_steps is not None:
        return None
    n = check_int(w, "num_training_steps", num_training_steps, ge=0)
    wu = check_int(w, "num_warmup_steps", num_warmup_steps, ge=0)
    dc = check_int(w, "num_decay_steps", num_decay_steps, ge=0)
    if n - wu - dc < 0:
        raise fail(w, "num_training_steps", num_training_steps,
                   f"must be >= num_warmup_steps + num_decay_steps = {wu + dc}")
    return {"num_stable_steps": n - wu - dc}


def _check_kwargs(where: str, name: str, fn: Any, kw: dict[str, Any]) -> None:
    """``scheduler_specific_kwargs`` must name parameters of ``fn`` other than those
    get_scheduler passes itself."""
    own = {"cls", "lr", "num_warmup_steps", "num_training_steps"}
    allowed = [p for p in inspect.signature(fn).parameters if p not in own]
    for k in kw:
        if k not in allowed:
            raise fail(where, "scheduler_specific_kwargs", kw, f"has {k!r}, which {name!r} does "
                       f"not take (it takes: {', '.join(allowed) or 'none'})")



def get_scheduler(
    name: str,
    lr: float,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict[str, Any] | None = None,
) -> Any:
    """transformers' ``get_scheduler`` by ``SchedulerType`` name (``reduce_lr_on_plateau``
    returns :class:`schedules.torch.ReduceLROnPlateau`'s transformation; ``greedy``
    is not provided).

    >>> from schedules import hf
    >>> hf.get_scheduler("linear", 1.0, num_warmup_steps=0, num_training_steps=4)(1)
    0.75
    """
    w = "get_scheduler"
    name = getattr(name, "value", name)
    if not isinstance(name, str) or (name not in _BY_NAME and name != "reduce_lr_on_plateau"):
        why = f"must be one of {', '.join(sorted(_BY_NAME))}, reduce_lr_on_plateau"
        raise fail(w, "name", name, why)
    if scheduler_specific_kwargs is not None and not isinstance(scheduler_specific_kwargs, Mapping):
        raise fail(w, "scheduler_specific_kwargs", scheduler_specific_kwargs,
                   "must be None or a dict")
    kw = dict(scheduler_specific_kwargs or {})
    if name == "reduce_lr_on_plateau":
        from .torch import reduce_on_plateau

        _check_kwargs(w, name, reduce_on_plateau, kw)
        return reduce_on_plateau(lr, **kw)
    fn = _BY_NAME[name]
    if name == "constant":
        return fn(lr)
    args = {"num_warmup_steps": num_warmup_steps}
    if name != "constant_with_warmup":
        _check_kwargs(w, name, fn, kw)
        if name != "inverse_sqrt":
            args["num_training_steps"] = num_training_steps
            try:  # transformers raises TypeError for a missing schedule-specific argument
                inspect.signature(fn).bind(lr, **args, **kw)
            except TypeError as e:
                why = f"does not fit {name!r}: {e}"
                raise fail(w, "scheduler_specific_kwargs", kw, why) from None
        args.update(kw)
    if num_warmup_steps is None:
        raise ValueError(f"{name} requires `num_warmup_steps`, please provide that argument.")
    own_total = ("constant_with_warmup", "inverse_sqrt", "warmup_stable_decay")
    if num_training_steps is None and name not in own_total:
        raise ValueError(f"{name} requires `num_training_steps`, please provide that argument.")
    return fn(lr, **args)
