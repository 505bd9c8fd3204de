"""Boundary validation of schedules.torch and schedules.hf: bad arguments raise ``ValueError``
naming the parameter, the value and the rule (found by fuzzing the constructors; see
``test_validation.test_constructors_fail_only_with_value_error``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import schedules as S
from schedules import constant, hf
from schedules import torch as T
from schedules.hf import HFLambda

NAN = float("nan")

BAD = [
    # -- the list of lrs (one per param group) and the composites' children -------------------
    (  # a class is one group's schedule: a list of lrs points to per_group
        lambda: T.StepLR([0.1, 0.2], 2),
        "StepLR: lr=[0.1, 0.2] must be one param group's (a schedule is one group's lr); for "
        "several param groups use schedules.torch.per_group(StepLR, [0.1, 0.2], ...)",
    ),
    (
        lambda: T.SequentialLR([1.0, 1.0], [T.StepLR(1.0, 2)], []),
        "SequentialLR: lr=[1.0, 1.0] must be one param group's",
    ),
    (
        lambda: T.ChainedScheduler([T.per_group(T.StepLR, [0.1, 0.2], 2)]),
        "ChainedScheduler: schedulers[0]=[StepLR(lr=0.1, step_size=2), StepLR(lr=0.2, "
        "step_size=2)] must be one param group's (a schedule is one group's lr); for several "
        "param groups use schedules.torch.per_group(ChainedScheduler, ",
    ),
    (
        lambda: T.per_group(T.StepLR, [], 2),
        "StepLR: lr=[] must be a number or a non-empty list of numbers",
    ),
    (
        lambda: T.per_group(T.StepLR, [[0.1]], 2),
        "StepLR: lr[0]=[0.1] must be a real number, not list",
    ),
    (
        lambda: T.per_group(T.ExponentialLR, [0.1, "x"], 0.9),
        "ExponentialLR: lr[1]='x' must be a real number",
    ),
    (
        lambda: T.ChainedScheduler(schedulers=[None]),
        "ChainedScheduler: schedulers[0]=None must be a schedules.torch scheduler",
    ),
    (
        lambda: T.per_group(T.ChainedScheduler, schedulers=[None], lr=[1.0]),
        "ChainedScheduler: schedulers[0]=None must be a list of schedulers, one per group",
    ),
    (
        lambda: T.per_group(T.ChainedScheduler, schedulers=None, lr=[1.0]),
        "ChainedScheduler: schedulers=None must be a non-empty list of schedules.torch schedulers",
    ),
    (
        lambda: T.per_group(T.ChainedScheduler, constant(1.0), lr=[1.0, 1.0]),
        "ChainedScheduler: schedulers=constant(value=1.0) must be a non-empty list",
    ),
    (
        lambda: T.per_group(T.ChainedScheduler, [[]]),
        "ChainedScheduler: schedulers[0]=[] must not be empty (one scheduler per param group)",
    ),
    (
        lambda: T.per_group(T.SequentialLR, [1.0, 1.0], T.StepLR(1.0, 2), [1]),
        "SequentialLR: schedulers=StepLR(lr=1.0, step_size=2) must be a non-empty list",
    ),
    (
        lambda: T.SequentialLR(1.0, [T.StepLR(0.5, 2)], []),
        "SequentialLR: schedulers[0].lr=0.5 must equal the composite's lr=1.0",
    ),
    # -- CyclicLR / CyclicMomentum ----------------------------------------------------------------
    (
        lambda: T.CyclicLR(0.1, 0.1, 1.0, mode=["x"]),
        "CyclicLR: mode=['x'] must be one of 'triangular', 'triangular2', 'exp_range' when "
        "scale_fn is None",
    ),
    (
        lambda: T.CyclicLR(0.1, 0.1, 1.0, mode=3, scale_fn=lambda x: 1.0),
        "CyclicLR: mode=3 must be a str, not int",
    ),
    (
        lambda: T.CyclicLR(0.1, 0.1, 1.0, step_size_up=3e38, step_size_down=3e38),
        "CyclicLR: step_size_up + step_size_down=6e+38 must be > 0",
    ),
    (
        lambda: T.CyclicLR(0.1, 0.1, 1.0, cycle_momentum="yes"),
        "CyclicLR: cycle_momentum='yes' must be True or False, not str",
    ),
    (
        lambda: T.CyclicLR.momentum(base_momentum=[0.8, 0.8], max_momentum=[0.9]),
        "CyclicLR.momentum: max_momentum=[0.9] must have one entry per param group (2, >= 1)",
    ),
    (
        lambda: T.CyclicMomentum(0.8, 0.9, step_size_up=None),
        "CyclicMomentum: step_size_up=None must be a real number, not NoneType",
    ),
    # -- OneCycleLR / OneCycleMomentum ------------------------------------------------------------
    (
        lambda: T.OneCycleLR(0.1, 1.0, total_steps=10, pct_start=[0.3]),
        "OneCycleLR: pct_start=[0.3] must be a float between 0 and 1",
    ),
    (
        lambda: T.OneCycleLR(0.1, 1.0, total_steps=10, pct_start=NAN),
        "OneCycleLR: pct_start=nan must be a float between 0 and 1",
    ),
    (
        lambda: T.OneCycleLR(0.1, 1.0, total_steps=10, anneal_strategy=[]),
        "OneCycleLR: anneal_strategy=[] must be one of 'cos', 'linear'",
    ),
    (
        lambda: T.OneCycleLR(0.1, 1.0, total_steps=10, three_phase=None),
        "OneCycleLR: three_phase=None must be True or False, not NoneType",
    ),
    (
        lambda: T.OneCycleMomentum(10, pct_start=[1]),
        "OneCycleMomentum: pct_start=[1] must be a float between 0 and 1",
    ),
    (
        lambda: T.OneCycleLR.momentum(total_steps=10, base_momentum=[], max_momentum=[]),
        "OneCycleLR.momentum: base_momentum=[] must have one entry per param group (0, >= 1)",
    ),
    # -- ReduceLROnPlateau ------------------------------------------------------------------------
    (lambda: T.ReduceLROnPlateau(1.0, factor="x"), "factor='x' must be a real number, not str"),
    (lambda: T.ReduceLROnPlateau(1.0, factor=1.0), "factor=1.0 must be < 1.0"),
    (lambda: T.ReduceLROnPlateau(1.0, patience=None), "patience=None must be a real number"),
    (lambda: T.ReduceLROnPlateau(1.0, cooldown=0.5), "cooldown=0.5 must be an integer"),
    (lambda: T.ReduceLROnPlateau(1.0, eps=NAN), "eps=nan must be finite"),
    (lambda: T.ReduceLROnPlateau([]), "ReduceLROnPlateau: lr=[] must be a number or a non-empty"),
    (lambda: T.ReduceLROnPlateau(1.0, min_lr=[0.0, 0.1]), "min_lr=[0.0, 0.1] must have 1 entry"),
    # -- HFLambda ---------------------------------------------------------------------------------
    (lambda: HFLambda(["linear"]), "hf_lambda: kind=['linear'] must be one of constant,"),
    (
        lambda: HFLambda("linear"),
        "hf_lambda: params=None is missing num_training_steps (required by kind='linear')",
    ),
    (
        lambda: HFLambda("linear", [1, 2]),
        "hf_lambda: params=[1, 2] must be None, a dict or a list of (name, value) pairs",
    ),
    (
        lambda: HFLambda("constant", bogus=1),
        "hf_lambda: params={'bogus': 1} has 'bogus', which is not a parameter of kind='constant'",
    ),
    (
        lambda: HFLambda("cosine", num_warmup_steps=0, num_training_steps="10", num_cycles=0.5),
        "hf_lambda: num_training_steps='10' must be a real number, not str",
    ),
    (
        lambda: HFLambda("cosine", num_training_steps=10, num_cycles=NAN),
        "hf_lambda: num_cycles=nan must be finite",
    ),
    (
        lambda: HFLambda("inverse_sqrt", timescale=0),
        "hf_lambda: timescale=0 must be > 0",
    ),
    (
        lambda: HFLambda("polynomial", num_training_steps=10, lr_init=0.0, lr_end=-1.0, power=1.0),
        "hf_lambda: lr_init=0.0 must be > 0 (the lambda divides by it)",
    ),
    (
        lambda: HFLambda(
            "warmup_stable_decay",
            num_stable_steps=1,
            num_decay_steps=1,
            warmup_type="linear",
            decay_type="exp",
            min_lr_ratio=0.0,
            num_cycles=0.5,
        ),
        "hf_lambda: decay_type='exp' must be one of 'linear', 'cosine', '1-sqrt'",
    ),
    # -- transformers' functions ------------------------------------------------------------------
    (
        lambda: hf.get_linear_schedule_with_warmup(1.0, -1, 10),
        "get_linear_schedule_with_warmup: num_warmup_steps=-1 must be >= 0",
    ),
    (
        lambda: hf.get_constant_schedule_with_warmup("1e-3", 10),
        "get_constant_schedule_with_warmup: lr='1e-3' must be a real number, not str",
    ),
    (
        lambda: hf.get_polynomial_decay_schedule_with_warmup([1.0], 0, 10),
        "get_polynomial_decay_schedule_with_warmup: lr=[1.0] must be a single number here",
    ),
    (
        lambda: hf.get_polynomial_decay_schedule_with_warmup(1.0, 0, 10, lr_end=None),
        "get_polynomial_decay_schedule_with_warmup: lr_end=None must be a real number",
    ),
    (
        lambda: hf.get_polynomial_decay_schedule_with_warmup(1e-3, 0, 10, lr_end=1e-2),
        "lr_end=0.01 must be smaller than the initial lr=0.001",
    ),
    (
        lambda: hf.get_cosine_with_min_lr_schedule_with_warmup(0.0, 0, 10, min_lr=0.1),
        "get_cosine_with_min_lr_schedule_with_warmup: lr=0.0 must be nonzero when min_lr is given",
    ),
    (
        lambda: hf.get_cosine_with_min_lr_schedule_with_warmup(1.0, 0, 10, min_lr="x"),
        "get_cosine_with_min_lr_schedule_with_warmup: min_lr='x' must be a real number",
    ),
    (
        lambda: hf.get_cosine_with_min_lr_schedule_with_warmup(1.0, 0, 10),
        "min_lr_rate=None must be set, or min_lr",
    ),
    (
        lambda: hf.get_cosine_with_min_lr_schedule_with_warmup(1.0, 0, 10, 0.5, 0.1, 0.1),
        "min_lr=0.1 and min_lr_rate=0.1 are both set",
    ),
    (
        lambda: hf.get_inverse_sqrt_schedule(1.0, None),
        "get_inverse_sqrt_schedule: num_warmup_steps=None must be a real number",
    ),
    (
        lambda: hf.get_inverse_sqrt_schedule(1.0, 0, timescale=0),
        "get_inverse_sqrt_schedule: timescale=0 must be > 0",
    ),
    (
        lambda: hf.get_wsd_schedule(1.0, 10, 10, num_training_steps=15),
        "get_wsd_schedule: num_training_steps=15 must be >= num_warmup_steps + num_decay_steps",
    ),
    (
        lambda: hf.get_wsd_schedule(1.0, 10, 10, num_training_steps="x"),
        "get_wsd_schedule: num_training_steps='x' must be a real number, not str",
    ),
    (
        lambda: hf.get_wsd_schedule(1.0, 1, 1, num_stable_steps=1, warmup_type=[]),
        "get_wsd_schedule: warmup_type=[] must be one of 'linear', 'cosine', '1-sqrt'",
    ),
    (lambda: hf.get_wsd_schedule(1.0, 1, 1), "num_stable_steps=None must be given"),
    (lambda: hf.get_scheduler(["linear"], 1.0), "get_scheduler: name=['linear'] must be one of"),
    (
        lambda: hf.get_scheduler("linear", 1.0, 0, 10, scheduler_specific_kwargs=[1]),
        "get_scheduler: scheduler_specific_kwargs=[1] must be None or a dict",
    ),
    (
        lambda: hf.get_scheduler("linear", 1.0, 0, 10, scheduler_specific_kwargs={"power": 1}),
        "has 'power', which 'linear' does not take",
    ),
    (
        lambda: hf.get_scheduler(
            "reduce_lr_on_plateau", 1.0, scheduler_specific_kwargs={"bogus": 1}
        ),
        "has 'bogus', which 'reduce_lr_on_plateau' does not take",
    ),
]


@pytest.mark.parametrize("make,fragment", BAD)
def test_bad_arguments_raise_value_error_naming_parameter_value_and_rule(make, fragment):
    with pytest.raises(ValueError) as info:
        make()
    assert fragment in str(info.value)


# -- arithmetic errors when evaluating (torch / transformers raise them too) ----------------------


@pytest.mark.parametrize(
    "make,step,fragment",
    [
        (  # transformers' polynomial lambda divides by num_training_steps - num_warmup_steps
            lambda: HFLambda(
                "polynomial",
                num_warmup_steps=3,
                num_training_steps=3,
                lr_init=1.0,
                lr_end=0.0,
                power=1.0,
            ),
            3,
            "'polynomial' lambda raises ZeroDivisionError at step 3",
        ),
        (lambda: HFLambda("linear", num_training_steps=10), math.inf, "step=inf must be finite"),
        (  # the last phase is empty: torch divides by zero at step total_steps
            lambda: T.OneCycleMomentum(total_steps=2, pct_start=0.75, three_phase=True),
            2,
            "OneCycleMomentum: torch raises ZeroDivisionError at step 2",
        ),
    ],
)
def test_evaluation_errors_are_value_errors(make, step, fragment):
    s = make()
    with pytest.raises(ValueError) as info:
        s(step)
    assert fragment in str(info.value)


# -- accepted forms -------------------------------------------------------------------------------


def test_cyclic_lr_with_an_empty_down_phase_matches_torch():
    """``step_size_down=0``: torch's if/else never takes the (dividing-by-zero) down branch."""
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5, momentum=0.9)
    ref = torch.optim.lr_scheduler.CyclicLR(opt, 0.1, 1.0, step_size_up=2, step_size_down=0)
    want = []
    for _ in range(7):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    s = T.CyclicLR(0.5, 0.1, 1.0, step_size_up=2, step_size_down=0)
    np.testing.assert_allclose([s(t) for t in range(7)], want, rtol=1e-12)
    m = T.CyclicLR.momentum(0.1, 1.0, step_size_up=2, step_size_down=0)
    assert [round(m(t), 12) for t in range(3)] == [0.9, 0.85, 0.9]


