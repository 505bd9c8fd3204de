"""``--lr-scheduler`` names -> schedules (PyTorch-exact where torch has the scheduler).

The torch names map to :mod:`schedules.torch` (torch's arguments with ``optimizer`` replaced by
``lr``), so the learning rate at step ``t`` equals what ``torch.optim.lr_scheduler`` gives after
``t`` calls to ``scheduler.step()``. ``wsd`` and ``constant`` use the algebra. ``--schedule``
takes any spec of the algebra's text syntax instead (absolute values: ``--lr`` is not applied).

Horizon: ``H = total_steps - warmup_steps`` (``total_steps`` defaults to ``--steps``). With
``--warmup-steps=W > 0`` (all names but ``onecycle`` and ``wsd``, which have their own warmup)
the schedule is torch's ``SequentialLR([LinearLR(lr, start_factor=1/W, end_factor=1,
total_iters=W), main], milestones=[W])``.

The outermost torch scheduler gets ``horizon=max(steps, total_steps)``: torch's exact values for
every step of the run are tabulated once on the host and gathered inside the jitted step (see
:mod:`schedules.torch`), so the optimizer uses exactly PyTorch's learning rates.

==================  ==============================================================================
name                schedule (torch names; ``main`` when warmup wraps it)
==================  ==============================================================================
constant            ``schedules.constant(lr)``
steplr              ``StepLR(lr, step_size=--lr-step-size, gamma=--lr-gamma)``
multistep           ``MultiStepLR(lr, milestones=--lr-milestones, gamma=--lr-gamma)``
linear              ``LinearLR(lr, --lr-start-factor, --lr-end-factor, total_iters=H)``
exponential         ``ExponentialLR(lr, gamma=--lr-gamma)``
cosine              ``CosineAnnealingLR(lr, T_max=H, eta_min=--min-lr)``
cosine-restarts     ``CosineAnnealingWarmRestarts(lr, T_0=--lr-step-size or H, T_mult=--lr-t-mult,
                    eta_min=--min-lr)``
polynomial          ``PolynomialLR(lr, total_iters=H, power=--lr-power)``
onecycle            ``OneCycleLR(max_lr=lr, total_steps=total, pct_start=W/total or 0.3)``
cyclic              ``CyclicLR(lr, base_lr=--min-lr or lr/10, max_lr=lr,
                    step_size_up=--lr-step-size or H//4)``
wsd                 ``schedules.wsd(lr, total, warmup=W, decay=--wsd-decay-fraction*total,
                    end=--min-lr, shape=--wsd-shape)``
lambda              ``LambdaLR(lr, schedules.expr(--lr-lambda))`` (a safe expression of ``step``)
sequential          ``SequentialLR(lr, [each of --lr-chain], milestones=--lr-milestones)``
                    (global steps; the warmup is prepended as the first child); each child's
                    horizon is its segment's length
chained             ``ChainedScheduler([warmup LinearLR, each of --lr-chain], lr)`` (factors
                    multiply; every child runs from step 0 over ``total`` steps)
==================  ==============================================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import schedules as S
from schedules import torch as T
from schedules.torch import TorchSchedule

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["build_schedule"]


def _need(cfg: TrainConfig, name: str, what: str) -> Any:
    from .config import flag

    v = getattr(cfg, name)
    if v is None or v == ():
        raise ValueError(f"{flag(name)} is required by --lr-scheduler={cfg.lr_scheduler} "
                         f"({what})")
    return v


def _one(cfg: TrainConfig, name: str, horizon: int) -> S.Schedule:
    """The schedule called ``name`` over ``horizon`` steps, without warmup."""
    lr = float(cfg.lr)
    horizon = max(1, int(horizon))
    if name == "constant":
        return S.constant(lr)
    if name == "steplr":
        return T.StepLR(lr, step_size=_need(cfg, "lr_step_size", "the decay period"),
                        gamma=cfg.lr_gamma)
    if name == "multistep":
        return T.MultiStepLR(lr, milestones=list(_need(cfg, "lr_milestones", "decay steps")),
                             gamma=cfg.lr_gamma)
    if name == "linear":
        return T.LinearLR(lr, start_factor=cfg.lr_start_factor, end_factor=cfg.lr_end_factor,
                          total_iters=horizon)
    if name == "exponential":
        return T.ExponentialLR(lr, gamma=cfg.lr_gamma)
    if name == "cosine":
        return T.CosineAnnealingLR(lr, T_max=horizon, eta_min=cfg.min_lr)
    if name == "cosine-restarts":
        return T.CosineAnnealingWarmRestarts(lr, T_0=cfg.lr_step_size or horizon,
                                             T_mult=cfg.lr_t_mult, eta_min=cfg.min_lr)
    if name == "polynomial":
        return T.PolynomialLR(lr, total_iters=horizon, power=cfg.lr_power)
    if name == "onecycle":
        total = cfg.schedule_steps
        pct = cfg.warmup / total if cfg.warmup else 0.3
        return T.OneCycleLR(lr, max_lr=lr, total_steps=total, pct_start=pct)
    if name == "cyclic":
        base = cfg.min_lr if cfg.min_lr > 0 else lr / 10
        return T.CyclicLR(lr, base_lr=base, max_lr=lr,
                          step_size_up=cfg.lr_step_size or max(1, horizon // 4))
    if name == "wsd":
        total = cfg.schedule_steps
        decay = round(cfg.wsd_decay_fraction * total)
        decay = min(decay, total - cfg.warmup)
        return S.wsd(lr, total=total, warmup=cfg.warmup, decay=decay, end=cfg.min_lr,
                     shape=cfg.wsd_shape)
    if name == "lambda":
        text = _need(cfg, "lr_lambda", "a safe expression of `step`, e.g. '0.95 ** (step // 10)'")
        try:
            fn = S.expr(text)
        except ValueError as e:
            raise ValueError(f"--lr-lambda={text!r} is invalid: {e}") from None
        return T.LambdaLR(lr, lr_lambda=fn)
    raise ValueError(f"--lr-scheduler={name!r} is not a single schedule")


def build_schedule(cfg: TrainConfig) -> S.Schedule:
    """The learning-rate schedule of ``cfg`` (a pure ``step -> lr`` pytree).

    Raises ``ValueError`` naming the flag when an argument it needs is missing or invalid."""
    if cfg.schedule is not None:
        try:
            return S.parse(cfg.schedule)
        except ValueError as e:
            raise ValueError(f"--schedule={cfg.schedule!r} is invalid: {e}") from None
    name = cfg.lr_scheduler
    total = cfg.schedule_steps
    W = cfg.warmup
    H = max(1, total - W)
    try:
        warm = (T.LinearLR(cfg.lr, start_factor=1.0 / W, end_factor=1.0, total_iters=W)
                if W > 0 and name not in ("onecycle", "wsd") else None)
        if name in ("sequential", "chained"):
            chain = _need(cfg, "lr_chain", "the child schedulers, e.g. steplr,linear")
            if name == "sequential":
                ms = list(cfg.lr_milestones)
                if len(ms) != len(chain) - 1:
                    raise ValueError(
                        f"--lr-milestones={','.join(map(str, ms)) or '(none)'} is invalid: "
                        f"--lr-scheduler=sequential with --lr-chain={','.join(chain)} needs "
                        f"{len(chain) - 1} milestone(s)")
                if ms and (ms[0] <= W or ms[-1] >= total):
                    raise ValueError(f"--lr-milestones={','.join(map(str, ms))} is invalid: "
                                     f"sequential milestones are global steps and must lie in "
                                     f"({W}, {total}) (after the warmup, before the end)")
                bounds = [W, *ms, total]
                kids = [_one(cfg, c, bounds[i + 1] - bounds[i]) for i, c in enumerate(chain)]
                if warm is not None:
                    kids, ms, warm = [warm, *kids], [W, *ms], None
                main = T.SequentialLR(cfg.lr, schedulers=kids, milestones=ms)
            else:
                kids = [_one(cfg, c, total) for c in chain]
                if warm is not None:  # torch cannot nest a ChainedScheduler in a SequentialLR
                    kids, warm = [warm, *kids], None
                main = T.ChainedScheduler(kids, lr=cfg.lr)
        else:
            main = _one(cfg, name, H)
        if warm is not None:
            if isinstance(main, TorchSchedule):
                main = T.SequentialLR(cfg.lr, schedulers=[warm, main], milestones=[W])
            else:  # constant: the algebra's join (same values)
                main = S.join(warm, main, at=[W])
        main(0), main(max(cfg.steps, total) - 1)  # torch-invalid combinations raise here
    except S.SpecError:
        raise
    except ValueError as e:
        msg = str(e)
        if msg.startswith("--"):
            raise
        raise ValueError(f"--lr-scheduler={name} with these arguments is invalid: {msg}") from None
    if isinstance(main, TorchSchedule) and main.horizon is None:
        # embed torch's exact values for every step of the run in the traced computation
        d = main.to_config()
        d["horizon"] = max(cfg.steps, total)
        main = S.from_config(d)
    return main
