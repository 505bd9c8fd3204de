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

__all__ = ["OPERATORS", "REGISTRY", "Schedule", "as_schedule", "build", "to_config", "to_spec"]

#: spec/config name -> class, filled by ``Schedule.__init_subclass__``.
REGISTRY: dict[str, type[Schedule]] = {}

#: the functions behind ``*``, ``/`` and ``+`` ("multiply", "scale", "add"): the combinators
#: module registers them when it loads, so that this base module never imports upwards.
OPERATORS: dict[str, Callable[..., Schedule]] = {}


def _operator(name: str) -> Callable[..., Schedule]:
    try:
        return OPERATORS[name]
    except KeyError:
        raise RuntimeError(
            f"schedule operator {name!r} is not registered: import schedules (the package)"
        ) from None


def _constant(value: Any) -> Schedule:
    return _schedule_class("constant")(value)


def _schedule_class(name: str) -> type[Schedule]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise RuntimeError(
            f"schedule {name!r} is not registered: import schedules (the package)"
        ) from None

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
        cls = type(self)
        for k, v in changes.items():
            if k not in cls._fields:
                raise ValueError(
                    f"{cls._check.where}: replace() got {k}={v!r}, which is not one of its "
                    f"fields ({', '.join(cls._fields)})"
                )
        return build(cls, {f: changes.get(f, getattr(self, f)) for f in cls._fields})

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
        try:
            return self._eval(JNP.asfloat(step), JNP)
        except OverflowError:  # a step count beyond int32 (the host path and x64 take it)
            raise ValueError(
                f"{self!r}: a step count of this schedule is beyond int32, which JAX's default "
                "int32/float32 path cannot take: evaluate on the host (a Python int or a "
                "NumPy array) or enable jax_enable_x64"
            ) from None

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
        if isinstance(other, Schedule):
            return _operator("multiply")(self, other)
        if _is_host_number(other) or _is_array_scalar(other):
            return _operator("scale")(self, other)
        return NotImplemented

    def __rmul__(self, other: Any) -> Schedule:
        return self.__mul__(other)

    def __truediv__(self, other: Any) -> Schedule:
        if _is_host_number(other):
            if other == 0:
                raise ValueError("cannot divide a schedule by 0")
            return _operator("scale")(self, 1.0 / float(other))
        return NotImplemented

    def __add__(self, other: Any) -> Schedule:
        if isinstance(other, Schedule):
            return _operator("add")(self, other)
        if _is_host_number(other):
            return _operator("add")(self, _constant(other))
        return NotImplemented

    def __radd__(self, other: Any) -> Schedule:
        return self.__add__(other)

    # -- introspection ------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        """A JSON-serializable dict; :func:`schedules.from_config` inverts it."""
        return to_config(self)

    def __repr__(self) -> str:
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
    if isinstance(x, Schedule):
        return x
    if _is_host_number(x):
        return _constant(x)
    if isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x)):
        return _constant(float(x))
    raise ValueError(f"expected a Schedule or a number, got {x!r} of type {type(x).__name__}")


# -- the generic encoder (configs and the text spec); the parsers live in _serialize --------


def _defaults(cls: type[Schedule]) -> dict[str, Any]:
    sig = inspect.signature(cls.__init__)
    return {
        k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty
    }


def _not_serializable(s: Schedule) -> ValueError:
    return ValueError(
        f"{type(s).__name__} wraps a Python callable and cannot be serialized; "
        "write it as schedules.expr('...') instead (a safe expression of `step`)"
    )


def _encode(v: Any) -> Any:
    if isinstance(v, Schedule):
        return to_config(v)
    if isinstance(v, tuple):
        return [_encode(x) for x in v]
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, int):
        return int(v)
    try:
        return float(v)
    except TypeError:
        raise ValueError(f"cannot serialize a traced or batched value {v!r}") from None


def to_config(s: Schedule) -> dict[str, Any]:
    """``{"type": name, field: value, ...}`` with nested schedules as nested dicts."""
    if s._name == "lambda":
        raise _not_serializable(s)
    cfg: dict[str, Any] = {"type": s._name}
    for f in s._fields:
        cfg[f] = _encode(getattr(s, f))
    return cfg


def build(cls: type[Schedule], args: dict[str, Any]) -> Schedule:
    var = getattr(cls, "_varargs", None)
    if var is not None:
        pos = args.pop(var, [])
        if not isinstance(pos, (list, tuple)):
            raise ValueError(f"{cls._name}: {var}={pos!r} must be a list of schedules")
        return cls(*pos, **args)
    return cls(**args)


def _fmt(v: Any) -> str:
    if isinstance(v, Schedule):
        return to_spec(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else f"float({str(v)!r})"
    return repr(v)


def to_spec(s: Schedule) -> str:
    """The text spec of ``s``: parameters that differ from their defaults, by name."""
    defaults = _defaults(type(s))
    var = getattr(s, "_varargs", None)
    parts: list[str] = []
    for f in s._fields:
        v = getattr(s, f)
        if f == var:
            parts.extend(_fmt(x) for x in v)
        elif f == "fn":
            parts.append(getattr(v, "__name__", "fn"))
        elif f in defaults and _same(v, defaults[f]):
            continue
        else:
            parts.append(f"{f}={_fmt(v)}")
    return f"{s._name}({', '.join(parts)})"


def _same(a: Any, b: Any) -> bool:
    try:
        return (type(a) is type(b) and bool(a == b)) or (a is None and b is None)
    except Exception:  # a traced value: never equal to a default
        return False
