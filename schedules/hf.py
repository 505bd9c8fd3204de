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

import math
from typing import Any

from ._core import Schedule
from ._ops import Ops
from ._validate import fail
from .torch import LambdaLR

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

_KINDS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
          "polynomial", "inverse_sqrt", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
          "warmup_stable_decay")


def _py_lambda(kind: str, k: int, p: dict[str, Any]) -> float:
    """transformers' lambdas, transcribed (optimization.py, transformers 5.x)."""
    w = p.get("num_warmup_steps", 0)
    if kind == "constant":
        return 1
    if kind == "constant_with_warmup":
        if k < w:
            return float(k) / float(max(1.0, w))
        return 1.0
    n = p.get("num_training_steps")
    if kind == "linear":
        if k < w:
            return float(k) / float(max(1, w))
        return max(0.0, float(n - k) / float(max(1, n - w)))
    if kind in ("cosine", "cosine_with_min_lr"):
        if k < w:
            return float(k) / float(max(1, w))
        progress = float(k - w) / float(max(1, n - w))
        factor = 0.5 * (1.0 + math.cos(math.pi * float(p["num_cycles"]) * 2.0 * progress))
        if kind == "cosine":
            return max(0.0, factor)
        r = p["min_lr_rate"]
        return max(0, factor * (1 - r) + r)
    if kind == "cosine_with_restarts":
        if k < w:
            return float(k) / float(max(1, w))
        progress = float(k - w) / float(max(1, n - w))
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(p["num_cycles"]) * progress) % 1.0))))  # noqa: E501
    if kind == "polynomial":
        lr_init, lr_end, power = p["lr_init"], p["lr_end"], p["power"]
        if k < w:
            return float(k) / float(max(1, w))
        if k > n:
            return lr_end / lr_init
        lr_range = lr_init - lr_end
        decay_steps = n - w
        pct_remaining = 1 - (k - w) / decay_steps
        return (lr_range * pct_remaining**power + lr_end) / lr_init
    if kind == "inverse_sqrt":
        ts = p["timescale"]
        if k < w:
            return float(k) / float(max(1, w))
        return 1.0 / math.sqrt((k + (ts - w)) / ts)
    if kind == "cosine_warmup_with_min_lr":
        c, wf, nf = float(k), float(w), float(n)
        wr = p.get("warmup_lr_rate")
        if c < wf:
            if wr is None:
                return (c + 1.0) / max(1.0, wf)
            wr = float(wr)
            return wr + (1.0 - wr) * c / (max(1, wf - 1))
        progress = (c - wf + 1.0) / (max(1.0, nf - wf))
        factor = 0.5 * (1.0 + math.cos(math.pi * p["num_cycles"] * 2.0 * progress))
        r = p["min_lr_rate"]
        return max(0, factor * (1 - r) + r)
    if kind == "warmup_stable_decay":
        st, dc, r = p["num_stable_steps"], p["num_decay_steps"], p["min_lr_ratio"]
        if k < w:
            progress = float(k) / float(max(1, w))
            wt = p["warmup_type"]
            if wt == "linear":
                factor = progress
            elif wt == "cosine":
                factor = 0.5 * (1.0 - math.cos(math.pi * progress))
            else:
                factor = 1.0 - math.sqrt(1.0 - progress)
            return max(0.0, factor * (1.0 - r) + r)
        if k < w + st:
            return 1.0
        if k < w + st + dc:
            progress = float(k - w - st) / float(max(1, dc))
            dt = p["decay_type"]
            if dt == "linear":
                factor = 1.0 - progress
            elif dt == "cosine":
                factor = 0.5 * (1.0 + math.cos(math.pi * float(p["num_cycles"]) * 2.0 * progress))
            else:
                factor = 1.0 - math.sqrt(progress)
            return max(0.0, factor * (1.0 - r) + r)
        return r
    raise ValueError(kind)


def _half_cos(cycles: Any, num: Any, den: Any, ops: Ops) -> Any:
    """``0.5 * (1 + cos(2 pi cycles num / den))`` = ``sin(pi (y - j - 1/2)) ** 2`` with
    ``y = cycles num / den`` and ``j = floor(y)``: the reduced argument is formed as
    ``(cycles num - (j + 1/2) den) / den``, accurate near the zeros in float32."""
    a = cycles * num
    j = ops.floor(ops.div(a, den))
    return ops.sin(ops.pi * ops.div(a - (j + 0.5) * den, den)) ** 2


