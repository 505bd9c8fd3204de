"""``Schedule.replace``: a copy with some fields changed, built (so validated) by the
constructor; fields come from the constructor's signature."""

import inspect

import jax
import numpy as np
import pytest

import schedules as S
import schedules.hf
import schedules.torch
from schedules._core import REGISTRY
from tests.schedules.catalogue import ALL


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_fields_are_the_constructor_arguments(name):
    cls = REGISTRY[name]
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.name != "self" and p.kind is not p.VAR_KEYWORD]
    want = tuple(getattr(cls, "_varargs", None) if p.kind is p.VAR_POSITIONAL else p.name
                 for p in params)
    assert cls._fields == want


@pytest.mark.parametrize("name", sorted(ALL))
def test_replace_nothing_is_an_equal_copy_with_the_same_tree(name):
    s = ALL[name]
    t = s.replace()
    assert type(t) is type(s) and t is not s
    assert jax.tree_util.tree_structure(t) == jax.tree_util.tree_structure(s)
    np.testing.assert_array_equal(t(np.arange(300)), s(np.arange(300)))
    if name != "lambda":
        assert t == s


def test_replace_changes_the_field_and_keeps_the_rest():
    s = S.cosine(1.0, 0.1, 100, exponent=2.0)
    t = s.replace(steps=200)
    assert (t.init, t.end, t.steps, t.exponent) == (1.0, 0.1, 200, 2.0)
    assert t(100) == S.cosine(1.0, 0.1, 200, exponent=2.0)(100) != s(100)
    assert s.steps == 100  # the original is untouched
    # static fields: a new static value is a new tree structure; leaves stay leaves
    w = S.wsd(1.0, total=100, warmup=10, decay=20)
    w2 = w.replace(shape="cosine", peak=2.0)
    assert jax.tree_util.tree_structure(w2) != jax.tree_util.tree_structure(w)
    assert jax.tree_util.tree_leaves(w2)[0] == 2.0
    # variadic fields (multiply's factors, join's pieces) go back in positionally
    m = S.multiply(S.constant(2.0), S.linear(0.0, 1.0, 10))
    assert m.replace(factors=(S.constant(3.0), S.constant(0.5)))(7) == 1.5
    j = S.join(S.constant(1.0), S.constant(0.5), at=[10])
    assert j.replace(at=[20])(15) == 1.0


def test_replace_validates_again():
    with pytest.raises(ValueError, match=r"^cosine: steps=-1 must be >= 0$"):
        S.cosine(1.0, 0.0, 100).replace(steps=-1)
    with pytest.raises(ValueError, match=r"^wsd: warmup \+ decay=120 must be <= total=100$"):
        S.wsd(1.0, total=100, warmup=10, decay=20).replace(decay=110)
    with pytest.raises(ValueError, match=r"^cyclic: mode='sine' must be one of"):
        S.cyclic(0.1, 1.0, up=10).replace(mode="sine")


def test_replace_unknown_field_names_it():
    with pytest.raises(ValueError, match=r"^cosine: replace\(\) got warmup=5, which is not one "
                                         r"of its fields \(init, end, steps, exponent\)$"):
        S.cosine(1.0, 0.0, 100).replace(warmup=5)


def test_replace_torch_horizon_and_hf():
    s = schedules.hf.get_cosine_schedule_with_warmup(1e-3, 10, 100)
    t = s.replace(horizon=120)
    assert t.horizon == 120 and s.horizon is None
    assert [t(k) for k in range(0, 120, 7)] == [s(k) for k in range(0, 120, 7)]
    c = schedules.torch.CosineAnnealingLR(0.1, T_max=50)
    assert c.replace(horizon=60) == schedules.torch.CosineAnnealingLR(0.1, T_max=50, horizon=60)
