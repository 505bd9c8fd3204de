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

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["JNP", "JNP_ACCURATE", "NP", "PY", "Ops", "fix_floor_quotient", "pow_prod_f32",
           "sin2_f32"]


def _concrete_positive(b: Any) -> bool:
    return isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0


def fix_floor_quotient(q: Any, a: Any, b: Any, ops: Ops) -> Any:
    """``floor(a / b)`` from an estimate ``q`` at most one off (arrays): exact where
    ``q * b`` and ``(q + 1) * b`` are (integers below 2**24 in float32)."""
    if not _concrete_positive(b):  # floor(a / b) == floor(-a / -b): make the divisor positive
        neg = b < 0
        a, b = ops.where(neg, -a, a), ops.abs(b)
    q = ops.where(q * b > a, q - 1, q)
    return ops.where((q + 1) * b <= a, q + 1, q)


class Ops:
    """Namespace interface; see the concrete backends below."""

    host: bool = False
    name: str = "ops"

    def __repr__(self) -> str:
        return f"<ops {self.name}>"

    def pow_prod(self, pairs: Sequence[tuple[Any, Any]]) -> Any:
        """``prod(a ** y for a, y in pairs)`` (``JNP``: one accurate ``exp`` in float32)."""
        out: Any = 1.0
        for a, y in pairs:
            out = out * self.pow(a, y)  # type: ignore[attr-defined]
        return out


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

    @staticmethod
    def sin2(x: Any) -> Any:
        """``sin(x) ** 2``."""
        return math.sin(x) ** 2

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

    def sin2(self, x: Any) -> Any:
        """``sin(x) ** 2``: every cosine annealing's shape, written as a square of a sine of
        the half angle (no cancellation near the minimum)."""
        return self.xp.sin(x) ** 2

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
        # XLA divides by a constant through its reciprocal, which can land on the next
        # integer: settle the quotient exactly
        return fix_floor_quotient(self.xp.floor(self.xp.true_divide(a, b)), a, b, self)

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

    def pow_prod(self, pairs: Sequence[tuple[Any, Any]]) -> Any:
        return pow_prod_f32(pairs)

    def sin2(self, x: Any) -> Any:
        """``sin(x) ** 2``; in float32 as :func:`sin2_f32` (a few multiply-adds instead of
        XLA's general ``sin``: 4x faster per element on XLA:CPU), otherwise as written."""
        x = jnp.asarray(x)
        if x.dtype == jnp.float32:
            return sin2_f32(x)
        return jnp.sin(x) ** 2


#: ``sin(x) ** 2 = u P(u)`` with ``u = x * x`` on ``|x| <= pi / 2``: ``P``'s coefficients, a
#: least-squares fit of ``sin(x) ** 2 / u`` at 20,000 Chebyshev nodes in ``u`` (relative
#: error 5.2e-8 in float64 with these float32 coefficients; 2.1e-7 evaluated in float32, the
#: same as float32's own ``sin(x) ** 2``: ``tests/schedules/test_numerics.py``).
_SIN2_P = (1.0, -0.33333298563957214, 0.04444289579987526, -0.003172090509906411,
           0.00013921051868237555, -3.609039595176e-06)
_PI_HI = float(np.float32(math.pi))  # pi = _PI_HI + _PI_LO to ~1e-15 (Cody-Waite)
_PI_LO = float(np.float32(math.pi - _PI_HI))


def sin2_f32(x: Any) -> Any:
    """``sin(x) ** 2`` of a float32 array: ``x`` reduced by the nearest multiple ``k pi``
    (``sin ** 2`` has period ``pi``; ``pi`` in two float32 parts, whose products with
    ``|k| <= 2`` are exact), then ``u P(u)`` (:data:`_SIN2_P`) by Horner's rule. Relative
    error within 4e-7 for ``|x| <= 5 pi / 2``, zeros included (the annealing schedules pass
    half angles within ``3 pi / 2``); beyond that the reduction rounds (~1e-7 absolute per
    period).

    >>> import jax.numpy as jnp, math
    >>> round(float(sin2_f32(jnp.float32(math.pi / 6))), 6)  # sin(pi / 6) = 1 / 2
    0.25
    """
    k = jnp.round(x * jnp.float32(1 / math.pi))
    x = (x - k * jnp.float32(_PI_HI)) - k * jnp.float32(_PI_LO)
    u = x * x
    acc = jnp.float32(_SIN2_P[-1])
    for c in _SIN2_P[-2::-1]:
        acc = acc * u + jnp.float32(c)
    return acc * u


class _JnpAccurateOps(_JnpOps):
    """``JNP`` whose ``pow`` with a concrete base and a float32 exponent is accurate
    (:func:`pow_prod_f32`); used for user lambdas of the PyTorch-exact schedules."""

    def pow(self, a: Any, b: Any) -> Any:
        return pow_prod_f32([(a, b)])


