"""Safe expression lambdas: ``expr("0.95 ** (step // 10)")``.

The text is parsed with :func:`ast.parse` (which only builds a syntax tree,
nothing runs) and every node is checked against a small grammar before it is
compiled into a closure over the backend ops. Nothing is ever ``eval``-ed.

Grammar: numbers; the names ``step``, ``pi``, ``e``; ``+ - * / // % **``;
unary ``+ -``; comparisons ``< <= > >= == !=`` (1.0 when true, else 0.0);
``a if cond else b``; ``and``/``or``/``not`` on comparisons; and the functions
``min max abs sqrt exp log cos sin tanh floor ceil clip``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

from ._core import Schedule
from ._ops import PY, Ops
from ._validate import fail

__all__ = ["SpecError", "caret", "expr"]

MAX_LENGTH = 2000
MAX_DEPTH = 64

Compiled = Callable[[Any, Ops], Any]


class SpecError(ValueError):
    """A text (expression or schedule spec) that does not parse; says where."""


def caret(text: str, col: int, msg: str) -> SpecError:
    """A :class:`SpecError` that quotes ``text`` and points at column ``col`` (0-based)."""
    col = max(0, min(col, len(text)))
    line = text.replace("\n", " ")
    return SpecError(f"{msg} at column {col + 1}:\n  {line}\n  {' ' * col}^")


def parse_text(text: Any, what: str) -> ast.expr:
    """Parse ``text`` as one Python expression, with errors as :class:`SpecError`."""
    if not isinstance(text, str):
        raise fail(what, "text", text, "must be a string")
    if not text.strip():
        raise fail(what, "text", text, "must not be empty")
    if len(text) > MAX_LENGTH:
        raise fail(what, "text", text[:40] + "...", f"must be at most {MAX_LENGTH} characters")
    if "\x00" in text or "\n" in text or "\r" in text:
        raise caret(
            text,
            max(text.find("\x00"), text.find("\n"), text.find("\r")),
            f"{what}: line breaks and NUL characters are not allowed",
        )
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        offset = (e.offset or 1) - 1 + (len(text) - len(text.lstrip()))
        raise caret(text, offset, f"{what}: invalid syntax ({e.msg})") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise caret(text, 0, f"{what}: cannot parse ({type(e).__name__})") from None
    shift = len(text) - len(text.lstrip())
    _check_depth(tree.body, text, what, shift)
    for node in ast.walk(tree):
        if hasattr(node, "col_offset"):
            node.col_offset += shift
    return tree.body


def _check_depth(node: ast.AST, text: str, what: str, shift: int) -> None:
    stack = [(node, 0)]
    while stack:
        n, d = stack.pop()
        if d > MAX_DEPTH:
            raise caret(text, getattr(n, "col_offset", 0) + shift, f"{what}: nested too deeply")
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(n))


def number_literal(node: ast.AST, text: str, what: str) -> float | int:
    """A finite int or float constant (negation handled by the caller)."""
    v = node.value  # type: ignore[attr-defined]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise caret(text, node.col_offset, f"{what}: {v!r} is not a number")  # type: ignore[attr-defined]
    if isinstance(v, int) and abs(v) > 2**53:
        v = float(v) if abs(v) < 1e308 else math.inf
    if not math.isfinite(v):
        raise caret(text, node.col_offset, f"{what}: the number {v!r} is not finite")  # type: ignore[attr-defined]
    return v


def _pow(a: Any, b: Any, ops: Ops) -> Any:
    # Floats on the host: int ** int would build arbitrarily large integers.
    return ops.pow(float(a), float(b)) if ops.host else ops.pow(a, b)


def _mod(a: Any, b: Any, ops: Ops) -> Any:
    if ops.host:
        return math.nan if b == 0 else a % b
    return ops.xp.mod(a, b)  # type: ignore[attr-defined]


def _truth(x: Any, ops: Ops) -> Any:
    return (1.0 if x else 0.0) if ops.host else ops.where(x, 1.0, 0.0)


_BINOPS: dict[type, Callable[[Any, Any, Ops], Any]] = {
    ast.Add: lambda a, b, ops: a + b,
    ast.Sub: lambda a, b, ops: a - b,
    ast.Mult: lambda a, b, ops: a * b,
    ast.Div: lambda a, b, ops: ops.div(a * 1.0, b),
    ast.FloorDiv: lambda a, b, ops: ops.floordiv(a, b),
    ast.Mod: _mod,
    ast.Pow: _pow,
}

_CMPOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
}

# name -> (min args, max args, implementation)
_FUNCS: dict[str, tuple[int, int, Callable[..., Any]]] = {
    "min": (2, 8, lambda ops, *a: _fold(ops.minimum, a)),
    "max": (2, 8, lambda ops, *a: _fold(ops.maximum, a)),
    "abs": (1, 1, lambda ops, x: ops.abs(x)),
    "sqrt": (1, 1, lambda ops, x: ops.sqrt(x * 1.0)),
    "exp": (1, 1, lambda ops, x: ops.exp(x * 1.0)),
    "log": (1, 1, lambda ops, x: ops.log(x * 1.0)),
    "cos": (1, 1, lambda ops, x: ops.cos(x)),
    "sin": (1, 1, lambda ops, x: ops.sin(x)),
    "tanh": (1, 1, lambda ops, x: ops.tanh(x)),
    "floor": (1, 1, lambda ops, x: ops.floor(x)),
    "ceil": (1, 1, lambda ops, x: ops.ceil(x)),
    "clip": (3, 3, lambda ops, x, lo, hi: ops.clip(x, lo, hi)),
}

_CONSTS = {"pi": math.pi, "e": math.e}


def _fold(f: Callable[[Any, Any], Any], args: tuple[Any, ...]) -> Any:
    out = args[0]
    for a in args[1:]:
        out = f(out, a)
    return out


def compile_expr(node: ast.AST, text: str) -> Compiled:
    """Check ``node`` against the grammar and compile it to ``fn(step, ops)``."""
    what = "expr"
    col = getattr(node, "col_offset", 0)
    if isinstance(node, ast.Constant):
        v = number_literal(node, text, what)
        return lambda t, ops: v
    if isinstance(node, ast.Name):
        if node.id == "step":
            return lambda t, ops: t
        if node.id in _CONSTS:
            c = _CONSTS[node.id]
            return lambda t, ops: c
        raise caret(text, col, f"{what}: unknown name {node.id!r} (allowed: step, pi, e)")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        op = _BINOPS[type(node.op)]
        a, b = compile_expr(node.left, text), compile_expr(node.right, text)
        return lambda t, ops: op(a(t, ops), b(t, ops), ops)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        x = compile_expr(node.operand, text)
        if isinstance(node.op, ast.USub):
            return lambda t, ops: -x(t, ops)
        if isinstance(node.op, ast.Not):
            return lambda t, ops: 1.0 - _truth(x(t, ops) != 0, ops)
        return x
    if isinstance(node, ast.Compare) and all(type(o) in _CMPOPS for o in node.ops):
        parts = [compile_expr(node.left, text)] + [compile_expr(c, text) for c in node.comparators]
        fns = [_CMPOPS[type(o)] for o in node.ops]

        def cmp(t: Any, ops: Ops) -> Any:
            vals = [p(t, ops) for p in parts]
            out = _truth(fns[0](vals[0], vals[1]), ops)
            for i in range(1, len(fns)):
                out = out * _truth(fns[i](vals[i], vals[i + 1]), ops)
            return out

        return cmp
    if isinstance(node, ast.BoolOp):
        vals = [compile_expr(v, text) for v in node.values]
        is_and = isinstance(node.op, ast.And)

        def boolop(t: Any, ops: Ops) -> Any:
            bits = [_truth(v(t, ops) != 0, ops) for v in vals]
            out = bits[0]
            for b in bits[1:]:
                out = out * b if is_and else ops.maximum(out, b)
            return out

        return boolop
    if isinstance(node, ast.IfExp):
        c, a, b = (compile_expr(n, text) for n in (node.test, node.body, node.orelse))
        return lambda t, ops: ops.where(c(t, ops) != 0, a(t, ops), b(t, ops))
    if isinstance(node, ast.Call):
        allowed = ", ".join(sorted(_FUNCS))
        if not isinstance(node.func, ast.Name):
            raise caret(text, col, f"{what}: only named functions can be called ({allowed})")
        if node.func.id not in _FUNCS:
            raise caret(
                text, col, f"{what}: unknown function {node.func.id!r} (allowed: {allowed})"
            )
        if node.keywords:
            raise caret(
                text,
                node.keywords[0].value.col_offset,
                f"{what}: {node.func.id}() takes no keyword arguments",
            )
        lo, hi, impl = _FUNCS[node.func.id]
        if not lo <= len(node.args) <= hi:
            n = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise caret(
                text, col, f"{what}: {node.func.id}() takes {n} arguments, got {len(node.args)}"
            )
        args = [compile_expr(a, text) for a in node.args]
        return lambda t, ops: impl(ops, *(a(t, ops) for a in args))
    raise caret(text, col, f"{what}: {type(node).__name__} is not allowed in an expression")


class expr(Schedule, name="expr"):
    """A safe expression of ``step``, parsed without ``eval`` and serializable.

    See :mod:`schedules._expr` for the grammar. On the host, ``step`` is a
    Python int (for integral steps), so ``step // 10`` is exact integer
    division, as in a PyTorch ``LambdaLR`` lambda.

    >>> import schedules as S
    >>> S.expr("0.95 ** (step // 10)")(25)
    0.9025
    >>> S.expr("min(1, (step + 1) / 100)")(49)
    0.5
    """

    _static = frozenset({"text"})

    def __init__(self, text: str) -> None:
        fn = compile_expr(parse_text(text, "expr"), text)
        self._set(text=text)
        object.__setattr__(self, "_fn", fn)

    @property
    def fn(self) -> Compiled:
        fn = self.__dict__.get("_fn")
        if fn is None:  # unflattened by JAX: compile again (static text, cheap)
            fn = compile_expr(parse_text(self.text, "expr"), self.text)
            object.__setattr__(self, "_fn", fn)
        return fn

    def _eval(self, t: Any, ops: Ops) -> Any:
        if ops is PY:
            step = int(t) if float(t).is_integer() else t
            try:
                return self.fn(step, ops)
            except OverflowError:
                return math.inf
        return self.fn(t, ops) + 0.0 * t


Expr = expr  # the class's CamelCase name, kept for code that imports it
