"""Recurrence: a schedule whose exact values come from replaying a recurrence.

Some schedules (PyTorch's "chainable" schedulers, which update the optimizer's
learning rate in place) equal a closed form only up to rounding. A
:class:`Recurrence` node keeps both:

* **host path** (Python int steps): the exact recurrence, replayed once and
  memoized in a float64 array, so sequential queries cost O(1) amortized and any
  step already seen is an O(1) lookup. Where a subclass knows its closed form is
  within 1e-12 of the recurrence at step ``k`` (``_closed_host_ok``), the
  closed form is used directly instead (O(1), no replay).
* **traced path** (JAX arrays, ``jit``/``vmap``): the closed form, O(1), when
  one exists. In float64 (``jax_enable_x64``) the closed form is used only if it
  is exact (``_closed_exact``); otherwise, and when no closed form exists, the
  value comes from the host replay through ``jax.pure_callback`` (exact, O(1)
  amortized for sequential steps, but a host round trip).
* ``horizon=N``: a table of the exact values of steps ``0 .. N-1`` is computed
  on the host once and embedded in the traced computation (an O(1) gather).
  Steps at or beyond the horizon fall back to the rule above.

Where the recurrence cannot go on (PyTorch raises), the host path raises
``ValueError`` and the traced path returns NaN.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._core import Schedule
from .._ops import JNP, PY, Ops
from .._validate import FLOAT32_MAX as _F32_MAX

__all__ = [
    "COS_LOOP_BUDGET",
    "REPLAY_GAP",
    "SAFE_TICKS",
    "TICK_BUDGET",
    "Chain",
    "CosRun",
    "NoClosedForm",
    "Recurrence",
]

#: a closed form is trusted to 1e-12 of a recurrence after at most this many rounded updates.
SAFE_TICKS = 1000

#: the most steps one host query replays step by step in Python (~1-2 us a step: well under
#: a second); a query further past the replayed steps raises ValueError rather than hang.
REPLAY_GAP = 2**18

#: the most rounded multiplications one host query performs at C speed (a :class:`Chain`:
#: ~10-30 ns each with their factors); further, the closed form answers (see
#: :meth:`Chain.value`).
TICK_BUDGET = 2**24


class Chain:
    """``v[n] = v[n - 1] * f[n]`` (float64, rounded after every multiplication, in order),
    ``v[0] = v0``: torch's loop of ``lr = lr * factor`` at C speed.

    ``factors(a, b)`` returns the factors of ticks ``a .. b - 1`` as a float64 array of shape
    ``(b - a, m)``: ``m`` multiplications per tick, applied left to right (a
    ``ChainedScheduler`` steps each child over the running lr in turn), computed with the
    same float64 operations torch performs. ``np.multiply.accumulate`` over
    ``[v0, f[1, 0], ..., f[1, m-1], f[2, 0], ...]`` is a sequential left fold, so it performs
    exactly torch's roundings (basic IEEE operations are correctly rounded in NumPy and
    Python alike). ``last``: the last tick whose factors may differ from 1 (None: no end).
    ``period``: for ticks past ``steady``, the factors repeat with this period (or None):
    then once ``v`` is the same at two ticks ``period`` apart, it is periodic from there on
    (underflow to 0 and the rounding fixed point of ``v * gamma == v`` included), and every
    later tick is answered without computing.

    Values are computed in chunks of ``CHUNK`` ticks; a checkpoint is kept at each chunk
    boundary and the last chunk is kept whole, so sequential queries are O(1) and a query
    far ahead costs ``O(ticks / 1e8)`` seconds.
    """

    CHUNK = 1 << 12

    def __init__(
        self,
        v0: float,
        factors: Any,
        last: int | None = None,
        steady: int = 0,
        period: int | None = None,
        budget: int = TICK_BUDGET,
    ) -> None:
        self.factors = factors
        self.budget = budget
        self.last = last
        # factors before the last tick are not periodic: look for a cycle only after it
        self.steady = steady if last is None else max(steady, last)
        self.period = period
        self.cps = [float(v0)]  # value at tick i * CHUNK
        self.cyc: tuple[int, np.ndarray] | None = None  # (start tick, one period of values)
        self.hot: tuple[int, np.ndarray] | None = None  # (chunk index, its CHUNK + 1 values)

    def _chunk(self, i: int) -> np.ndarray:
        """Values at ticks ``i * CHUNK .. (i + 1) * CHUNK`` (needs checkpoint ``i``)."""
        a = i * self.CHUNK
        f = np.asarray(self.factors(a + 1, a + self.CHUNK + 1), dtype=np.float64)
        m = f.shape[1]
        buf = np.empty(self.CHUNK * m + 1)
        buf[0] = self.cps[i]
        buf[1:] = f.ravel()
        with np.errstate(all="ignore"):  # inf * 0 is torch's NaN too (the lr check refuses it)
            np.multiply.accumulate(buf, out=buf)
        return buf[::m]

    def value(self, n: int) -> float:
        """``v[n]``; ValueError when more than ``budget`` ticks would be needed in this call
        (the caller answers with its closed form)."""
        if self.last is not None and n > self.last:
            n = self.last
        cyc = self.cyc
        if cyc is not None and n >= cyc[0]:
            return float(cyc[1][(n - cyc[0]) % len(cyc[1])])
        i, r = divmod(n, self.CHUNK)
        hot = self.hot
        if hot is not None and hot[0] == i:
            return float(hot[1][r])
        todo = (i - len(self.cps) + 2) * self.CHUNK
        if todo > self.budget:
            raise ValueError(
                f"tick {n} needs {todo:,} rounded multiplications (more than {self.budget:,} "
                "in one query)"
            )
        while len(self.cps) <= i:
            j = len(self.cps) - 1
            vals = hot[1] if hot is not None and hot[0] == j else self._chunk(j)
            self.hot = hot = (j, vals)
            if self._find_cycle(j, vals):
                return self.value(n)
            self.cps.append(float(vals[-1]))
        vals = self._chunk(i)
        self.hot = (i, vals)
        if self._find_cycle(i, vals):
            return self.value(n)
        return float(vals[r])

    def _find_cycle(self, j: int, vals: np.ndarray) -> bool:
        P = self.period
        a = j * self.CHUNK
        if self.last is not None and a + self.CHUNK >= self.last:
            # constant from the last tick on
            self.cyc = (self.last, np.asarray([vals[self.last - a]]))
            return True
        if P is None or P > self.CHUNK // 2 or a + self.CHUNK - P < self.steady:
            return False
        lo = max(self.steady - a, 0)
        same = vals[lo + P :] == vals[lo : len(vals) - P]
        if not same.any():
            return False
        s = lo + int(np.argmax(same))
        self.cyc = (a + s, np.asarray(vals[s : s + P]).copy())
        return True


#: the most steps of CosineAnnealingLR's recursion one host query runs in a Python loop (with
#: ``eta_min != 0``, where the steps are affine, not a product): ~0.1 us each.
COS_LOOP_BUDGET = 2**22


class CosRun:
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
        self.chunks: list[list[float]] = []
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
            self.js, self.starts, self.chunks, self.end = js, [js], [[float(vs)]], js
        if j > self.end:
            budget = COS_LOOP_BUDGET if self.eta else TICK_BUDGET // 4
            if j - self.end > budget:
                return None
            target = min(js + 2 * T, max(j, self.end + 4096))
            more = self._steps(self.end, float(self.chunks[-1][-1]), target)
            self.starts.append(self.end + 1)
            self.chunks.append(more.tolist())  # Python floats: a query is a list index
            self.end = target
        i = bisect_right(self.starts, j) - 1
        return self.chunks[i][j - self.starts[i]]

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


class NoClosedForm(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised by ``_closed`` when a node has no closed form (the replay is used)."""