def _arr_lambda(kind: str, k: Any, p: dict[str, Any], ops: Ops) -> Any:
    w = p.get("num_warmup_steps", 0)
    warm = ops.div(k, max(1, w))
    if kind == "constant":
        return 1.0 + 0.0 * k
    if kind == "constant_with_warmup":
        return ops.where(k < w, warm, 1.0)
    n = p.get("num_training_steps")
    if kind == "linear":
        return ops.where(k < w, warm, ops.maximum(0.0, ops.div(n - k, max(1, n - w))))
    if kind in ("cosine", "cosine_with_min_lr"):
        factor = _half_cos(p["num_cycles"], k - w, max(1, n - w), ops)
        if kind == "cosine_with_min_lr":
            factor = factor * (1 - p["min_lr_rate"]) + p["min_lr_rate"]
        return ops.where(k < w, warm, ops.maximum(0.0, factor))
    if kind == "cosine_with_restarts":
        progress = ops.div(k - w, max(1, n - w))
        den = max(1, n - w)
        a = p["num_cycles"] * (k - w)
        r = a - den * ops.floor(ops.div(a, den))  # (cycles * progress) % 1, times den
        v = ops.sin(ops.pi * ops.div(den - r, 2.0 * den)) ** 2
        return ops.where(k < w, warm, ops.where(progress >= 1.0, 0.0, v))
    if kind == "polynomial":
        lr_init, lr_end, power = p["lr_init"], p["lr_end"], p["power"]
        pct = ops.maximum(1 - ops.div(k - w, n - w), 0.0)
        v = ((lr_init - lr_end) * ops.pow(pct, power) + lr_end) / lr_init
        return ops.where(k < w, warm, ops.where(k > n, lr_end / lr_init, v))
    if kind == "inverse_sqrt":
        ts = p["timescale"]
        v = 1.0 / ops.sqrt(ops.maximum(ops.div(k + (ts - w), ts), 1e-30))
        return ops.where(k < w, warm, v)
    if kind == "cosine_warmup_with_min_lr":
        wr = p.get("warmup_lr_rate")
        if wr is None:
            wv = ops.div(k + 1.0, max(1.0, w))
        else:
            wv = wr + (1.0 - wr) * ops.div(k, max(1, w - 1))
        r = p["min_lr_rate"]
        f = _half_cos(p["num_cycles"], k - w + 1.0, max(1.0, n - w), ops) * (1 - r) + r
        return ops.where(k < w, wv, ops.maximum(0.0, f))
    if kind == "warmup_stable_decay":
        st, dc, r = p["num_stable_steps"], p["num_decay_steps"], p["min_lr_ratio"]
        pw = warm
        wt, dt = p["warmup_type"], p["decay_type"]
        if wt == "linear":
            fw = pw
        elif wt == "cosine":
            fw = ops.sin(ops.pi * pw / 2) ** 2
        else:
            fw = 1.0 - ops.sqrt(ops.maximum(1.0 - pw, 0.0))
        pd = ops.div(k - w - st, max(1, dc))
        if dt == "linear":
            fd = 1.0 - pd
        elif dt == "cosine":
            fd = _half_cos(p["num_cycles"], k - w - st, max(1, dc), ops)
        else:
            fd = 1.0 - ops.sqrt(ops.maximum(pd, 0.0))
        vw = ops.maximum(0.0, fw * (1.0 - r) + r)
        vd = ops.maximum(0.0, fd * (1.0 - r) + r)
        return ops.where(k < w, vw, ops.where(k < w + st, 1.0,
                                             ops.where(k < w + st + dc, vd, r + 0.0 * k)))
    raise ValueError(kind)


class HFLambda(Schedule, name="hf_lambda"):
    """transformers' ``lr_lambda`` multiplier named ``kind`` (a ``SchedulerType``
    value) with its keyword ``params``; wrap it in :class:`schedules.torch.LambdaLR`.

    >>> from schedules.hf import HFLambda
    >>> HFLambda("linear", num_warmup_steps=2, num_training_steps=4)(1)
    0.5
    """

    _fields = ("kind", "params")
    _static = frozenset({"kind", "params"})

    def __init__(self, kind: str, params: Any = None, **kw: Any) -> None:
        if kind not in _KINDS:
            raise fail("hf_lambda", "kind", kind, f"must be one of {', '.join(_KINDS)}")
        items = dict(params or {})
        if isinstance(params, (list, tuple)):
            items = {k: v for k, v in params}
        items.update(kw)
        self._set(kind=kind, params=tuple(sorted(items.items())))

    def _host_capable(self) -> bool:
        return True

    def _eval(self, t: Any, ops: Ops) -> Any:
        p = dict(self.params)
        if ops.host:
            k = math.floor(t) if t > 0 else 0
            return float(_py_lambda(self.kind, k, p))
        k = ops.floor(ops.maximum(t, 0.0))
        return _arr_lambda(self.kind, k, p, ops)


def _lam(lr: Any, kind: str, **p: Any) -> Any:
    return LambdaLR(lr, HFLambda(kind, **p))


