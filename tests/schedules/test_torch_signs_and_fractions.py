"""Issue 24 (items 1, 2, 6): schedules.torch gives torch's numbers where torch goes negative
(host exactly, float32 jit to the closed forms' rounding), and a fractional step is either
torch's own ``step(epoch)`` value (``CosineAnnealingWarmRestarts``) or refused (host
``ValueError``, NaN on arrays), never floored."""

from __future__ import annotations

import math
import os
import random
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(__file__))
from torch_ref import LEAVES, build_ours, build_torch, make_opt, rand_leaf, torch_lrs  # noqa: E402

import schedules as S  # noqa: E402
from schedules import torch as T  # noqa: E402

N = 240


def _negative_spec(rng: random.Random) -> tuple[str, dict]:
    """A composition whose lr torch itself drives below 0."""
    kind = rng.randrange(4)
    if kind == 0:  # a running lr pulled past eta_min by the cosine's affine update
        poly = {"total_iters": rng.randint(20, 120), "power": rng.uniform(0.5, 2)}
        kids = [("PolynomialLR", poly),
                ("CosineAnnealingLR", {"T_max": rng.randint(60, 200),
                                       "eta_min": rng.uniform(0.3, 2.0)})]
        kids.append(rand_leaf(rng, rng.choice(["StepLR", "MultiStepLR", "ExponentialLR"]), N))
        return "ChainedScheduler", {"schedulers": kids}
    if kind == 1:  # a user lambda that crosses zero
        lam = ("LambdaLR", {"lr_lambda": f"1 - step / {rng.randint(10, 150)}"})
        if rng.random() < 0.5:
            return lam
        other = rand_leaf(rng, rng.choice(["StepLR", "CosineAnnealingLR", "LinearLR"]), N)
        return "SequentialLR", {"schedulers": [other, lam], "milestones": [rng.randint(5, 100)]}
    if kind == 2:
        lam = ("LambdaLR", {"lr_lambda": f"0.5 - step / {rng.randint(20, 300)}"})
        return "ChainedScheduler", {"schedulers": [lam, rand_leaf(rng, "StepLR", N)]}
    total = rng.randint(5, 40)  # linear one-cycle: extrapolated below 0 at its last step
    return "OneCycleLR", {"max_lr": rng.uniform(1, 30), "final_div_factor": rng.uniform(0.2, 3),
                          "total_steps": total, "anneal_strategy": "linear",
                          "pct_start": rng.uniform(0.2, 0.9)}


def _cases(n: int) -> list:
    out = []
    for seed in range(n):
        rng = random.Random(seed)
        out.append((_negative_spec(rng), rng.uniform(0.01, 1.0)))
    return out


def test_negative_compositions_equal_torch_host_and_jit():
    went_negative = 0
    for spec, lr in _cases(40):
        ref, _exc = torch_lrs(spec, lr, N)
        ref = np.asarray(ref)
        s = build_ours(spec, lr)
        got = np.asarray([s(t) for t in range(len(ref))])
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0, err_msg=repr(spec))
        went_negative += bool((ref < 0).any())
        # float32: the closed forms' rounding, relative to the curve's scale (values cross 0)
        jit = np.asarray(jax.jit(jax.vmap(s))(jnp.arange(len(ref), dtype=jnp.float32)))
        scale = np.max(np.abs(ref))
        np.testing.assert_allclose(jit, ref, rtol=0, atol=2e-5 * scale, err_msg=repr(spec))
    assert went_negative >= 30  # the generator does what it says


def test_issue_examples():
    s = T.OneCycleLR(0.05, max_lr=25, final_div_factor=2, total_steps=10, anneal_strategy="linear")
    assert s(10) == -3.0
    facade = S.Scheduler(s)
    for _ in range(10):
        facade.step()
    assert facade.get_last_lr() == [-3.0]


def _torch_epoch_lrs(T_0: int, T_mult: int, eta_min: float, lr: float, epochs: list[float]):
    opt = make_opt(lr)
    sch = build_torch(("CosineAnnealingWarmRestarts",
                       {"T_0": T_0, "T_mult": T_mult, "eta_min": eta_min}), opt)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e in epochs:
            sch.step(e)
            out.append(opt.param_groups[0]["lr"])
    return np.asarray(out)