def _no_fast(k: int) -> None:
    """No fast host path: the full one answers."""
    return None


def fraction_refused(where: str, t: float) -> str:
    """The refusal of a fractional step where torch's ``step(epoch)`` has none."""
    return (
        f"{where}: step={t!r} is not a whole step; torch's scheduler.step(epoch) is deprecated "
        "(since torch 1.4) and only CosineAnnealingWarmRestarts defines a fractional epoch: "
        "pass the number of scheduler.step() calls (an integer); a fractional step is never "
        "floored"
    )


class _Integral:
    """A float step array known to hold integers >= 0 (see :meth:`Recurrence.__call__`)."""

    def __init__(self, k: Any) -> None:
        self.k = k


class Recurrence(Schedule):
    """Abstract base (not registered). Subclasses implement ``_replay_iter``,
    and optionally ``_closed``, ``_closed_host_ok`` and ``_closed_exact``; they
    declare a ``horizon`` field (``None`` or a step count)."""

    horizon: Any = None

    # -- to implement -------------------------------------------------------
    def _replay_iter(self) -> Iterator[float]:
        """Exact values at steps 0, 1, 2, ... (infinite; may raise ValueError)."""
        raise NotImplementedError

    def _closed(self, k: Any, ops: Ops) -> Any:
        """Closed form at the (integral, >= 0) step ``k``; NoClosedForm if none."""
        raise NoClosedForm

    def _closed_host_ok(self, k: int) -> bool:
        """Whether ``_closed(k, PY)`` is within 1e-12 of the recurrence at ``k``."""
        return False

    def _closed_exact(self) -> bool:
        """Whether the closed form is within 1e-12 of the recurrence at every step."""
        return False

    def _fast_host(self, k: int) -> float | None:
        """The exact recurrence at step ``k`` without replaying every step (a
        :class:`Chain` over the steps where the lr changes, ...), or None."""
        return None

    # -- host replay --------------------------------------------------------
    def _replay(self, k: int) -> float:
        cache = self.__dict__.get("_replay_cache")
        if cache is None:
            cache = [array("d"), None, None]  # values, iterator, error
            object.__setattr__(self, "_replay_cache", cache)
        vals = cache[0]
        if k < len(vals):
            return vals[k]
        if k - len(vals) > REPLAY_GAP:
            raise ValueError(
                f"{type(self).__name__}: step {k} is {k - len(vals):,} steps past those replayed "
                f"so far; replaying torch's recurrence step by step (it has no closed form here) "
                f"is limited to {REPLAY_GAP:,} steps a query: query the steps in order, or use "
                "horizon=N on the array path"
            )
        if cache[2] is not None:
            raise ValueError(f"{cache[2]} (asked for step {k})")
        if cache[1] is None:
            cache[1] = self._replay_iter()
        it = cache[1]
        try:
            while len(vals) <= k:
                vals.append(next(it))
        except ValueError as e:
            cache[2] = e
            raise
        return vals[k]

    def _table(self) -> np.ndarray:
        tab = self.__dict__.get("_table_cache")
        if tab is None:
            n = int(self.horizon)
            tab = np.full(n, np.nan)
            for i in range(n):
                try:
                    v = self._replay(i)
                except ValueError:
                    break
                # torch's numbers, negative ones included; beyond float32 (inf there): NaN,
                # as the host raises there
                tab[i] = v if abs(v) <= _F32_MAX else math.nan
            object.__setattr__(self, "_table_cache", tab)
        return tab

    # -- evaluation ---------------------------------------------------------
    def _eval(self, t: Any, ops: Ops) -> Any:
        if ops.host:
            if math.isnan(t) or math.isinf(t):
                raise ValueError(f"{type(self).__name__}: step={t!r} must be finite")
            k = math.floor(t) if t > 0 else 0
            if k != t and t > 0:  # never floored silently (issue 24)
                v = self._fractional(t, PY)
                if v is None:
                    raise ValueError(fraction_refused(self._check.where, t))
                return v
            if self._closed_host_ok(k):
                try:
                    return float(self._closed(float(k), PY))
                except NoClosedForm:
                    pass
            fast = self._fast_host(k)
            if fast is not None:
                return fast
            return self._replay(k)
        if ops.name == "numpy":
            flat = [self._host_or_nan(float(x)) for x in np.ravel(t)]
            return np.asarray(flat, dtype=np.float64).reshape(np.shape(t))
        return self._traced(t, ops)

    def _host_or_nan(self, t: float) -> float:
        try:
            return float(self._eval(t, PY))
        except ValueError:
            return math.nan

    #: the host query at a Python int step, built once (:meth:`_build_int_fast`): a value, or
    #: None where the full path must answer (far out, errors, a step before 0)
    _int_fast: Any = None

    def _build_int_fast(self) -> Any:
        """A callable ``k -> value or None`` for Python int steps with every check done once
        here rather than per query; None where a class has none."""
        return None

    def __call__(self, step: Any) -> Any:
        if type(step) is int:  # the hot host query (logging, a torch-style loop)
            fast = self._int_fast
            if fast is None:
                fast = (self._host_ok() and self._build_int_fast()) or _no_fast
                object.__setattr__(self, "_int_fast", fast)
            v = fast(step)
            if v is not None:
                return v
        # An integer JAX step is already integral: clamp it in int and skip the float floor
        # (the steps of a training loop are int32 counts; this is the hot array path).
        if isinstance(step, jax.Array) and jnp.issubdtype(step.dtype, jnp.integer):
            k = JNP.asfloat(jnp.maximum(step, 0))
            return self._eval(_Integral(k), JNP)
        return super().__call__(step)

    def _fractional(self, t: Any, ops: Ops) -> Any:
        """The value at a fractional step ``t > 0``, as torch's ``step(t)`` gives it; None
        where torch's ``step(epoch)`` is deprecated or absent (the step is refused)."""
        return None

    def _traced(self, t: Any, ops: Ops) -> Any:
        if isinstance(t, _Integral):
            return self._traced_whole(t.k, ops)
        t = ops.maximum(t, 0.0)
        k = ops.floor(t)
        out = self._traced_whole(k, ops)
        frac = self._fractional(t, ops)
        # a fractional step where torch has none: NaN, as the host path raises there
        return jnp.where(k == t, out, jnp.nan if frac is None else jnp.asarray(frac, out.dtype))

    def _traced_whole(self, k: Any, ops: Ops) -> Any:
        exact64 = k.dtype == jnp.float64
        out = None
        if not exact64 or self._closed_exact():
            try:
                out = self._closed(k, ops)
            except NoClosedForm:
                out = None
            except jax.errors.JAXTypeError as e:
                if self._concrete():  # not a traced hyperparameter: a real bug, keep it
                    raise
                raise self._needs_concrete() from e
        if out is not None:
            out = jnp.asarray(out, k.dtype)
            if out.shape != k.shape:  # a constant: as many values as steps
                out = out + 0.0 * k
        if not self.horizon or not self._concrete():  # None or 0: no table
            return out if out is not None else self._callback(k)
        table = jnp.asarray(self._table(), k.dtype)
        n = table.shape[0]
        idx = jnp.clip(k, 0, max(n - 1, 0)).astype(jnp.int32)
        inside = table[idx]
        if out is not None:
            return jnp.where(k < n, inside, out)
        if k.ndim == 0:
            return jax.lax.cond(k < n, lambda kk: table[idx], self._callback, k)
        return jnp.where(k < n, inside, self._callback(k))

    def _concrete(self) -> bool:
        return self._host_ok()

    def _needs_concrete(self) -> ValueError:
        return ValueError(
            f"{type(self).__name__}: evaluating this schedule under JAX needs its exact "
            "recurrence, which needs concrete (not traced) hyperparameters; close over "
            "the schedule instead of passing it as a traced argument"
        )

    def _callback(self, k: Any) -> Any:
        if not self._concrete():
            raise self._needs_concrete()

        def host(kk: np.ndarray) -> np.ndarray:
            kk = np.asarray(kk)
            out = np.empty(kk.shape, np.float64)
            for i, x in np.ndenumerate(kk):
                out[i] = self._host_or_nan(float(x))
            return out.astype(kk.dtype)

        spec = jax.ShapeDtypeStruct(k.shape, k.dtype)
        return jax.pure_callback(host, spec, k, vmap_method="expand_dims")