def _int(where: str, name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise fail(where, name, v, "must be an int")
    return v


def get_constant_schedule(lr: float) -> Any:
    """Constant ``lr``.

    >>> from schedules import hf
    >>> hf.get_constant_schedule(0.1)(100)
    0.1
    """
    return _lam(lr, "constant")


def get_constant_schedule_with_warmup(lr: float, num_warmup_steps: int) -> Any:
    """Linear warmup from 0 over ``num_warmup_steps``, then constant.

    >>> from schedules import hf
    >>> hf.get_constant_schedule_with_warmup(1.0, 4)(2)
    0.5
    """
    return _lam(lr, "constant_with_warmup", num_warmup_steps=num_warmup_steps)


def get_linear_schedule_with_warmup(lr: float, num_warmup_steps: int,
                                    num_training_steps: int) -> Any:
    """Linear warmup, then linear decay to 0 at ``num_training_steps``.

    >>> from schedules import hf
    >>> hf.get_linear_schedule_with_warmup(1.0, 0, 10)(5)
    0.5
    """
    return _lam(lr, "linear", num_warmup_steps=num_warmup_steps,
                num_training_steps=num_training_steps)


def get_cosine_schedule_with_warmup(lr: float, num_warmup_steps: int, num_training_steps: int,
                                    num_cycles: float = 0.5) -> Any:
    """Linear warmup, then cosine decay (``num_cycles`` waves).

    >>> from schedules import hf
    >>> round(hf.get_cosine_schedule_with_warmup(1.0, 0, 10)(5), 12)
    0.5
    """
    return _lam(lr, "cosine", num_warmup_steps=num_warmup_steps,
                num_training_steps=num_training_steps, num_cycles=num_cycles)


def get_cosine_with_hard_restarts_schedule_with_warmup(
        lr: float, num_warmup_steps: int, num_training_steps: int, num_cycles: int = 1) -> Any:
    """Linear warmup, then ``num_cycles`` cosine decays with hard restarts.

    >>> from schedules import hf
    >>> s = hf.get_cosine_with_hard_restarts_schedule_with_warmup(1.0, 0, 10, num_cycles=2)
    >>> s(0), s(5)
    (1.0, 1.0)
    """
    return _lam(lr, "cosine_with_restarts", num_warmup_steps=num_warmup_steps,
                num_training_steps=num_training_steps, num_cycles=num_cycles)


def get_polynomial_decay_schedule_with_warmup(lr: float, num_warmup_steps: int,
                                              num_training_steps: int, lr_end: float = 1e-7,
                                              power: float = 1.0) -> Any:
    """Linear warmup, then polynomial decay from ``lr`` to ``lr_end``.

    >>> from schedules import hf
    >>> hf.get_polynomial_decay_schedule_with_warmup(1.0, 0, 10, lr_end=0.0)(5)
    0.5
    """
    if not (lr > lr_end):
        raise ValueError(f"get_polynomial_decay_schedule_with_warmup: lr_end ({lr_end}) must be "
                         f"smaller than initial lr ({lr})")
    return _lam(lr, "polynomial", num_warmup_steps=num_warmup_steps,
                num_training_steps=num_training_steps, lr_end=lr_end, power=power, lr_init=lr)


def get_inverse_sqrt_schedule(lr: float, num_warmup_steps: int,
                              timescale: int | None = None) -> Any:
    """Linear warmup, then ``1 / sqrt((t + timescale - warmup) / timescale)``.

    >>> from schedules import hf
    >>> hf.get_inverse_sqrt_schedule(1.0, 4)(16)
    0.5
    """
    if timescale is None:
        timescale = num_warmup_steps or 10_000
    return _lam(lr, "inverse_sqrt", num_warmup_steps=num_warmup_steps, timescale=timescale)


def _min_lr_rate(where: str, lr: float, min_lr: Any, min_lr_rate: Any) -> float:
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError(f"{where}: only one of min_lr or min_lr_rate should be set")
    if min_lr is not None:
        return min_lr / lr
    if min_lr_rate is None:
        raise ValueError(f"{where}: one of min_lr or min_lr_rate should be set")
    return min_lr_rate


def get_cosine_with_min_lr_schedule_with_warmup(
        lr: float, num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5,
        min_lr: float | None = None, min_lr_rate: float | None = None) -> Any:
    """Linear warmup, then cosine decay to ``min_lr`` (or ``min_lr_rate * lr``).

    >>> from schedules import hf
    >>> hf.get_cosine_with_min_lr_schedule_with_warmup(1.0, 0, 10, min_lr=0.1)(10)
    0.1
    """
    r = _min_lr_rate("get_cosine_with_min_lr_schedule_with_warmup", lr, min_lr, min_lr_rate)
    return _lam(lr, "cosine_with_min_lr", num_warmup_steps=num_warmup_steps,
                num_training_steps=num_training_steps, num_cycles=num_cycles, min_lr_rate=r)


def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
        lr: float, num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5,
        min_lr: float | None = None, min_lr_rate: float | None = None,
        warmup_lr_rate: float | None = None) -> Any:
    """As transformers' ``..._lr_rate`` variant (warmup from ``warmup_lr_rate``).

    >>> from schedules import hf
    >>> hf.get_cosine_with_min_lr_schedule_with_warmup_lr_rate(1.0, 2, 10, min_lr_rate=0.1)(0)
    0.5
    """
    r = _min_lr_rate("get_cosine_with_min_lr_schedule_with_warmup_lr_rate", lr, min_lr,
                     min_lr_rate)
    return _lam(lr, "cosine_warmup_with_min_lr", num_warmup_steps=num_warmup_steps,
                num_training_steps=num_training_steps, num_cycles=num_cycles, min_lr_rate=r,
                warmup_lr_rate=warmup_lr_rate)


