"""Three numeric backends sharing one vocabulary, so each formula is written once.

``PY`` works on Python floats with :mod:`math` (the fast host path: no array
dispatch at all), ``NP`` on NumPy float64 arrays, ``JNP`` on JAX arrays and
tracers. A schedule's ``_eval(t, ops)`` only calls what is defined here.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["JNP", "NP", "PY", "Ops"]


class Ops:
    """Namespace interface; see the concrete backends below."""

    host: bool = False
    name: str = "ops"

    def __repr__(self) -> str:
        return f"<ops {self.name}>"


def _py_exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _py_pow(a: float, b: float) -> float:
    try:
        r = a**b
    except ZeroDivisionError:
        return math.inf
    except OverflowError:
        return math.inf
    # A negative base with a fractional exponent is complex in Python; NaN in NumPy/JAX.
    return math.nan if isinstance(r, complex) else r


def _py_log(x: float) -> float:
    if x > 0:
        return math.log(x)
    return -math.inf if x == 0 else math.nan


def _py_sqrt(x: float) -> float:
    return math.sqrt(x) if x >= 0 else math.nan


def _py_div(a: float, b: float) -> float:
    if b != 0:
        return a / b
    if a == 0 or a != a:
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _py_floor(x: Any) -> Any:
    # math.floor raises on inf/NaN; NumPy and JAX pass them through.
    return math.floor(x) if math.isfinite(x) else x


def _py_ceil(x: Any) -> Any:
    return math.ceil(x) if math.isfinite(x) else x


def _py_floordiv(a: float, b: float) -> float:
    if b == 0:
        return _py_div(a, b)
    if not (math.isfinite(a) and math.isfinite(b)):
        return _py_floor(_py_div(a, b))
    return a // b


class _PyOps(Ops):
    host = True
    name = "python"
    pi = math.pi
    inf = math.inf

    @staticmethod
    def asfloat(x: Any) -> float:
        return float(x)

    @staticmethod
    def where(c: Any, a: Any, b: Any) -> Any:
        return a if c else b

    minimum = staticmethod(min)
    maximum = staticmethod(max)
    floor = staticmethod(_py_floor)
    ceil = staticmethod(_py_ceil)
    cos = staticmethod(math.cos)
    sin = staticmethod(math.sin)
    tanh = staticmethod(math.tanh)
    exp = staticmethod(_py_exp)
    log = staticmethod(_py_log)
    sqrt = staticmethod(_py_sqrt)
    pow = staticmethod(_py_pow)
    div = staticmethod(_py_div)
    floordiv = staticmethod(_py_floordiv)
    abs = staticmethod(abs)

    @staticmethod
    def clip(x: Any, lo: Any, hi: Any) -> Any:
        return lo if x < lo else hi if x > hi else x

    @staticmethod
    def count_le(bounds: Sequence[Any], t: Any) -> int:
        """Number of entries of the sorted ``bounds`` that are <= t."""
        return bisect.bisect_right(bounds, t)

    @staticmethod
    def select(idx: int, values: Sequence[Any]) -> Any:
        return values[idx]

    @staticmethod
    def uniform_hash(seed: Any, t: Any) -> float:
        m = 0xFFFFFFFF
        h = _mix32_py((int(seed) + 0x9E3779B9) & m)
        h = _mix32_py((int(t) & m) ^ h)
        return (h >> 8) * (1.0 / (1 << 24))


class _ArrayOps(Ops):
    """Shared by NumPy and JAX: same function names, different module."""

    xp: Any = np
    pi = math.pi
    inf = math.inf

    def asfloat(self, x: Any) -> Any:
        raise NotImplementedError

    def where(self, c: Any, a: Any, b: Any) -> Any:
        return self.xp.where(c, a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        return self.xp.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return self.xp.maximum(a, b)

    def floor(self, x: Any) -> Any:
        return self.xp.floor(x)

    def ceil(self, x: Any) -> Any:
        return self.xp.ceil(x)

    def cos(self, x: Any) -> Any:
        return self.xp.cos(x)

    def sin(self, x: Any) -> Any:
        return self.xp.sin(x)

    def tanh(self, x: Any) -> Any:
        return self.xp.tanh(x)

    def exp(self, x: Any) -> Any:
        return self.xp.exp(x)

    def log(self, x: Any) -> Any:
        return self.xp.log(x)

    def sqrt(self, x: Any) -> Any:
        return self.xp.sqrt(x)

    def pow(self, a: Any, b: Any) -> Any:
        return self.xp.power(a, b)

    def div(self, a: Any, b: Any) -> Any:
        return self.xp.true_divide(a, b)

    def floordiv(self, a: Any, b: Any) -> Any:
        return self.xp.floor(self.xp.true_divide(a, b))

    def abs(self, x: Any) -> Any:
        return self.xp.abs(x)

    def clip(self, x: Any, lo: Any, hi: Any) -> Any:
        return self.xp.minimum(self.xp.maximum(x, lo), hi)

    def count_le(self, bounds: Sequence[Any], t: Any) -> Any:
        # A sum of comparisons rather than searchsorted: boundaries are separate
        # pytree leaves (so they can be traced or vmapped) and pieces are few.
        n = self.xp.zeros_like(t, dtype=self.xp.int32) if not bounds else 0
        for b in bounds:
            n = n + (t >= b).astype(self.xp.int32)
        return n

    def select(self, idx: Any, values: Sequence[Any]) -> Any:
        out = values[0]
        for i in range(1, len(values)):
            out = self.xp.where(idx >= i, values[i], out)
        return out

    def uniform_hash(self, seed: Any, t: Any) -> Any:
        xp = self.xp
        u32 = xp.uint32
        h = _mix32_arr(xp, (xp.asarray(seed).astype(u32) + u32(0x9E3779B9)).astype(u32))
        h = _mix32_arr(xp, xp.asarray(t).astype(u32) ^ h)
        return (h >> u32(8)).astype(xp.float32).astype(self.asfloat(0.0).dtype) * (1.0 / (1 << 24))


def _mix32_py(x: int) -> int:
    """lowbias32 integer hash (C. Wellons), on Python ints masked to 32 bits."""
    m = 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & m
    x ^= x >> 15
    x = (x * 0x846CA68B) & m
    x ^= x >> 16
    return x


def _mix32_arr(xp: Any, x: Any) -> Any:
    """The same hash on uint32 arrays, whose multiplication wraps modulo 2**32."""
    u32 = xp.uint32
    x = x ^ (x >> u32(16))
    x = x * u32(0x7FEB352D)
    x = x ^ (x >> u32(15))
    x = x * u32(0x846CA68B)
    x = x ^ (x >> u32(16))
    return x


class _NpOps(_ArrayOps):
    name = "numpy"
    xp = np

    def asfloat(self, x: Any) -> Any:
        return np.asarray(x, dtype=np.float64)


class _JnpOps(_ArrayOps):
    name = "jax"
    xp = jnp

    def asfloat(self, x: Any) -> Any:
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.floating):
            return x
        return x.astype(jnp.result_type(float))


PY = _PyOps()
NP = _NpOps()
JNP = _JnpOps()
