"""Random torch-scheduler configurations, built both in real torch and in schedules.torch.

A spec is ``(class_name, kwargs)`` for a leaf or ``("SequentialLR", {"schedulers": [...],
"milestones": [...]})`` / ``("ChainedScheduler", {"schedulers": [...]})``; lambdas are
given as ``schedules.expr`` texts (callable by torch too).
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import torch

import schedules as S
from schedules import torch as T

LEAVES = ["LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR", "LinearLR",
          "ExponentialLR", "PolynomialLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
          "CyclicLR", "OneCycleLR"]

LAMBDAS = ["0.95 ** step", "1.0 / (1 + step)", "min(1, (step + 1) / 7)", "0.5 ** (step // 13)",
           "0.1 + 0.5 * (1 + cos(pi * step / 97))"]  # (a user cos minimum is float32-inexact)
MULT_LAMBDAS = ["0.99", "0.98 if step % 7 == 0 else 1.0", "1.0 - 1.0 / (step + 50)"]


def rand_leaf(rng: random.Random, name: str, n: int) -> tuple[str, dict[str, Any]]:
    u = rng.uniform
    if name == "LambdaLR":
        return name, {"lr_lambda": rng.choice(LAMBDAS)}
    if name == "MultiplicativeLR":
        return name, {"lr_lambda": rng.choice(MULT_LAMBDAS)}
    if name == "StepLR":
        return name, {"step_size": rng.randint(1, 60), "gamma": u(0.05, 1.0)}
    if name == "MultiStepLR":
        ms = sorted(rng.randint(0, n) for _ in range(rng.randint(0, 6)))
        rng.shuffle(ms) if rng.random() < 0.2 else None
        return name, {"milestones": ms, "gamma": u(0.05, 0.99)}
    if name == "ConstantLR":
        return name, {"factor": rng.choice([u(0.01, 1.0), 1.0 / 3, 1.0]),
                      "total_iters": rng.randint(0, n // 2)}
    if name == "LinearLR":
        return name, {"start_factor": u(0.01, 1.0), "end_factor": u(0.0, 1.0),
                      "total_iters": rng.randint(1, n)}
    if name == "ExponentialLR":
        return name, {"gamma": u(0.95, 1.0)}
    if name == "PolynomialLR":
        return name, {"total_iters": rng.randint(1, n), "power": u(0.5, 3.0)}
    if name == "CosineAnnealingLR":
        return name, {"T_max": rng.randint(1, n), "eta_min": rng.choice([0.0, u(0.0, 0.5)])}
    if name == "CosineAnnealingWarmRestarts":
        return name, {"T_0": rng.randint(1, 50), "T_mult": rng.randint(1, 3),
                      "eta_min": rng.choice([0.0, u(0.0, 0.05)])}
    if name == "CyclicLR":
        mode = rng.choice(["triangular", "triangular2", "exp_range"])
        return name, {"base_lr": u(0.001, 0.1), "max_lr": u(0.1, 1.0),
                      "step_size_up": rng.randint(1, 40),
                      "step_size_down": rng.choice([None, rng.randint(1, 40)]), "mode": mode,
                      "gamma": u(0.98, 1.0)}
    if name == "OneCycleLR":
        total = rng.randint(n + 1, 2 * n + 2)
        return name, {"max_lr": u(0.1, 2.0), "total_steps": total,
                      "pct_start": rng.choice([0.3, u(0.1, 0.45)]),
                      "anneal_strategy": rng.choice(["cos", "linear"]),
                      "div_factor": u(5, 30), "final_div_factor": rng.choice([1e4, u(10, 1e3)]),
                      "three_phase": rng.random() < 0.3}
    raise KeyError(name)


def rand_spec(rng: random.Random, n: int, depth: int = 0) -> tuple[str, dict[str, Any]]:
    r = rng.random()
    if depth < 2 and r < 0.2:
        k = rng.randint(2, 3)
        kids = [rand_spec(rng, n, depth + 1) if i == 0 else rand_leaf(rng, rng.choice(LEAVES), n)
                for i in range(k)]
        ms = sorted(rng.sample(range(1, n), k - 1))
        return "SequentialLR", {"schedulers": kids, "milestones": ms}
    if depth < 2 and r < 0.35:
        k = rng.randint(2, 3)
        kids = [rand_spec(rng, n, depth + 1) if rng.random() < 0.3 else
                rand_leaf(rng, rng.choice(LEAVES), n) for _ in range(k)]
        return "ChainedScheduler", {"schedulers": kids}
    return rand_leaf(rng, rng.choice(LEAVES), n)


def _lam(kw: dict[str, Any]) -> dict[str, Any]:
    kw = dict(kw)
    if "lr_lambda" in kw:
        kw["lr_lambda"] = S.expr(kw["lr_lambda"])
    return kw


def build_ours(spec: tuple[str, dict[str, Any]], lr: float) -> T.TorchSchedule:
    name, kw = spec
    if name == "SequentialLR":
        return T.SequentialLR(lr, [build_ours(c, lr) for c in kw["schedulers"]], kw["milestones"])
    if name == "ChainedScheduler":
        return T.ChainedScheduler([build_ours(c, lr) for c in kw["schedulers"]], lr=lr)
    return getattr(T, name)(lr, **_lam(kw))


def build_torch(spec: tuple[str, dict[str, Any]], opt: torch.optim.Optimizer) -> Any:
    name, kw = spec
    L = torch.optim.lr_scheduler
    if name == "SequentialLR":
        return L.SequentialLR(opt, [build_torch(c, opt) for c in kw["schedulers"]],
                              kw["milestones"])
    if name == "ChainedScheduler":
        return L.ChainedScheduler([build_torch(c, opt) for c in kw["schedulers"]], optimizer=opt)
    return getattr(L, name)(opt, **_lam(kw))


def make_opt(lr: float | list[float]) -> torch.optim.Optimizer:
    lrs = lr if isinstance(lr, list) else [lr]
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": x} for x in lrs]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def torch_lrs(spec: Any, lr: float, n: int) -> tuple[list[float], Exception | None]:
    """lrs at steps 0..n-1 (fewer if torch raised) and the exception, if any."""
    opt = make_opt(lr)
    out: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            sch = spec(opt) if callable(spec) else build_torch(spec, opt)
            out.append(float(opt.param_groups[0]["lr"]))
            for _ in range(n - 1):
                opt.step()
                sch.step()
                out.append(float(opt.param_groups[0]["lr"]))
        except (ZeroDivisionError, NotImplementedError, ValueError, OverflowError) as e:
            return out, e
    return out, None