def get_wsd_schedule(lr: float, num_warmup_steps: int, num_decay_steps: int,
                     num_training_steps: int | None = None, num_stable_steps: int | None = None,
                     warmup_type: str = "linear", decay_type: str = "cosine",
                     min_lr_ratio: float = 0, num_cycles: float = 0.5) -> Any:
    """Warmup-stable-decay, as transformers' ``get_wsd_schedule``.

    >>> from schedules import hf
    >>> s = hf.get_wsd_schedule(1.0, 2, 2, num_training_steps=8, decay_type="linear")
    >>> [s(t) for t in range(9)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0]
    """
    if num_training_steps is None and num_stable_steps is None:
        raise ValueError("get_wsd_schedule: either num_training_steps or num_stable_steps "
                         "must be specified")
    for name, v in (("warmup_type", warmup_type), ("decay_type", decay_type)):
        if v not in ("linear", "cosine", "1-sqrt"):
            raise ValueError(f"get_wsd_schedule: unknown {name}: {v}, expected 'linear', "
                             "'cosine' or '1-sqrt'")
    if num_stable_steps is None:
        num_stable_steps = num_training_steps - num_warmup_steps - num_decay_steps  # type: ignore[operator]
    return _lam(lr, "warmup_stable_decay", num_warmup_steps=num_warmup_steps,
                num_stable_steps=num_stable_steps, num_decay_steps=num_decay_steps,
                warmup_type=warmup_type, decay_type=decay_type, min_lr_ratio=min_lr_ratio,
                num_cycles=num_cycles)


_BY_NAME = {
    "linear": get_linear_schedule_with_warmup,
    "cosine": get_cosine_schedule_with_warmup,
    "cosine_with_restarts": get_cosine_with_hard_restarts_schedule_with_warmup,
    "polynomial": get_polynomial_decay_schedule_with_warmup,
    "constant": get_constant_schedule,
    "constant_with_warmup": get_constant_schedule_with_warmup,
    "inverse_sqrt": get_inverse_sqrt_schedule,
    "cosine_with_min_lr": get_cosine_with_min_lr_schedule_with_warmup,
    "cosine_warmup_with_min_lr": get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    "warmup_stable_decay": get_wsd_schedule,
}


def get_scheduler(name: str, lr: float, num_warmup_steps: int | None = None,
                  num_training_steps: int | None = None,
                  scheduler_specific_kwargs: dict[str, Any] | None = None) -> Any:
    """transformers' ``get_scheduler`` by ``SchedulerType`` name (``reduce_lr_on_plateau``
    returns :class:`schedules.torch.ReduceLROnPlateau`'s transformation; ``greedy``
    is not provided).

    >>> from schedules import hf
    >>> hf.get_scheduler("linear", 1.0, num_warmup_steps=0, num_training_steps=4)(1)
    0.75
    """
    name = getattr(name, "value", name)
    kw = dict(scheduler_specific_kwargs or {})
    if name == "reduce_lr_on_plateau":
        from .torch import ReduceLROnPlateau

        return ReduceLROnPlateau(lr, **kw)
    if name not in _BY_NAME:
        raise ValueError(f"get_scheduler: unknown scheduler {name!r}; known: "
                         f"{', '.join(sorted(_BY_NAME))}, reduce_lr_on_plateau")
    fn = _BY_NAME[name]
    if name == "constant":
        return fn(lr)
    if num_warmup_steps is None:
        raise ValueError(f"{name} requires `num_warmup_steps`, please provide that argument.")
    if name == "constant_with_warmup":
        return fn(lr, num_warmup_steps=num_warmup_steps)
    if name == "inverse_sqrt":
        return fn(lr, num_warmup_steps=num_warmup_steps, **kw)
    if name == "warmup_stable_decay":
        return fn(lr, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps,
                  **kw)
    if num_training_steps is None:
        raise ValueError(f"{name} requires `num_training_steps`, please provide that argument.")
    return fn(lr, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, **kw)
