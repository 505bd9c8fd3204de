"""``schedules.Scheduler.load_state_dict`` takes real torch schedulers' ``state_dict()``
(composites included) and then continues with torch's numbers."""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import schedules as S  # noqa: E402
from schedules import torch as T  # noqa: E402

L = torch.optim.lr_scheduler
LR = 0.1


def _ours() -> Any:
    """Constructors with torch's signatures that build ``schedules.torch`` schedules."""
    return SimpleNamespace(
        StepLR=lambda o, step_size, gamma: T.StepLR(LR, step_size, gamma),
        LinearLR=lambda o, start_factor, total_iters: T.LinearLR(
            LR, start_factor, total_iters=total_iters),
        ExponentialLR=lambda o, gamma: T.ExponentialLR(LR, gamma),
        ChainedScheduler=lambda children: T.ChainedScheduler(children),
        SequentialLR=lambda o, children, milestones: T.SequentialLR(LR, children, milestones),
    )


def _build(lib: Any, o: Any, kind: str) -> Any:
    """The same composition with torch's classes (``o`` an optimizer) or ours."""
    if kind == "chained":
        return lib.ChainedScheduler([lib.StepLR(o, step_size=3, gamma=0.5),
                                     lib.LinearLR(o, start_factor=0.1, total_iters=10)])
    if kind == "sequential":
        return lib.SequentialLR(o, [lib.LinearLR(o, start_factor=0.1, total_iters=3),
                                    lib.ExponentialLR(o, gamma=0.9)], milestones=[3])
    if kind == "chained(sequential, steplr)":
        return lib.ChainedScheduler([_build(lib, o, "sequential"),
                                     lib.StepLR(o, step_size=2, gamma=0.5)])
    if kind == "chained(chained, linear)":
        return lib.ChainedScheduler([_build(lib, o, "chained"),
                                     lib.LinearLR(o, start_factor=0.5, total_iters=4)])
    if kind == "sequential(chained, exponential)":
        return lib.SequentialLR(o, [_build(lib, o, "chained"), lib.ExponentialLR(o, gamma=0.9)],
                                milestones=[20])
    assert kind == "steplr"
    return lib.StepLR(o, step_size=2, gamma=0.5)


KINDS = ["steplr", "chained", "sequential", "chained(sequential, steplr)",
         "chained(chained, linear)", "sequential(chained, exponential)"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [0, 1, 4, 7])
def test_facade_loads_torch_state_dict_and_continues(kind: str, k: int) -> None:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "step() before optimizer.step()" warnings
        theirs = _build(L, opt, kind)
        for _ in range(k):
            opt.step()
            theirs.step()
        sch = S.Scheduler(_build(_ours(), None, kind))
        sch.load_state_dict(theirs.state_dict())
        assert sch.last_epoch == k
        for _ in range(4):
            assert sch.get_last_lr()[0] == pytest.approx(theirs.get_last_lr()[0], rel=1e-12)
            opt.step()
            theirs.step()
            sch.step()


def test_facade_state_dict_errors_name_the_value() -> None:
    sch = S.Scheduler(S.constant(1.0))
    with pytest.raises(ValueError, match="last_epoch"):
        sch.load_state_dict({"_schedulers": []})
    with pytest.raises(ValueError, match="last_epoch"):
        sch.load_state_dict({"last_epoch": -1})
    sch.load_state_dict(sch.state_dict())
    assert sch.last_epoch == 0


@pytest.mark.parametrize("three_phase", [False, True])
def test_onecycle_momentum_companion_matches_torch(three_phase: bool) -> None:
    """As documented in docs/torch-compat.md: the same keyword arguments (after ``lr``) build
    the lr schedule and its momentum companion, equal to torch's ``momentum`` values."""
    kw = dict(max_lr=1e-2, total_steps=50, pct_start=0.25, three_phase=three_phase)
    lr, mom = T.OneCycleLR(1e-3, **kw), T.OneCycleLR.momentum(**kw)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3, momentum=0.9)
    sch = L.OneCycleLR(opt, **kw)
    for t in range(50):
        g = opt.param_groups[0]
        assert mom(t) == pytest.approx(g["momentum"], rel=1e-12, abs=1e-15), t
        assert lr(t) == pytest.approx(g["lr"], rel=1e-12), t
        opt.step()
        sch.step()


def test_cyclic_momentum_companion_matches_torch() -> None:
    kw = dict(base_lr=1e-3, max_lr=1e-2, step_size_up=5, step_size_down=3, mode="triangular2")
    mom = T.CyclicLR.momentum(**kw)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3, momentum=0.9)
    sch = L.CyclicLR(opt, **kw)
    for t in range(30):
        assert mom(t) == pytest.approx(opt.param_groups[0]["momentum"], rel=1e-12), t
        opt.step()
        sch.step()
