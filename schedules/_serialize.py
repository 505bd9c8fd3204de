"""Configs (JSON-ready dicts) and the text spec (the ``repr`` of a schedule).

The text spec is a call expression: ``name(arg, ..., key=value)`` where a name
is any registered schedule (``cosine``, ``join``, ...), an argument is a
number, a string, ``True``/``False``/``None``, a list ``[...]`` or another
schedule; ``*``, ``/`` and ``+`` combine schedules and numbers. Positional
arguments follow each schedule's parameter order. Example::

    join(linear(0, 1, 100), cosine(1, 0.1, 900), at=[100])
    0.5 * warmup(cosine(3e-4, 3e-5, 9000), 1000)

It is read by :func:`parse` with :func:`ast.parse` plus a whitelist, never
``eval``; ``repr(s)`` writes it back, so ``parse(repr(s)) == s``.
"""

from __future__ import annotations

import ast
import reprlib
from typing import Any

from ._core import REGISTRY, Schedule, build, to_config, to_spec
from ._expr import SpecError, caret, number_literal, parse_text

__all__ = ["from_config", "parse", "to_config", "to_spec"]

_MAX_CONFIG_DEPTH = 64


def from_config(cfg: Any, _depth: int = 0) -> Schedule:
    """Rebuild a schedule from :func:`to_config`'s output (validating every field)."""
    if _depth > _MAX_CONFIG_DEPTH:
        raise ValueError("schedule config is nested too deeply")
    if not isinstance(cfg, dict):
        raise ValueError(
            f"schedule config must be a dict with a 'type', got {reprlib.repr(cfg)}"
        )
    name = cfg.get("type")
    cls = REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(
            f"schedule config: unknown type {name!r}; known: {', '.join(sorted(REGISTRY))}"
        )
    if name == "lambda":
        raise ValueError(
            "schedule config: 'lambda' (a Python callable) cannot be loaded; use 'expr'"
        )
    unknown = set(cfg) - set(cls._fields) - {"type"}
    if unknown:
        raise ValueError(
            f"schedule config for {name!r}: unknown field(s) {sorted(unknown)}; "
            f"fields are {list(cls._fields)}"
        )

    def dec(v: Any, depth: int) -> Any:
        if depth > _MAX_CONFIG_DEPTH:
            raise ValueError(
                f"schedule config for {name!r}: nested more than {_MAX_CONFIG_DEPTH} levels deep"
            )
        if isinstance(v, dict):
            return from_config(v, depth + 1)
        if isinstance(v, list):
            return [dec(x, depth + 1) for x in v]
        return v

    args = {k: dec(v, _depth) for k, v in cfg.items() if k != "type"}
    try:
        return build(cls, args)
    except TypeError as e:
        raise ValueError(f"schedule config for {name!r}: {e}") from None


# -- parsing ------------------------------------------------------------------------------


def parse(text: str) -> Schedule:
    """Parse a text spec (see this module's docstring) into a schedule.

    >>> import schedules as S
    >>> s = S.parse("join(linear(0, 1, 100), cosine(1, 0.1, 900), at=[100])")
    >>> s(50), s(100)
    (0.5, 1.0)
    """
    node = parse_text(text, "spec")
    v = _value(node, text)
    if not isinstance(v, Schedule):
        if isinstance(v, (int, float)):
            return REGISTRY["constant"](v)
        raise caret(text, 0, "spec: expected a schedule such as cosine(1e-3, 0, 1000)")
    return v


def _value(node: ast.AST, text: str) -> Any:
    col = getattr(node, "col_offset", 0)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, (str, bool)) or node.value is None:
            return node.value
        return number_literal(node, text, "spec")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand, text)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise caret(text, col, "spec: a sign applies to numbers only")
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(e, text) for e in node.elts]
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Add, ast.Div)):
        a, b = _value(node.left, text), _value(node.right, text)
        if not (isinstance(a, Schedule) or isinstance(b, Schedule)):
            raise caret(text, col, "spec: arithmetic needs a schedule on one side")
        try:
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Add):
                return a + b
            if not isinstance(a, Schedule):
                raise caret(text, col, "spec: only a schedule can be divided (by a number)")
            return a / b
        except (TypeError, ZeroDivisionError) as e:
            raise caret(text, col, f"spec: {e}") from None
        except SpecError:
            raise
        except ValueError as e:
            raise caret(text, col, f"spec: {e}") from None
    if isinstance(node, ast.Call):
        return _call(node, text)
    if isinstance(node, ast.Name):
        if node.id in REGISTRY:
            raise caret(text, col, f"spec: {node.id!r} needs arguments: {node.id}(...)")
        raise caret(text, col, f"spec: unknown name {node.id!r}")
    raise caret(text, col, f"spec: {type(node).__name__} is not allowed here")


def _call(node: ast.Call, text: str) -> Schedule:
    col = node.col_offset
    if not isinstance(node.func, ast.Name):
        raise caret(text, col, "spec: expected a schedule name before '('")
    name = node.func.id
    if name == "float" and len(node.args) == 1 and not node.keywords:
        raise caret(text, col, "spec: non-finite numbers are not allowed")
    cls = REGISTRY.get(name)
    if cls is None or name == "lambda":
        known = ", ".join(sorted(n for n in REGISTRY if n != "lambda"))
        raise caret(text, col, f"spec: unknown schedule {name!r} (known: {known})")
    var = getattr(cls, "_varargs", None)
    params = [f for f in cls._fields if f != var]
    pos = [_value(a, text) for a in node.args]
    for a in node.args:
        if isinstance(a, ast.Starred):
            raise caret(text, a.col_offset, "spec: '*' unpacking is not allowed")
    kwargs: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise caret(text, kw.value.col_offset, "spec: '**' unpacking is not allowed")
        if kw.arg not in cls._fields or kw.arg == var:
            allowed = ", ".join(params)
            raise caret(
                text,
                kw.value.col_offset - len(kw.arg) - 1,
                f"spec: {name}() has no parameter {kw.arg!r} (parameters: {allowed})",
            )
        kwargs[kw.arg] = _value(kw.value, text)
    try:
        if var is not None:
            return cls(*pos, **kwargs)
        if len(pos) > len(params):
            raise caret(
                text,
                node.args[len(params)].col_offset,
                f"spec: {name}() takes at most {len(params)} positional arguments",
            )
        for f, v in zip(params, pos):
            if f in kwargs:
                raise caret(text, col, f"spec: {name}() got {f!r} twice")
            kwargs[f] = v
        return cls(**kwargs)
    except SpecError:
        raise
    except (ValueError, TypeError) as e:
        raise caret(text, col, f"spec: {e}") from None
