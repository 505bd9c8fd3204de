"""The public names are the objects users see: ``help(S.cosine)`` and reprs say ``cosine``;
one name has one meaning across the package."""

import pickle
import pydoc

import pytest

import schedules as S
from schedules import _combinators, _primitives
from schedules._core import REGISTRY

_PUBLIC = {n: getattr(S, n) for n in S.__all__ if isinstance(getattr(S, n), type)}


@pytest.mark.parametrize("name", sorted(n for n, c in _PUBLIC.items() if getattr(c, "_name", "")))
def test_help_and_repr_use_the_public_name(name):
    cls = _PUBLIC[name]
    if name == "megatron_lr":  # Megatron's own class name, registered as megatron_lr
        assert cls.__name__ == "OptimizerParamScheduler"
        return
    assert cls.__name__ == cls.__qualname__ == name
    assert REGISTRY[cls._name] is cls
    first = pydoc.render_doc(cls, renderer=pydoc.plaintext).splitlines()[2]
    assert first.startswith(f"class {name}(")
    assert f".{name}'>" in repr(cls)


def test_one_name_one_meaning():
    assert _combinators.multiply is S.multiply and _combinators.add is S.add
    assert _combinators.scale is S.scale and _primitives.cosine is S.cosine
    # the operators flatten nested products and sums (flat_multiply / flat_add)
    a, b, c = S.constant(2.0), S.constant(3.0), S.linear(0.0, 1.0, 10)
    assert (a * b) * c == S.multiply(a, b, c) and (a + b) + c == S.add(a, b, c)
    # the descriptive names kept for imports are the same classes
    assert _primitives.CosineDecay is S.cosine and _combinators.Multiply is S.multiply


def test_schedules_pickle_by_their_public_names():
    s = S.warmup(S.cosine(1.0, 0.1, 100), 10) * 2.0 + S.constant(0.5)
    assert pickle.loads(pickle.dumps(s)) == s
