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
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._core import Schedule
from ._ops import PY, Ops

__all__ = ["SAFE_TICKS", "NoClosedForm", "Recurrence"]

#: a closed form is trusted to 1e-12 of a recurrence after at most this many rounded updates.
SAFE_TICKS = 1000


class NoClosedForm(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised by ``_closed`` when a node has no closed form (the replay is used)."""


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

    # -- host replay --------------------------------------------------------
    def _replay(self, k: int) -> float:
        cache = self.__dict__.get("_replay_cache")
        if cache is None:
            cache = [array("d"), None, None]  # values, iterator, error
            object.__setattr__(self, "_replay_cache", cache)
        vals = cache[0]
        if k < len(vals):
            return vals[k]
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
                    tab[i] = self._replay(i)
                except ValueError:
                    break
            object.__setattr__(self, "_table_cache", tab)
        return tab

    # -- evaluation ---------------------------------------------------------
    def _eval(self, t: Any, ops: Ops) -> Any:
        if ops.host:
            if math.isnan(t) or math.isinf(t):
                raise ValueError(f"{type(self).__name__}: step={t!r} must be finite")
            k = math.floor(t) if t > 0 else 0
            if self._closed_host_ok(k):
                try:
                    return float(self._closed(float(k), PY))
                except NoClosedForm:
                    pass
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

    def _traced(self, t: Any, ops: Ops) -> Any:
        k = ops.floor(ops.maximum(t, 0.0))
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
            out = jnp.asarray(out, k.dtype) + 0.0 * k
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