def test_warm_restarts_fractional_epochs_equal_torch_step_epoch():
    s = T.CosineAnnealingWarmRestarts(0.05, T_0=10, eta_min=1e-10)
    assert s(0.1) == 0.049987664009167966  # the issue's example: torch's own number
    rng = random.Random(5)
    for _ in range(30):
        T_0, T_mult = rng.randint(1, 40), rng.randint(1, 3)
        eta, lr = rng.choice([0.0, rng.uniform(0, 0.05)]), rng.uniform(0.06, 1.0)
        epochs = [rng.uniform(0, 400) for _ in range(20)] + [i + 0.5 for i in range(5)]
        ref = _torch_epoch_lrs(T_0, T_mult, eta, lr, epochs)
        s = T.CosineAnnealingWarmRestarts(lr, T_0=T_0, T_mult=T_mult, eta_min=eta)
        host = np.asarray([s(e) for e in epochs])
        np.testing.assert_allclose(host, ref, rtol=1e-12, atol=0)
        # float32: the epoch itself is rounded (|e| <= 400: 2**-15 absolute), and the cosine's
        # slope is at most pi/2 * (lr - eta) / T_i per step: that bounds the error, plus
        # float32's rounding of the result. A cycle boundary within that rounding is skipped.
        e32 = np.asarray(epochs, np.float32)
        jit = np.asarray(jax.jit(jax.vmap(s))(jnp.asarray(e32)), np.float64)
        ref32 = _torch_epoch_lrs(T_0, T_mult, eta, lr, [float(e) for e in e32])
        tol = 1e-6 * lr + (lr - eta) * 4e-3 / T_0
        close = np.abs(jit - ref32) <= tol
        assert close.mean() >= 0.9 and close[-5:].all(), (T_0, T_mult, jit, ref32)


@pytest.mark.parametrize("name", [n for n in LEAVES if n != "CosineAnnealingWarmRestarts"])
def test_fractional_steps_are_refused_never_floored(name):
    rng = random.Random(hash(name) % 1000)
    s = build_ours(rand_leaf(rng, name, N), 0.3)
    assert s(3.0) == s(3)  # a whole float step is that step
    with pytest.raises(ValueError, match=r"step=2\.5 is not a whole step"):
        s(2.5)
    got = np.asarray(jax.jit(jax.vmap(s))(jnp.asarray([2.0, 2.5, 3.0], jnp.float32)))
    assert np.isnan(got[1]) and not np.isnan(got[[0, 2]]).any()
    assert math.isnan(float(S.values(s, np.asarray([2.5]))[0]))


def test_composites_refuse_fractional_steps():
    kids = [T.CosineAnnealingWarmRestarts(0.1, T_0=5), T.StepLR(0.1, 3)]
    for s in (T.SequentialLR(0.1, kids, milestones=[4]), T.ChainedScheduler(kids)):
        with pytest.raises(ValueError, match="not a whole step"):
            s(1.5)  # SequentialLR / ChainedScheduler.step() take no epoch
    for m in (T.CyclicMomentum(0.8, 0.9, step_size_up=2), T.OneCycleMomentum(total_steps=10)):
        with pytest.raises(ValueError, match="not a whole step"):
            m(1.5)
        assert np.isnan(float(jax.jit(m)(1.5)))


def test_a_non_callable_lr_lambda_raises_torchs_type_too():
    opt = make_opt(0.05)
    with pytest.raises(TypeError):
        torch.optim.lr_scheduler.MultiplicativeLR(opt, lr_lambda=0.95)
    for cls in (T.MultiplicativeLR, T.LambdaLR):
        with pytest.raises(TypeError, match=r"lr_lambda=0\.95 must be a callable"):
            cls(0.05, lr_lambda=0.95)
        with pytest.raises(ValueError):  # and still this project's ValueError
            cls(0.05, lr_lambda=0.95)
