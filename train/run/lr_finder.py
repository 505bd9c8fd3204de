"""The learning-rate range test ("LR finder", Smith 2015; popularised by fastai).

Train a model for a few dozen to a few hundred steps while the learning rate grows
exponentially from ``lr_min`` to ``lr_max``, record the loss at every step, and read a good
learning rate off the curve of loss against learning rate: the loss first stays flat (lr too
small to move), then falls (the useful range), then turns up and explodes (too large).

The lr curve is a schedule of the algebra, not a loop over values::

    rate = (lr_max / lr_min) ** (1 / (steps - 1))
    schedule = schedules.exponential(lr_min, rate, end=lr_max)   # step t -> lr_min * rate**t

so step 0 uses ``lr_min`` and step ``steps - 1`` uses ``lr_max``, equally spaced in log(lr).
The optimizer (``train.optim.make_optimizer``: clipping + AdamW with the config's betas,
weight decay and lr multipliers) reads it at its own step counter, exactly as in training.

Two smoothings of the per-step loss, for two jobs:

* **stopping** is online, so it uses a causal, bias-corrected exponential moving average
  (``ema``, coefficient ``beta``): the test stops as soon as ``ema > diverge * min(ema)``
  or the loss is not finite.
* **the suggestion** is made afterwards on a centred moving average (``smoothed``): an EMA lags
  by about ``beta / (1 - beta)`` steps, which on an exponential lr axis would shift the
  steepest point towards larger learning rates.

The suggestion rule is :func:`suggest_lr` (a pure function of the two curves):
``"steepest"`` (default) is the lr where the smoothed loss falls fastest per unit of log(lr),
searched before the loss minimum; ``"min/10"`` is one tenth of the lr at the loss minimum.

Nothing is written to disk: no checkpoints, no metrics file.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

import schedules as S

from ..config import TrainConfig
from ..engine.pmap import make_train_step, replicate
from ..engine.step import init_state, loss_scale_rule
from ..optim import make_optimizer
from .setup import prepare_run

__all__ = ["RULES", "LRRangeResult", "check_range", "ema", "exponential_schedule",
           "lr_range_test", "moving_average", "suggest_lr"]

#: the suggestion rules of :func:`suggest_lr`.
RULES = ("steepest", "min/10")


@dataclasses.dataclass(frozen=True)
class LRRangeResult:
    """What :func:`lr_range_test` measured (one entry per step that ran).

    ``lrs[t]`` is the learning rate the optimizer applied at step ``t``: the step's ``lr``
    metric (:func:`train.engine.step.update`), ``schedule(count)`` in float32 at the optimizer's own
    count, so ``schedule(t)`` unless float16 loss scaling skipped an update (then the schedule
    does not move, as in training);
    ``losses[t]`` the training loss of that step's batch (before the update), ``ema`` the
    causal smoothed loss that decided when to stop, ``smoothed`` the centred moving average that
    :func:`suggest_lr` read (NaN from the divergence on), ``suggested_lr`` its answer under
    ``rule``. ``stopped_at`` is the step at which the loss diverged (``None``: all requested
    steps ran); ``steps`` the number of steps run. ``wall_s`` is the time of the whole test,
    ``compile_s`` of its first step (which includes compilation)."""

    lrs: np.ndarray
    losses: np.ndarray
    ema: np.ndarray
    smoothed: np.ndarray
    suggested_lr: float
    rule: str
    schedule: S.Schedule
    steps: int
    stopped_at: int | None
    stop_reason: str
    wall_s: float
    compile_s: float

    @property
    def best_lr(self) -> float:
        """The lr at the minimum of the smoothed loss (the ``"min/10"`` rule is a tenth of it)."""
        return float(self.lrs[int(np.nanargmin(self.smoothed))])


def _bad(fn: str, name: str, value: Any, rule: str) -> ValueError:
    return ValueError(f"{fn}: {name}={value!r} {rule}")


def _is_real(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def exponential_schedule(lr_min: float, lr_max: float, steps: int) -> S.Schedule:
    """The range test's schedule: ``lr_min`` at step 0 growing geometrically to ``lr_max`` at
    step ``steps - 1`` (and held there): ``schedules.exponential(lr_min, rate, end=lr_max)``
    with ``rate = (lr_max / lr_min) ** (1 / (steps - 1))``.

    >>> s = exponential_schedule(1e-4, 1e-2, 3)
    >>> round(s(0), 12), round(s(1), 12), round(s(2), 12)
    (0.0001, 0.001, 0.01)
    """
    check_range("exponential_schedule", lr_min, lr_max, steps)
    rate = (lr_max / lr_min) ** (1.0 / (steps - 1))
    return S.exponential(float(lr_min), float(rate), end=float(lr_max))


def check_range(fn: str, lr_min: Any, lr_max: Any, steps: Any) -> None:
    if not _is_real(lr_min) or not math.isfinite(lr_min) or lr_min <= 0:
        raise _bad(fn, "lr_min", lr_min, "must be a finite number > 0")
    if not _is_real(lr_max) or not math.isfinite(lr_max) or lr_max <= lr_min:
        raise _bad(fn, "lr_max", lr_max, f"must be a finite number > lr_min={lr_min!r}")
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 3:
        raise _bad(fn, "steps", steps, "must be an int >= 3")


def ema(losses: Sequence[float] | np.ndarray, beta: float = 0.9) -> np.ndarray:
    """Bias-corrected exponential moving average (causal: entry ``t`` sees steps ``<= t``).

    ``m_t = beta m_{t-1} + (1 - beta) x_t`` from ``m_{-1} = 0``, reported as
    ``m_t / (1 - beta ** (t + 1))`` so that early entries are not pulled towards 0.

    >>> ema([2.0, 2.0, 2.0], beta=0.9).tolist()
    [2.0, 2.0, 2.0]
    """
    if not _is_real(beta) or not 0 <= beta < 1:
        raise _bad("ema", "beta", beta, "must be a number in [0, 1)")
    x = np.asarray(losses, dtype=np.float64)
    out = np.empty_like(x)
    m = 0.0
    for t, v in enumerate(x):
        m = beta * m + (1 - beta) * v
        out[t] = m / (1 - beta ** (t + 1))
    return out


def moving_average(losses: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` points (odd); near the ends the window shrinks
    symmetrically, so there is no lag and the first and last values are kept.

    >>> moving_average([0.0, 1.0, 2.0, 3.0, 10.0], 3).tolist()
    [0.0, 1.0, 2.0, 5.0, 10.0]
    """
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1 or (
            window % 2 == 0):
        raise _bad("moving_average", "window", window, "must be an odd int >= 1")
    x = np.asarray(losses, dtype=np.float64)
    h = window // 2
    c = np.concatenate([[0.0], np.cumsum(x)])
    out = np.empty_like(x)
    for i in range(len(x)):
        r = min(h, i, len(x) - 1 - i)
        out[i] = (c[i + r + 1] - c[i - r]) / (2 * r + 1)
    return out