_F32_TOP12 = -4096  # int32 mask 0xFFFFF000: the 12 leading significant bits of a float32


def _top12_host(x: float) -> float:
    """``x`` rounded to float32, keeping its 12 leading significant bits (host)."""
    i = np.array(np.float32(x)).view(np.int32) & np.int32(_F32_TOP12)
    return float(i.view(np.float32))


def _log2_split(a: float) -> tuple[float, float, float] | None:
    """``log2(a)`` (float64 on the host) as ``p1 + p2 + p3`` in float32, ``p1`` and
    ``p2`` with 12 significant bits (so their products with 12-bit numbers are exact);
    None where the accurate path does not apply (``a <= 0``, not finite)."""
    if not (a > 0 and math.isfinite(a)):
        return None
    p = math.log2(a)
    p1 = _top12_host(p)
    p2 = _top12_host(p - p1)
    return p1, p2, float(np.float32(p - p1 - p2))


def _concrete_float(a: Any) -> float | None:
    if isinstance(a, bool):
        return None
    if isinstance(a, (int, float, np.floating, np.integer)):
        return float(a)
    concrete = isinstance(a, (np.ndarray, jax.Array)) and not isinstance(a, jax.core.Tracer)
    return float(a) if concrete and np.ndim(a) == 0 else None


def _exp2_f32(y: Any, parts: tuple[float, float, float]) -> tuple[Any, Any]:
    """``y * (p1 + p2 + p3)`` as ``(i, f)``: ``i`` integral, ``|f| <= 1/2 + tiny``.

    ``y`` (float32) is split into ``yh + yl`` of 12 significant bits each (bit mask,
    exact), so ``yh*p1, yh*p2, yl*p1, yl*p2`` are exact; each is reduced modulo 1
    exactly (``t - round(t)``) and only the small fractions are summed with rounding.
    """
    p1, p2, p3 = (np.float32(v) for v in parts)
    yi = jax.lax.bitcast_convert_type(y, jnp.int32)
    yh = jax.lax.bitcast_convert_type(yi & jnp.int32(_F32_TOP12), jnp.float32)
    yl = y - yh
    t1, t2, t3, t4 = yh * p1, yh * p2, yl * p1, yl * p2
    r1, r2, r3, r4 = jnp.round(t1), jnp.round(t2), jnp.round(t3), jnp.round(t4)
    small = ((t4 - r4) + y * p3) + ((t3 - r3) + (t2 - r2))
    f = (t1 - r1) + small
    r5 = jnp.round(f)
    return ((r1 + r2) + (r3 + r4)) + r5, f - r5


def _pow2i_f32(v: Any, i: Any) -> Any:
    """``v * 2**i`` for integral float32 ``i`` (exact powers of two, one rounding)."""
    i = jnp.clip(i, -252.0, 254.0).astype(jnp.int32)
    h = i // 2

    def two(e: Any) -> Any:
        return jax.lax.bitcast_convert_type((e + 127) << 23, jnp.float32)
    return v * two(h) * two(i - h)


def pow_prod_f32(pairs: Sequence[tuple[Any, Any]]) -> Any:
    """``prod(a ** y)`` for float32 ``y`` and concrete bases ``a``, as ONE ``exp2``.

    Each ``a ** y = 2 ** (y * log2(a))`` with ``log2(a)`` from float64 on the host,
    split Cody-Waite style so that the product with ``y`` is exact up to ~2**-40
    relative; the exponents of all pairs are summed (integer and fractional parts
    apart) before a single ``exp2`` and an exact scaling by a power of two. Relative
    error ~2e-7 for ``|y| < 2**24`` (vs ``|y log a| * 2**-24`` for float32 ``pow``).
    Pairs whose base is traced, not positive or not finite use ``jnp.power``; so do
    exponents with ``|y| >= 2**24``, NaN or infinite.
    """
    out: Any = 1.0
    acc_i: Any = 0.0
    acc_f: Any = 0.0
    ok: Any = True
    used = False
    for a, y in pairs:
        y = jnp.asarray(y)
        av = _concrete_float(a)
        parts = _log2_split(av) if av is not None else None
        if parts is None or y.dtype != jnp.float32:
            out = out * jnp.power(a, y)
            continue
        i, f = _exp2_f32(y, parts)
        acc_i, acc_f = acc_i + i, acc_f + f
        ok = ok & (jnp.abs(y) < 2.0**24)
        used = True
        out = out * jnp.where(jnp.abs(y) < 2.0**24, 1.0, jnp.power(np.float32(av), y))
    if not used:
        return out
    r = jnp.round(acc_f)
    acc_i, acc_f = acc_i + r, acc_f - r
    v = _pow2i_f32(jnp.exp2(acc_f), acc_i)
    return out * jnp.where(ok, v, 1.0)


PY = _PyOps()
NP = _NpOps()
JNP = _JnpOps()
JNP_ACCURATE = _JnpAccurateOps()