def test_one_group_min_lr_list_and_hf_params_pairs_are_accepted():
    T.ReduceLROnPlateau(1.0, min_lr=[0.01])  # torch: one param group, a list of one min_lr
    a = HFLambda("linear", num_warmup_steps=2, num_training_steps=4)
    assert HFLambda("linear", [("num_warmup_steps", 2), ("num_training_steps", 4)]) == a
    assert HFLambda("linear", {"num_warmup_steps": 2.0, "num_training_steps": 4}) == a
    assert S.from_config(a.to_config()) == a and S.parse(repr(a)) == a
    assert hf.get_inverse_sqrt_schedule(1.0, 0)(0) == 1.0  # timescale defaults to 10_000


def test_momentum_lists_give_one_schedule_per_group():
    """``CyclicLR.momentum`` / ``OneCycleLR.momentum`` with a list: group ``i`` is the schedule
    built from entry ``i`` (a number given with a list applies to every group)."""
    cyc = T.CyclicLR.momentum(0.1, 1.0, step_size_up=3, base_momentum=[0.8, 0.7], max_momentum=0.9)
    one = T.OneCycleLR.momentum(total_steps=20, base_momentum=0.85, max_momentum=[0.95, 0.9])
    assert cyc == [T.CyclicMomentum(0.8, 0.9, step_size_up=3), T.CyclicMomentum(0.7, 0.9, 3)]
    assert one == [T.OneCycleMomentum(20, max_momentum=0.95), T.OneCycleMomentum(20, None, None,
                                                                                 max_momentum=0.9)]
    assert [m(4) for m in cyc] != [m(4) for m in cyc[::-1]]
