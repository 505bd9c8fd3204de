"""The numerics the schedules share: written once, used by the algebra, ``schedules.torch``,
``schedules.hf`` and ``schedules.megatron``.

Every function takes the backend ``ops`` (:mod:`schedules._ops`) and works on Python floats,
NumPy arrays and JAX arrays alike. The choice tuples shared by several schedule families live
here too, so that a spelling is defined once.

* :func:`floordiv`: ``floor(a / b)``, exact (XLA divides by a constant through its reciprocal,
  which can land on the next integer: ``floor(29.999998 / 30)`` would be 1).
* :func:`progress`: ``clip(t / T, 0, 1)``; :func:`half_cos`: ``(1 + cos(pi p)) / 2``, and its
  float32-accurate forms (:func:`half_cos_remaining`, :func:`half_cos_cycles`,
  :func:`half_angle`, :func:`half_cos_torch`, :func:`cos_mix`).
* :func:`cycle_position` (fixed period) and :func:`cycle_of` (geometric periods): which cycle
  holds step ``t`` and where in it; :func:`cyclic_phase`: the triangle wave of PyTorch's
  ``CyclicLR``; :func:`one_cycle_ends`: the phases of its ``OneCycleLR``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the type only: _ops is the layer below and imports nothing from here
    from ._ops import Ops

__all__ = [
    "CYCLIC_MODES",
    "WSD_SHAPES",
    "cos_mix",
    "cycle_of",
    "cycle_position",
    "cyclic_phase",
    "decay_shape",
    "floordiv",
    "half_angle",
    "half_cos",
    "half_cos_cycles",
    "half_cos_remaining",
    "half_cos_torch",
    "one_cycle_ends",
    "progress",
]

#: ``cyclic``'s / PyTorch ``CyclicLR``'s modes.
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
#: the shapes of a warmup-stable-decay phase (``wsd``'s ``shape``, transformers'
#: ``warmup_type`` / ``decay_type``).
WSD_SHAPES = ("linear", "cosine", "1-sqrt")


def floordiv(a: Any, b: Any, ops: Ops) -> Any:
    """``floor(a / b)``, exact: Python's ``//`` on the host, a corrected quotient on arrays
    (this is ``ops.floordiv``; the function is here to be read and cited).

    >>> from schedules._ops import PY
    >>> floordiv(59.99999618530273, 30, PY)
    1.0
    """
    return ops.floordiv(a, b)


def progress(t: Any, T: Any, ops: Ops) -> Any:
    """``clip(t / T, 0, 1)``, with a zero-length interval already complete."""
    if type(T) is int:  # a known length (not traced): no guard needed
        return ops.clip(t / T, 0.0, 1.0) if T > 0 else 1.0 + 0.0 * t
    safe_T = ops.maximum(T, 1)
    return ops.where(T > 0, ops.clip(ops.div(t, safe_T), 0.0, 1.0), 1.0)


def half_cos(p: Any, ops: Ops) -> Any:
    """The half-cosine ``(1 + cos(pi p)) / 2``: 1 at ``p = 0``, 0 at ``p = 1``."""
    return 0.5 * (1.0 + ops.cos(ops.pi * p))


def half_cos_remaining(t: Any, T: Any, ops: Ops) -> Any:
    """``half_cos(clip(t / T, 0, 1))`` as ``sin(pi (T - clip(t, 0, T)) / (2 T)) ** 2``: fewer
    operations, never negative (a fractional power is safe), exactly 1 at ``t = 0`` and 0 at
    ``t = T``; ``T = 0`` is complete (0)."""
    if type(T) is int:  # known length: no guard for T = 0 in the traced graph
        if T == 0:
            return 0.0 * t
        x = ops.clip(T - t, 0.0, T) * (ops.pi / (2 * T))
    else:
        half_pi_over_T = ops.div(ops.pi, 2 * ops.maximum(T, 1))
        x = ops.where(T > 0, ops.clip(T - t, 0.0, T) * half_pi_over_T, 0.0)
    return ops.sin2(x)


def half_cos_cycles(cycles: Any, num: Any, den: Any, ops: Ops) -> Any:
    """``0.5 * (1 + cos(2 pi cycles num / den))`` = ``sin(pi (y - j - 1/2)) ** 2`` with
    ``y = cycles num / den`` and ``j = floor(y)``: the reduced argument is formed as
    ``(cycles num - (j + 1/2) den) / den``, accurate near the zeros in float32."""
    a = cycles * num
    j = ops.floor(ops.div(a, den))
    return ops.sin2(ops.pi * ops.div(a - (j + 0.5) * den, den))


def half_angle(num: Any, den: Any, ops: Ops) -> Any:
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


def half_cos_torch(num: Any, den: Any, ops: Ops) -> Any:
    """``(1 + cos(pi * num / den)) / 2``: PyTorch's operation order on the host; on
    arrays ``sin(half_angle) ** 2``, accurate near the minimum (float32)."""
    if ops.host:
        return (1 + math.cos(math.pi * num / den)) / 2
    return ops.sin2(half_angle(num, den, ops))


def cos_mix(lo: Any, hi: Any, num: Any, den: Any, ops: Ops, lo_le_hi: bool = False) -> Any:
    """``lo + (hi - lo) * (1 + cos(pi * num / den)) / 2`` on arrays. With ``lo <= hi``
    known (concrete values) as ``lo + (hi - lo) * s**2`` (two non-negative terms: no
    cancellation, one ``sin``); otherwise ``hi * s**2 + lo * c**2`` (``s, c``: sin, cos of
    the half angle), which has no cancellation when ``lo > hi`` (float32)."""
    ang = half_angle(num, den, ops)
    s2 = ops.sin2(ang)
    if lo_le_hi:
        return lo + (hi - lo) * s2
    return hi * s2 + lo * ops.cos(ang) ** 2


def cycle_position(t: Any, period: Any, ops: Ops) -> tuple[Any, Any]:
    """``(n, r)``: the cycle ``n = floor(t / period)`` holding step ``t`` and the step
    within it ``r = t - n * period`` (exact: no ``t / period - n`` in float32)."""
    n = ops.floordiv(t, period)
    return n, t - n * period


def cyclic_phase(t: Any, up: float, total: float, ops: Ops) -> tuple[Any, Any]:
    """``(cycle, h)`` for triangular cycles of ``total`` steps that rise for ``up`` of them:
    the 1-based cycle ``floor(1 + t / total)`` and the height ``h`` in ``[0, 1]``. On the host
    PyTorch ``CyclicLR``'s operations (``x = 1 + t / total - cycle``, then ``x / ratio`` or
    ``(x - 1) / (ratio - 1)``, only the branch taken: the other may divide by 0); on arrays
    the same from the exact remainder ``m`` (:func:`cycle_position`) without cancellation:
    ``m / up`` or ``(total - m) / (total - up)``.

    >>> from schedules._ops import PY
    >>> [cyclic_phase(t, 2.0, 4.0, PY) for t in (0, 1, 2, 3, 4)]
    [(1, 0.0), (1, 0.5), (1, 1.0), (1, 0.5), (2, 0.0)]
    """
    ratio = up / total
    if ops.host:
        cycle = ops.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        return cycle, x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    n, m = cycle_position(t, total, ops)
    h = ops.where(m / total <= ratio, ops.div(m, up), ops.div(total - m, total - up))
    return n + 1, ops.clip(h, 0.0, 1.0)  # float32 far out (t > 2**24) may stray from [0, 1]


def one_cycle_ends(total: Any, pct_start: Any, three_phase: bool) -> list[Any]:
    """The last step of each phase of PyTorch's ``OneCycleLR`` over ``total`` steps, as it
    lays them out: ``pct_start * total - 1`` (the rise), ``2 * pct_start * total - 2`` (the
    fall, with ``three_phase``) and ``total - 1`` (the annealing).

    >>> one_cycle_ends(100, 0.25, False), one_cycle_ends(100, 0.25, True)
    ([24.0, 99], [24.0, 48.0, 99])
    """
    rise = pct_start * total - 1
    if three_phase:
        return [rise, 2 * pct_start * total - 2, total - 1]
    return [rise, total - 1]


def cycle_of(t: Any, P: Any, m: Any, ops: Ops) -> tuple[Any, Any, Any]:
    """``(n, S_n, T_n)`` for cycles of lengths ``T_n = P * m ** n``: the index of
    the cycle holding step ``t >= 0``, its first step and its length."""
    geometric = m != 1
    m_safe = ops.where(geometric, m, 2.0)
    n_geo = ops.floor(ops.div(ops.log(t * (m_safe - 1) / P + 1), ops.log(m_safe)))
    n = ops.where(geometric, n_geo, ops.floor(ops.div(t, P)))

    def start(k: Any) -> Any:
        return ops.where(geometric, P * (ops.pow(m_safe, k) - 1) / (m_safe - 1), k * P)

    # The logarithm can land one cycle off at a boundary; settle it exactly.
    n = ops.where(start(n) > t, n - 1, n)
    n = ops.where(start(n + 1) <= t, n + 1, n)
    return n, start(n), P * ops.pow(ops.where(geometric, m_safe, 1.0), n)


def decay_shape(shape: str, p: Any, ops: Ops) -> Any:
    """A decay from 1 at progress ``p = 0`` to 0 at ``p = 1``, by ``shape``: ``linear``
    ``1 - p``, ``cosine`` :func:`half_cos`, ``1-sqrt`` (Megatron's ``minus_sqrt``)
    ``1 - sqrt(p)``, ``exponential`` (Megatron's) ``2 * 0.5 ** p - 1``. The decay of ``wsd``,
    of transformers' WSD (but its ``cosine``, which has ``num_cycles``) and Megatron's
    ``--lr-decay-style`` / ``--lr-wsd-decay-style``; on the host in their operation order.

    >>> from schedules._ops import PY
    >>> [decay_shape(s, 0.25, PY) for s in ("linear", "1-sqrt")], decay_shape("exponential", 1, PY)
    ([0.75, 0.5], 0.0)
    """
    if shape == "linear":
        return 1.0 - p
    if shape == "cosine":
        return half_cos(p, ops)
    if shape == "exponential":
        return (2.0 * ops.pow(0.5, p)) - 1.0
    return 1.0 - ops.sqrt(p)  # 1-sqrt, minus_sqrt
