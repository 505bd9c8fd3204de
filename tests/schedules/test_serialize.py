"""to_config/from_config, the text spec (repr), and the safety of the parsers."""

import json

import numpy as np
import pytest

import schedules as S
from tests.schedules.catalogue import SERIALIZABLE


@pytest.mark.parametrize("name", sorted(SERIALIZABLE))
def test_config_round_trips_through_json(name):
    s = SERIALIZABLE[name]
    cfg = json.loads(json.dumps(s.to_config()))
    back = S.from_config(cfg)
    assert back == s and type(back) is type(s)
    np.testing.assert_array_equal(back(np.arange(-2, 700)), s(np.arange(-2, 700)))


@pytest.mark.parametrize("name", sorted(SERIALIZABLE))
def test_repr_is_a_spec_that_parses_back(name):
    s = SERIALIZABLE[name]
    back = S.parse(repr(s))
    assert back == s and repr(back) == repr(s)
    np.testing.assert_array_equal(back(np.arange(700)), s(np.arange(700)))


def test_python_lambda_refuses_to_serialize_and_says_why():
    s = S.lambda_(lambda t: 1.0)
    with pytest.raises(ValueError, match=r"cannot be serialized.*expr"):
        s.to_config()
    with pytest.raises(ValueError, match="cannot be serialized"):
        (S.constant(1.0) * s).to_config()
    assert repr(s) == "lambda(<lambda>)"


def test_spec_grammar_examples():
    s = S.parse("join(linear(0, 1, 100), cosine(1, 0.1, 900), at=[100])")
    assert s == S.join(S.linear(0.0, 1.0, 100), S.cosine(1.0, 0.1, 900), at=[100])
    w = S.parse("0.5 * warmup(cosine(3e-4, 3e-5, 9000), 1000)")
    assert w(1000) == 0.5 * 3e-4
    assert S.parse("cosine(1, 0, 10) / 2 + 0.1")(0) == 0.6
    assert S.parse("cyclic(0.1, 1.0, up=10, mode='triangular2')").mode == "triangular2"
    assert S.parse('expr("0.95 ** (step // 10)")')(25) == 0.9025
    assert S.parse("  0.3  ")(7) == 0.3
    assert S.parse("exponential(1, 0.5, end=None)").end is None


@pytest.mark.parametrize(
    "text,fragment,col",
    [
        ("join(linear(0, 1, 100), cosin(1, 0.1, 900), at=[100])", "unknown schedule 'cosin'", 25),
        ("cosine(1, 0.1, -900)", "steps=-900 must be >= 0", 1),
        ("cosine(1, 0.1, 900, wiggle=3)", "no parameter 'wiggle'", 21),
        ("cosine(1, 0.1, 900", "invalid syntax", None),
        ("__import__('os')", "unknown schedule '__import__'", 1),
        ("cosine(1, 0.1, 900).__class__", "Attribute is not allowed", 1),
        ("linear(0, 1, 1e999)", "not finite", 14),
        ("join(constant(1), constant(2), at=[5, 3])", "at=[5, 3] must be", 1),
        ("lambda(1)", "invalid syntax", None),
        ("lambda_(1)", "unknown schedule 'lambda_'", 1),
        ("constant(1) * constant", "needs arguments", 15),
    ],
)
def test_spec_errors_point_at_the_offending_token(text, fragment, col):
    with pytest.raises(ValueError, match=r"spec|expr") as info:
        S.parse(text)
    msg = str(info.value)
    assert fragment in msg
    assert text in msg  # the text is quoted under the message...
    if col is not None:
        assert f"at column {col}:" in msg
        caret_line = msg.splitlines()[-1]
        assert caret_line.index("^") - 2 == col - 1  # ...with a caret under the token


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("__import__('os').system('true')", "only named functions can be called"),
        ("__import__('os')", "unknown function '__import__'"),
        ("step.real", "Attribute is not allowed"),
        ("(lambda: 1)()", "only named functions"),
        ("open('x')", "unknown function 'open'"),
        ("x + 1", "unknown name 'x'"),
        ("[1, 2][0]", "is not allowed"),
        ("'a' * 3", "'a' is not a number"),
        ("sqrt(1, 2)", "takes 1 arguments"),
        ("step +", "invalid syntax"),
        ("", "must not be empty"),
        ("1\n+1", "line breaks"),
        ("-" * 200 + "1", "nested too deeply"),
        ("(lambda: 1)", "Lambda is not allowed"),
    ],
)
def test_expr_rejects_everything_outside_the_grammar(text, fragment):
    with pytest.raises(ValueError) as info:
        S.expr(text)
    assert fragment in str(info.value)


def test_expr_errors_inside_a_spec_quote_the_expression():
    with pytest.raises(ValueError) as info:
        S.parse('0.1 * expr("step.__class__")')
    msg = str(info.value)
    assert "Attribute is not allowed" in msg and "step.__class__" in msg
    assert msg.splitlines()[-1].index("^") == msg.splitlines()[-2].index("step")


def test_expr_never_builds_huge_integers_or_raises_on_overflow():
    assert S.expr("10 ** 10 ** 10")(3) == float("inf")
    assert S.expr("exp(step)")(10**6) == float("inf")
    assert S.expr("2 ** step")(5) == 32.0


def test_config_errors_are_value_errors():
    with pytest.raises(ValueError, match="unknown type 'cosin'"):
        S.from_config({"type": "cosin"})
    with pytest.raises(ValueError, match="unknown field"):
        S.from_config({"type": "constant", "value": 1.0, "extra": 2})
    with pytest.raises(ValueError, match="must be a dict"):
        S.from_config([1, 2])
    with pytest.raises(ValueError, match="missing"):
        S.from_config({"type": "cosine", "init": 1.0})