def suggest_lr(lrs: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray,
               rule: str = "steepest") -> float:
    """A learning rate read off a range test's (smoothed) loss-vs-lr curve.

    ``lrs`` must be positive and strictly increasing; ``losses`` has one entry per lr. Entries
    from the first non-finite loss on are ignored (the run diverged there). Rules:

    * ``"steepest"``: the lr where the loss falls fastest against log(lr), i.e. the minimum of
      ``d loss / d log(lr)`` (``numpy.gradient``, so unevenly spaced lrs are fine), searched
      only up to the minimum of the loss, where the descent ends. If the minimum is within the
      first two points there is no descent to measure, and the ``"min/10"`` answer is returned.
    * ``"min/10"``: one tenth of the lr at which the loss is smallest (a safety margin below
      the edge of divergence).

    Pass a smoothed curve: the derivative of raw per-batch losses is mostly noise.

    >>> import numpy as np
    >>> lrs = np.logspace(-5, 0, 51)             # 10 points per decade
    >>> losses = 3 - np.tanh(np.log10(lrs) + 3)  # steepest descent at lr = 1e-3
    >>> round(float(suggest_lr(lrs, losses)), 12)  # logspace: NumPy's power, a few ulps off
    0.001
    >>> float(suggest_lr(lrs, losses, rule="min/10"))  # this loss keeps falling: max lr / 10
    0.1
    """
    if rule not in RULES:
        raise _bad("suggest_lr", "rule", rule, f"must be one of {', '.join(map(repr, RULES))}")
    x = np.asarray(lrs, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if x.ndim != 1 or y.shape != x.shape:
        raise _bad("suggest_lr", "losses", f"<shape {y.shape}>",
                   f"must have the shape of lrs {x.shape} (1-D)")
    if len(x) < 1:
        raise _bad("suggest_lr", "lrs", "<empty>", "must have at least 1 value")
    if not np.all(np.isfinite(x)) or np.any(x <= 0) or np.any(np.diff(x) <= 0):
        raise _bad("suggest_lr", "lrs", _short(x),
                   "must be finite, > 0 and strictly increasing")
    bad = np.flatnonzero(~np.isfinite(y))
    n = int(bad[0]) if len(bad) else len(y)
    if n == 0:
        raise _bad("suggest_lr", "losses", _short(y), "must start with a finite value")
    x, y = x[:n], y[:n]
    imin = int(np.argmin(y))
    if rule == "min/10" or imin < 2:
        return float(x[imin] / 10)
    grad = np.gradient(y[: imin + 1], np.log(x[: imin + 1]))
    return float(x[int(np.argmin(grad))])


def _short(a: np.ndarray) -> str:
    s = np.array2string(a, precision=3, threshold=6, edgeitems=2)
    return s.replace("\n", "")


def lr_range_test(config: TrainConfig | Mapping[str, Any], lr_min: float = 1e-6,
                  lr_max: float = 1.0, steps: int = 100, *, beta: float = 0.9,
                  diverge: float = 4.0, rule: str = "steepest", window: int | None = None,
                  log: Callable[[str], None] | None = None) -> LRRangeResult:
    """Run the learning-rate range test on ``config``'s model, data and optimizer.

    The model the run would start from (``--init-from``'s weights, loaded as the run loads
    them: :meth:`train.run.setup.RunSetup.initial_params`; else a random init from
    ``config.seed``) is trained, its optimizer fresh, for up to ``steps`` steps with the
    schedule :func:`exponential_schedule` ``(lr_min, lr_max, steps)``; the config's own lr,
    schedule, step count, evaluation and checkpoint settings are not used, and nothing is
    written to disk. The test stops early at the first step whose loss is not finite or whose causal
    smoothed loss (:func:`ema` with ``beta``) exceeds ``diverge`` times its smallest value so
    far. The suggestion is :func:`suggest_lr` ``(lrs, smoothed, rule)`` on the centred moving
    average over ``window`` steps (default: ``steps // 20`` rounded up to odd, at least 3) of
    the steps before the divergence.

    ``log`` (e.g. ``print``) receives a line every ``steps // 10`` steps. Raises ``ValueError``
    naming the parameter, its value and the rule for bad arguments or config."""
    fn = "lr_range_test"
    check_range(fn, lr_min, lr_max, steps)
    if not _is_real(beta) or not 0 <= beta < 1:
        raise _bad(fn, "beta", beta, "must be a number in [0, 1)")
    if not _is_real(diverge) or not math.isfinite(diverge) or diverge <= 1:
        raise _bad(fn, "diverge", diverge, "must be a finite number > 1")
    if rule not in RULES:
        raise _bad(fn, "rule", rule, f"must be one of {', '.join(map(repr, RULES))}")
    if window is None:
        window = max(3, steps // 20 | 1)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise _bad(fn, "window", window, "must be an odd int >= 1")
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg = cfg.normalized().validate()

    schedule = exponential_schedule(lr_min, lr_max, steps)
    setup = prepare_run(cfg, None, "lr_finder", validate=lambda _: (schedule, {}))
    _, _, (batcher,), _ = setup.load_data(val=False)
    # the setup's config: --init-from's model and tokenizer, the resolved batch
    cfg, model_cfg, devices = setup.cfg, setup.model_cfg, setup.devices

    params, init_line = setup.initial_params()  # --init-from: the run's weights, as it loads them
    if init_line is not None and log is not None:
        log(init_line)
    tx = make_optimizer(cfg, schedule, params)
    rule_fp16 = loss_scale_rule(cfg)  # float16: dynamic loss scaling, as in training
    p_train = make_train_step(model_cfg, tx, cfg.seed, devices, schedule=schedule,
                              loss_scale=rule_fp16, documents=setup.documents)
    state = replicate(init_state(params, tx, rule_fp16), devices)

    t0 = t_compiled = time.perf_counter()
    lrs: list[float] = []
    losses: list[float] = []
    smooth: list[float] = []
    m, best = 0.0, math.inf
    stopped_at, reason = None, f"completed {steps} steps"
    every = max(1, steps // 10)
    for t in range(steps):
        state, metrics = p_train(state, batcher.batch(t))
        if t == 0:
            jax.block_until_ready(metrics)
            t_compiled = time.perf_counter()
        got = jax.device_get({"loss": metrics["loss"], "lr": metrics["lr"]})  # one sync per
        loss = float(got["loss"][0])  # step: we must look
        lrs.append(float(got["lr"][0]))  # the lr this update applied
        losses.append(loss)
        m = beta * m + (1 - beta) * loss
        s = m / (1 - beta ** (t + 1)) if math.isfinite(loss) else math.inf
        smooth.append(s)
        best = min(best, s)
        if log is not None and (t % every == 0 or t == steps - 1):
            log(f"step {t:4d}/{steps} | lr {lrs[-1]:.3e} | loss {loss:.4f} | ema {s:.4f}")
        if not math.isfinite(loss) or s > diverge * best:
            stopped_at = t
            reason = (f"diverged at step {t} (lr {lrs[-1]:.3e}): " + (
                f"loss is {loss}" if not math.isfinite(loss)
                else f"ema of the loss {s:.4f} > {diverge:g} x its best {best:.4f}"))
            if log is not None:
                log(reason)
            break
    wall = time.perf_counter() - t0

    x, y = np.asarray(lrs), np.asarray(losses)
    # the suggestion reads the steps before the divergence (and before any non-finite loss)
    n = len(x) if stopped_at is None else max(stopped_at, 1)
    finite = np.isfinite(y[:n])
    k = n if finite.all() else int(np.argmin(finite))
    sm = np.full_like(y, np.nan)
    if k == 0:  # the very first loss is not finite: nothing to read
        suggestion = float(x[0])
    else:
        sm[:k] = moving_average(y[:k], window)
        up = np.r_[True, np.diff(x[:k]) > 0]  # float16 steps skipped by the loss scaler repeat
        suggestion = suggest_lr(x[:k][up], sm[:k][up], rule)  # their lr: read each lr once
    return LRRangeResult(
        lrs=x, losses=y, ema=np.asarray(smooth), smoothed=sm, suggested_lr=suggestion,
        rule=rule, schedule=schedule, steps=len(x), stopped_at=stopped_at, stop_reason=reason,
        wall_s=wall, compile_s=t_compiled - t0)
