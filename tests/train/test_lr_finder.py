"""The learning-rate range test: the suggestion rule on synthetic curves with known answers,
argument validation, and two short runs of a tiny model (one completes, one diverges)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from train_testutil import tiny

import schedules as S
from train.lr_finder import (
    LRRangeResult,
    ema,
    exponential_schedule,
    lr_range_test,
    moving_average,
    suggest_lr,
)


def test_doctests() -> None:
    from train.run import lr_finder  # the test's layer (train.lr_finder is its CLI)

    res = doctest.testmod(lr_finder)
    assert res.attempted >= 5 and res.failed == 0


# -- suggest_lr: synthetic curves ---------------------------------------------------------------

LRS = np.logspace(-6, 0, 61)  # 10 points per decade: 1e-6, 1.26e-6, ..., 1


def _sigmoid_drop(center: float, width: float = 1.0) -> np.ndarray:
    """High plateau, a drop centred (steepest) at ``center``, low plateau."""
    return 4.0 - 2.0 * np.tanh((np.log10(LRS) - math.log10(center)) / width)


@pytest.mark.parametrize("center", [1e-5, 1e-3, 3.981e-2])
def test_steepest_finds_the_centre_of_the_drop(center: float) -> None:
    got = suggest_lr(LRS, _sigmoid_drop(center))
    assert got == pytest.approx(center, rel=1e-3)


def test_steepest_ignores_what_comes_after_the_minimum() -> None:
    y = _sigmoid_drop(1e-4, width=0.5)
    after = np.log10(LRS) > -2  # past 1e-2: blow up, then a fake steep drop that must be ignored
    y = np.where(after, y + 50 * (np.log10(LRS) + 2) ** 2, y)
    y[-5:] = np.linspace(300, 100, 5)  # a cliff steeper than the real descent, past the minimum
    assert suggest_lr(LRS, y) == pytest.approx(1e-4, rel=1e-3)


def test_min_over_10() -> None:
    y = (np.log10(LRS) + 2) ** 2  # a valley with its minimum at lr = 1e-2
    assert suggest_lr(LRS, y, rule="min/10") == pytest.approx(1e-3, rel=1e-9)
    # the steepest descent of this parabola is at its start (descent is fastest far from the min)
    assert suggest_lr(LRS, y) == pytest.approx(1e-6)


def test_non_finite_tail_is_ignored() -> None:
    y = _sigmoid_drop(1e-3)
    y[40:] = np.inf
    y[45] = np.nan
    assert suggest_lr(LRS, y) == pytest.approx(1e-3, rel=1e-3)
    assert suggest_lr(LRS, y, rule="min/10") == pytest.approx(LRS[39] / 10)


def test_uneven_spacing_uses_the_log_lr_derivative() -> None:
    x = np.sort(np.concatenate([LRS, np.logspace(-6, -4, 37)[1:-1:3]]))  # denser at the start
    y = 4.0 - 2.0 * np.tanh(np.log10(x) + 3)
    assert suggest_lr(x, y) == pytest.approx(1e-3, rel=1e-3)


def test_no_descent_falls_back_to_min_over_10() -> None:
    y = np.linspace(1.0, 5.0, 10)  # only rises: the minimum is the first point
    x = LRS[:10]
    assert suggest_lr(x, y) == pytest.approx(x[0] / 10)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(lrs=LRS, losses=LRS, rule="valley"), ["rule='valley'", "'steepest'", "'min/10'"]),
        (dict(lrs=LRS[::-1], losses=LRS), ["lrs=", "strictly increasing"]),
        (dict(lrs=np.r_[0.0, LRS[1:]], losses=LRS), ["lrs=", "> 0"]),
        (dict(lrs=LRS, losses=LRS[:-1]), ["losses=", "shape of lrs (61,)"]),
        (dict(lrs=[], losses=[]), ["lrs=", "at least 1"]),
        (dict(lrs=LRS[:3], losses=[np.nan, 1.0, 1.0]), ["losses=", "start with a finite"]),
    ],
)
def test_suggest_lr_validation(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as e:
        suggest_lr(**kwargs)
    msg = str(e.value)
    assert msg.startswith("suggest_lr: ")
    for w in words:
        assert w in msg, msg


# -- helpers ------------------------------------------------------------------------------------


def test_exponential_schedule_is_the_algebra() -> None:
    s = exponential_schedule(1e-6, 1.0, 61)
    assert isinstance(s, S.Schedule) and repr(s).startswith("exponential(")
    v = S.values(s, 70)
    np.testing.assert_allclose(v[:61], LRS, rtol=1e-12)
    assert v[0] == 1e-6 and v[60] == pytest.approx(1.0, rel=1e-12) and np.all(v[61:] == 1.0)
    assert S.parse(repr(s)) == s


def test_ema_and_moving_average() -> None:
    x = np.array([1.0, 3.0, 2.0, 6.0])
    np.testing.assert_allclose(ema(x, 0.0), x)
    m = 0.5 * 1.0
    want = [1.0]
    for t, v in enumerate(x[1:], start=2):
        m = 0.5 * m + 0.5 * v
        want.append(m / (1 - 0.5**t))
    np.testing.assert_allclose(ema(x, 0.5), want)
    np.testing.assert_allclose(moving_average(x, 1), x)
    np.testing.assert_allclose(moving_average(x, 3), [1.0, 2.0, 11 / 3, 6.0])
    with pytest.raises(ValueError, match=r"moving_average: window=4 must be an odd int >= 1"):
        moving_average(x, 4)
    with pytest.raises(ValueError, match=r"ema: beta=1\.0 must be a number in \[0, 1\)"):
        ema(x, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(lr_min=0.0), "lr_range_test: lr_min=0.0 must be a finite number > 0"),
        (dict(lr_min=-1e-3), "lr_range_test: lr_min=-0.001 must be a finite number > 0"),
        (dict(lr_min=1e-2, lr_max=1e-3),
         "lr_range_test: lr_max=0.001 must be a finite number > lr_min=0.01"),
        (dict(lr_max=math.inf), "lr_range_test: lr_max=inf must be a finite number > lr_min"),
        (dict(steps=2), "lr_range_test: steps=2 must be an int >= 3"),
        (dict(steps=10.0), "lr_range_test: steps=10.0 must be an int >= 3"),
        (dict(beta=1.0), "lr_range_test: beta=1.0 must be a number in [0, 1)"),
        (dict(diverge=1.0), "lr_range_test: diverge=1.0 must be a finite number > 1"),
        (dict(rule="fastest"), "lr_range_test: rule='fastest' must be one of 'steepest', "),
        (dict(window=4), "lr_range_test: window=4 must be an odd int >= 1"),
    ],
)
def test_lr_range_test_validation(kwargs: dict, message: str) -> None:
    # raised before any data is read or anything compiles (the config is never looked at)
    with pytest.raises(ValueError) as e:
        lr_range_test(None, **kwargs)  # type: ignore[arg-type]
    assert str(e.value).startswith(message), str(e.value)


def test_lr_range_test_rejects_a_bad_config(tmp_path, corpus) -> None:
    with pytest.raises(ValueError, match=r"--batch-size=0 is invalid"):
        lr_range_test(tiny(str(tmp_path), corpus, batch_size=0))


# -- end to end: a tiny GPT-2 -------------------------------------------------------------------


def _cfg(tmp, corpus):
    return tiny(str(tmp), corpus, seq_len=16, batch_size=4, devices=1)


def test_completes_with_the_scheduled_lrs(tmp_path, corpus) -> None:
    r = lr_range_test(_cfg(tmp_path, corpus), lr_min=1e-4, lr_max=1e-2, steps=12)
    assert isinstance(r, LRRangeResult)
    assert r.stopped_at is None and r.steps == 12 and r.stop_reason == "completed 12 steps"
    # the lr of each step is the one the step applied (its float32 `lr` metric), the schedule's
    # (geometric: a constant ratio) from lr_min to lr_max, evaluated in float32: the rate
    # rounded to float32 (relative 2**-24) raised to t < 12, the exponent t * ln(rate) (at most
    # ln(100) in size) rounded, and a few roundings of exp, the product and the cast
    tol = (12 + math.log(100) + 2) * 2.0**-24
    np.testing.assert_allclose(r.lrs, S.values(r.schedule, 12), rtol=tol)
    assert all(x == np.float32(x) for x in r.lrs)  # the step's values, not host float64 ones
    np.testing.assert_allclose(r.lrs[1:] / r.lrs[:-1], (1e2) ** (1 / 11), rtol=2 * tol)
    assert r.lrs[0] == np.float32(1e-4) and r.lrs[-1] == pytest.approx(1e-2, rel=tol)
    assert r.losses.shape == r.ema.shape == r.smoothed.shape == (12,)
    assert np.all(np.isfinite(r.losses)) and r.losses[0] == pytest.approx(math.log(256), abs=0.3)
    assert r.losses[-3:].mean() < r.losses[:3].mean()  # it learns in the useful range
    assert r.suggested_lr == suggest_lr(r.lrs, r.smoothed)
    assert 1e-4 <= r.suggested_lr <= 1e-2
    assert r.wall_s >= r.compile_s > 0


def test_stops_when_the_loss_diverges(tmp_path, corpus) -> None:
    r = lr_range_test(_cfg(tmp_path, corpus), lr_min=1e-3, lr_max=1e4, steps=40,
                      rule="min/10")
    assert r.stopped_at is not None and r.stopped_at < 39, r.stop_reason
    assert r.steps == r.stopped_at + 1 == len(r.lrs) == len(r.losses)
    assert r.stop_reason.startswith(f"diverged at step {r.stopped_at}")
    last = r.ema[-1]
    assert not math.isfinite(r.losses[-1]) or last > 4.0 * np.min(r.ema[:-1])
    # the suggestion reads only the steps before the divergence
    assert np.all(np.isnan(r.smoothed[r.stopped_at:]))
    assert r.suggested_lr == pytest.approx(r.best_lr / 10)
    assert 1e-4 <= r.suggested_lr < r.lrs[r.stopped_at]


def test_float16_logs_the_lr_the_step_applied(tmp_path, corpus) -> None:
    # a loss scale so large that the first float16 gradients overflow: those updates are
    # skipped (train.engine.step.update), the optimizer's count, hence its lr, does not move; the
    # range test logs what was applied, not the host's schedule(t)
    cfg = {**_cfg(tmp_path, corpus), "dtype": "float16", "loss_scale_init": 2.0**18}
    r = lr_range_test(cfg, lr_min=1e-4, lr_max=1e-2, steps=8)
    assert r.stopped_at is None and np.all(np.isfinite(r.losses))
    sched = np.float32(S.values(r.schedule, 8))
    skipped = int(np.sum(r.lrs == r.lrs[0])) - 1
    assert 1 <= skipped < 7  # overflowing steps first, then updates
    # step t applied schedule(t - skipped) once the scaler has backed off (float32, as above)
    np.testing.assert_allclose(r.lrs, np.r_[[sched[0]] * skipped, sched[:8 - skipped]],
                               rtol=(8 + math.log(100) + 2) * 2.0**-24)
    assert r.lrs[-1] < sched[-1] and 1e-4 <= r.suggested_lr <= r.lrs[-1]
