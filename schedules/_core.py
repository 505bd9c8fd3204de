"""The :class:`Schedule` base: an immutable pytree that maps a step to a value.

A schedule's fields are its constructor's arguments (``_fields``, in positional order,
read from the signature unless a class lists them); ``_static`` names the structural ones.
All other fields are pytree leaves (numbers, tuples of numbers, or child schedules), so a
batch of schedules can be vmapped and a jitted function taking a schedule does not
recompile when only hyperparameter values change.

A subclass implements ``_eval(t, ops)``: ``t`` is the step as a float (Python
float, NumPy float64 array or JAX float array) and ``ops`` the backend from
:mod:`schedules._ops`. Subclasses validate in ``__init__`` and store fields
with :meth:`Schedule._set`; unflattening bypasses ``__init__`` so traced or
batched leaves are never validated.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any, ClassVar, Self

import jax
import numpy as np

from ._ops import JNP, NP, PY, Ops
from ._validate import Checks

__all__ = ["REGISTRY", "Schedule", "as_schedule"]

#: spec/config name -> class, filled by ``Schedule.__init_subclass__``.
REGISTRY: dict[str, type[Schedule]] = {}

_HOST_SCALARS = (int, float, np.integer, np.floating)


def _is_host_number(x: Any) -> bool:
    return isinstance(x, _HOST_SCALARS) and not isinstance(x, bool)


class Schedule:
    """A learning-rate schedule: a pure, immutable function ``step -> value``.

    Call it on a Python int or float (returns a Python float, computed with
    :mod:`math` in float64, no JAX dispatch), on a NumPy array (float64 array),
    or on a JAX array or tracer (inside ``jit``, ``vmap``, ``grad``, or as
    optax's ``learning_rate``).

    Schedules compose with ``*`` and ``+`` (with numbers or other schedules)
    and ``/`` by a number; see :mod:`schedules` for the combinators.
    """

    _name: ClassVar[str] = ""
    _fields: ClassVar[tuple[str, ...]] = ()
    _static: ClassVar[frozenset[str]] = frozenset()
    #: the argument checks, naming the schedule in their messages (its registered name)
    _check: ClassVar[Checks] = Checks("schedule")

    def __init_subclass__(
        cls, name: str | None = None, label: str | None = None, **kw: Any
    ) -> None:
        """Register a subclass under ``name`` (specs, configs, ``from_config``); its
        validation messages start with ``label`` (default: ``name``)."""
        super().__init_subclass__(**kw)
        if "_fields" not in cls.__dict__ and cls.__init__ is not object.__init__:
            cls._fields = _signature_fields(cls)
        if label is not None or name is not None:
            cls._check = Checks(label or name or "")
        if name is None:
            return
        if name in REGISTRY:
            raise TypeError(f"schedule name {name!r} registered twice")
        cls._name = name
        REGISTRY[name] = cls
        jax.tree_util.register_pytree_with_keys(
            cls, cls._tree_flatten_with_keys, cls._tree_unflatten, cls._tree_flatten
        )

    # -- construction -------------------------------------------------------
    def _set(self, **values: Any) -> None:
        for k, v in values.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; build a new schedule instead")

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed, built by the constructor (so validated again).

        >>> import schedules as S
        >>> S.cosine(1.0, 0.0, 100).replace(steps=200, end=0.1)
        cosine(init=1.0, end=0.1, steps=200)
        >>> S.cosine(1.0, 0.0, 100).replace(steps=-1)
        Traceback (most recent call last):
        ...
        ValueError: cosine: steps=-1 must be >= 0
        """
        from ._serialize import _build

        cls = type(self)
        for k, v in changes.items():
            if k not in cls._fields:
                raise ValueError(
                    f"{cls._check.where}: replace() got {k}={v!r}, which is not one of its "
                    f"fields ({', '.join(cls._fields)})"
                )
        return _build(cls, {f: changes.get(f, getattr(self, f)) for f in cls._fields})

    # -- pytree -------------------------------------------------------------
    def _leaf_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self._fields if f not in self._static)

    def _tree_flatten(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        leaves = tuple(getattr(self, f) for f in self._leaf_fields())
        static = tuple(getattr(self, f) for f in self._fields if f in self._static)
        return leaves, static

    def _tree_flatten_with_keys(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        leaves, static = self._tree_flatten()
        keyed = tuple((jax.tree_util.GetAttrKey(f), v) for f, v in zip(self._leaf_fields(), leaves))
        return keyed, static

    @classmethod
    def _tree_unflatten(cls, static: tuple[Any, ...], leaves: tuple[Any, ...]) -> Schedule:
        obj = object.__new__(cls)
        it_leaves, it_static = iter(leaves), iter(static)
        for f in cls._fields:
            object.__setattr__(obj, f, next(it_static) if f in cls._static else next(it_leaves))
        return obj

    # -- evaluation ---------------------------------------------------------
    def _eval(self, t: Any, ops: Ops) -> Any:
        raise NotImplementedError

    _host_ok_cache: bool | None = None

    def _host_ok(self) -> bool:
        """Whether every hyperparameter is a plain number (so the math/NumPy paths apply)."""
        ok = self._host_ok_cache
        if ok is None:
            ok = all(_is_host_number(x) for x in jax.tree_util.tree_leaves(self))
            ok = ok and self._host_capable()
            object.__setattr__(self, "_host_ok_cache", ok)
        return ok

    def _host_capable(self) -> bool:
        """Overridden by nodes that can only run under JAX (Python callables)."""
        return all(c._host_ok() for c in self.children())

    def __call__(self, step: Any) -> Any:
        # type() first: the host query is the hot path of logging and facades.
        host = type(step) is int or type(step) is float or _is_host_number(step)
        if host and (self._host_ok_cache or self._host_ok()):
            return float(self._eval(float(step), PY))
        if isinstance(step, np.ndarray) and self._host_ok():
            with np.errstate(all="ignore"):
                return np.asarray(self._eval(NP.asfloat(step), NP), dtype=np.float64)
        return self._eval(JNP.asfloat(step), JNP)

    def children(self) -> tuple[Schedule, ...]:
        """The schedules this one is built from (empty for primitives)."""
        out: list[Schedule] = []
        for f in self._fields:
            v = getattr(self, f)
            if isinstance(v, Schedule):
                out.append(v)
            elif isinstance(v, tuple):
                out.extend(x for x in v if isinstance(x, Schedule))
        return tuple(out)

    # -- algebra ------------------------------------------------------------
    def __mul__(self, other: Any) -> Schedule:
        from ._combinators import flat_multiply, folded_scale

        if isinstance(other, Schedule):
            return flat_multiply(self, other)
        if _is_host_number(other) or _is_array_scalar(other):
            return folded_scale(self, other)
        return NotImplemented

    def __rmul__(self, other: Any) -> Schedule:
        return self.__mul__(other)

    def __truediv__(self, other: Any) -> Schedule:
        from ._combinators import folded_scale

        if _is_host_number(other):
            if other == 0:
                raise ValueError("cannot divide a schedule by 0")
            return folded_scale(self, 1.0 / float(other))
        return NotImplemented

    def __add__(self, other: Any) -> Schedule:
        from ._combinators import flat_add
        from ._primitives import constant

        if isinstance(other, Schedule):
            return flat_add(self, other)
        if _is_host_number(other):
            return flat_add(self, constant(other))
        return NotImplemented

    def __radd__(self, other: Any) -> Schedule:
        return self.__add__(other)

    # -- introspection ------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        """A JSON-serializable dict; :func:`schedules.from_config` inverts it."""
        from ._serialize import to_config

        return to_config(self)

    def __repr__(self) -> str:
        from ._serialize import to_spec

        return to_spec(self)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_config_or_identity() == other.to_config_or_identity()  # type: ignore[attr-defined]

    def to_config_or_identity(self) -> Any:
        try:
            return self.to_config()
        except ValueError:
            return id(self)

    def __hash__(self) -> int:
        return hash(repr(self))


def _signature_fields(cls: type[Schedule]) -> tuple[str, ...]:
    """The constructor's parameters in order (``*args`` under ``cls._varargs``, if set;
    ``**kwargs`` left out): a schedule's fields, unless the class lists ``_fields``."""
    out = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind is p.VAR_KEYWORD:
            continue
        var = p.kind is p.VAR_POSITIONAL and getattr(cls, "_varargs", None)
        out.append(var or p.name)
    return tuple(out)


def _is_array_scalar(x: Any) -> bool:
    return isinstance(x, jax.Array) and x.ndim == 0


def as_schedule(x: Schedule | float | int | Callable[[Any], Any]) -> Schedule:
    """Coerce a number (constant schedule) or a schedule to a :class:`Schedule`.

    >>> as_schedule(0.5)(10)
    0.5
    """
    from ._primitives import constant

    if isinstance(x, Schedule):
        return x
    if _is_host_number(x):
        return constant(x)
    if isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x)):
        return constant(float(x))
    raise ValueError(f"expected a Schedule or a number, got {x!r} of type {type(x).__name__}")
