"""The trainer's scheduler flags name exactly the library's scheduler (issue 10, issue 15 item 5).

A seeded checker draws random scheduler flag sets (torch names, ``hf:`` names, Megatron styles;
a warmup flag only when drawn), parses them with the real CLI parser, and compares the schedule
the trainer uses (``train.schedule.build.build_schedule``) with the library's own sequence,
built here independently from the same flags: ``torch.optim.lr_scheduler`` driven by a torch
optimizer
(arguments not given are left out of the torch call, so torch's own defaults apply; lengths are
the segment's length), ``transformers.get_scheduler``, and a plain-Python transcription of
Megatron-LM's ``get_lr`` counting samples. Relative tolerance 1e-12 (host float64 on both
sides: torch's and our replay do the same operations; Megatron's sample counts differ from
iterations by a factor only). One real ``python -m train`` run checks the logged lr: the
float32 the update applied, torch's value rounded once.
"""

from __future__ import annotations

import ast
import json
import math
import os
import random

import numpy as np
import pytest

import schedules as S

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import train.schedule.build as LR  # noqa: E402
import train.schedule.names as N  # noqa: E402
from reference.megatron import get_lr  # noqa: E402
from train.__main__ import parse_config  # noqa: E402
from train.schedule.build import build_schedule  # noqa: E402

L = torch.optim.lr_scheduler
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RTOL = 1e-12


def torch_lrs(factory, n: int, lr: float) -> list[float]:
    """lr of update t = optimizer's lr after t scheduler steps (each after optimizer.step())."""
    p = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([p], lr=lr, momentum=0.9)
    sched = factory(opt)
    out = []
    for t in range(n):
        out.append(float(opt.param_groups[0]["lr"]))
        if t < n - 1:
            opt.step()
            sched.step()
    return out


def ours(argv: list[str]) -> tuple[list[float], object]:
    cfg, _ = parse_config(argv)
    s = build_schedule(cfg)
    return [s(t) for t in range(cfg.steps)], cfg


def close(a: list[float], b: list[float], peak: float, what: str) -> None:
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-15 * peak, err_msg=what)


# -- random torch flag sets -------------------------------------------------------------------

LAMBDAS = [("0.97 ** step", lambda s: 0.97 ** s), ("1 / (1 + 0.05 * step)",
                                                    lambda s: 1 / (1 + 0.05 * s)),
           ("0.5 ** (step // 7)", lambda s: 0.5 ** (s // 7))]


def _args(rng: random.Random, name: str, n: int, flags: dict, kw: dict) -> None:
    """Draw ``name``'s flags into ``flags`` (shared by children) and its torch kwargs."""
    def maybe(p: float = 0.5) -> bool:
        return rng.random() < p

    def put(field: str, value, arg: str | None = None) -> None:
        if field in flags:  # children share flags: one value per flag
            value = flags[field]
        flags[field] = value
        if arg:
            kw[arg] = value

    if name == "constant" and maybe():
        put("lr_factor", rng.choice([0.5, 0.25, 1.0]), "factor")
        if maybe():
            put("lr_total_iters", rng.randint(1, n), "total_iters")
    elif name == "steplr":
        put("lr_step_size", rng.randint(1, max(1, n // 3)), "step_size")
        if maybe():
            put("lr_gamma", rng.choice([0.5, 0.3, 0.9]), "gamma")
    elif name == "multistep":
        ms = sorted(rng.sample(range(1, n + 10), 3))
        put("lr_milestones", ",".join(map(str, ms)))
        kw["milestones"] = [int(x) for x in flags["lr_milestones"].split(",")]
        if maybe():
            put("lr_gamma", rng.choice([0.5, 0.3]), "gamma")
    elif name == "linear":
        if maybe():
            put("lr_start_factor", rng.choice([0.1, 0.5]), "start_factor")
        if maybe():
            put("lr_end_factor", rng.choice([0.0, 0.2, 1.0]), "end_factor")
        if maybe():
            put("lr_total_iters", rng.randint(1, n), "total_iters")
    elif name == "exponential":
        put("lr_gamma", rng.choice([0.97, 0.9]), "gamma")
    elif name == "cosine" and maybe():
        put("min_lr", rng.choice([1e-5, 3e-4]), "eta_min")
    elif name == "cosine-restarts":
        if maybe():
            put("lr_t0", rng.randint(1, max(1, n // 2)), "T_0")
        if maybe():
            put("lr_t_mult", rng.choice([1, 2]), "T_mult")
        if maybe():
            put("min_lr", 1e-5, "eta_min")
    elif name == "polynomial":
        if maybe():
            put("lr_total_iters", rng.randint(1, n), "total_iters")
        if maybe():
            put("lr_power", rng.choice([0.5, 2.0]), "power")
    elif name == "onecycle":
        for field, arg, vals in (("lr_pct_start", "pct_start", [0.2, 0.4]),
                                 ("lr_anneal_strategy", "anneal_strategy", ["cos", "linear"]),
                                 ("lr_div_factor", "div_factor", [10.0, 25.0]),
                                 ("lr_final_div_factor", "final_div_factor", [100.0, 1e4]),
                                 ("lr_three_phase", "three_phase", [True, False])):
            if maybe(0.4):
                put(field, rng.choice(vals), arg)
    elif name == "cyclic":
        put("lr_base", rng.choice([1e-4, 5e-4]), "base_lr")
        for field, arg, vals in (("lr_step_size_up", "step_size_up", [3, 7, 20]),
                                 ("lr_step_size_down", "step_size_down", [4, 9]),
                                 ("lr_mode", "mode", ["triangular", "triangular2", "exp_range"]),
                                 ("lr_gamma", "gamma", [0.99])):
            if maybe(0.5):
                put(field, rng.choice(vals), arg)
    elif name == "lambda":
        text, _ = rng.choice(LAMBDAS)
        put("lr_lambda", text)
        kw["lr_lambda"] = dict((t, f) for t, f in LAMBDAS)[flags["lr_lambda"]]


#: flags that children share: name -> {field: torch argument}
SHARED = {"constant": {"lr_factor": "factor", "lr_total_iters": "total_iters"},
          "steplr": {"lr_gamma": "gamma"}, "exponential": {"lr_gamma": "gamma"},
          "linear": {"lr_start_factor": "start_factor", "lr_end_factor": "end_factor",
                     "lr_total_iters": "total_iters"},
          "cosine": {"min_lr": "eta_min"},
          "polynomial": {"lr_total_iters": "total_iters", "lr_power": "power"}}
USED_LENGTH: list[bool] = []  # did the last torch construction take a segment length?


def _torch_one(name: str, opt, kw: dict, length: int, lr: float):
    kw = dict(kw)
    if (name in ("constant", "linear", "polynomial") and "total_iters" not in kw) or (
            name == "cosine-restarts" and "T_0" not in kw) or name in ("cosine", "onecycle"):
        USED_LENGTH.append(True)
    cls = {"constant": L.ConstantLR, "steplr": L.StepLR, "multistep": L.MultiStepLR,
           "linear": L.LinearLR, "exponential": L.ExponentialLR, "cosine": L.CosineAnnealingLR,
           "cosine-restarts": L.CosineAnnealingWarmRestarts, "polynomial": L.PolynomialLR,
           "onecycle": L.OneCycleLR, "cyclic": L.CyclicLR, "lambda": L.LambdaLR}[name]
    if name == "constant":
        kw.setdefault("factor", 1.0)  # "constant" is a constant lr; documented
    if name in ("constant", "linear", "polynomial"):
        kw.setdefault("total_iters", length)
    if name == "cosine":
        kw["T_max"] = length
    if name == "cosine-restarts":
        kw.setdefault("T_0", length)
    if name == "onecycle":
        kw.update(max_lr=lr, total_steps=length)
    if name == "cyclic":
        kw["max_lr"] = lr
    return cls(opt, **kw)


def torch_case(rng: random.Random) -> tuple[list[str], object, int, float, str]:
    n = rng.randint(20, 80)
    lr = rng.choice([1e-3, 3e-3, 0.1])
    total = n if rng.random() < 0.6 else n + rng.randint(1, 30)
    kind = rng.choice([*N.TORCH_SCHEDULERS, "sequential", "chained"])
    flags: dict = {}
    argv = [f"--steps={n}", f"--lr={lr}", f"--lr-scheduler={kind}"]
    if total != n:
        argv.append(f"--total-steps={total}")
    W = 0
    if rng.random() < 0.35:
        if rng.random() < 0.5:
            W = rng.randint(1, n // 4)
            argv.append(f"--warmup-steps={W}")
        else:
            r = rng.choice([0.05, 0.1, 0.13])
            W = math.ceil(total * r)
            argv.append(f"--warmup-ratio={r}")
    if kind in ("sequential", "chained"):
        pool = ["constant", "steplr", "linear", "exponential", "cosine", "polynomial", "lambda"]
        chain = rng.sample(pool, rng.randint(2, 3))
        argv.append(f"--lr-chain={','.join(chain)}")
        kws = []
        for c in chain:
            kw: dict = {}
            _args(rng, c, total - W, flags, kw)
            kws.append(kw)
        for c, kw in zip(chain, kws):  # a flag drawn for one child applies to all that read it
            for field, arg in SHARED.get(c, {}).items():
                if field in flags:
                    kw[arg] = flags[field]
        if kind == "sequential":
            cuts = sorted(rng.sample(range(W + 1, total), len(chain) - 1))
            argv.append(f"--lr-milestones={','.join(map(str, cuts))}")
            bounds = [W, *cuts, total]
    else:
        kw = {}
        _args(rng, kind, total - W, flags, kw)
    for field, v in flags.items():
        argv.append(f"--{field.replace('_', '-')}={v}" if not isinstance(v, bool)
                    else (f"--{field.replace('_', '-')}" if v
                          else f"--no-{field.replace('_', '-')}"))

    def factory(opt):
        if kind == "sequential":
            USED_LENGTH.append(True)  # --total-steps ends the last segment
        warm = (L.LinearLR(opt, start_factor=1.0 / W, end_factor=1.0, total_iters=W)
                if W else None)
        if kind == "sequential":
            kids = [_torch_one(c, opt, k, bounds[i + 1] - bounds[i], lr)
                    for i, (c, k) in enumerate(zip(chain, kws))]
            ms = list(cuts)
            if warm is not None:
                return L.SequentialLR(opt, [warm, *kids], milestones=[W, *ms])
            return L.SequentialLR(opt, kids, milestones=ms)
        if kind == "chained":
            kids = [_torch_one(c, opt, k, total, lr) for c, k in zip(chain, kws)]
            return L.ChainedScheduler(([warm] if warm is not None else []) + kids,
                                      optimizer=opt)
        main = _torch_one(kind, opt, kw, total - W, lr)
        return main if warm is None else L.SequentialLR(opt, [warm, main], milestones=[W])

    return argv, factory, n, lr, " ".join(argv)


@pytest.mark.parametrize("seed", range(6))
def test_torch_names_are_torch(seed: int, capsys) -> None:
    rng = random.Random(1000 + seed)
    for _ in range(12):
        argv, factory, n, lr, what = torch_case(rng)
        USED_LENGTH.clear()
        ref = torch_lrs(factory, n, lr)
        total = [a for a in argv if a.startswith("--total-steps=")]
        if total and not USED_LENGTH and not any(a.startswith("--warmup") for a in argv):
            # torch took no length from --total-steps: giving it is an error naming it
            with pytest.raises(SystemExit):
                ours(argv)
            assert f"{total[0]} is not used by" in capsys.readouterr().err
            argv.remove(total[0])
        mine, _ = ours(argv)
        close(mine, ref, lr, what)


# -- transformers -----------------------------------------------------------------------------


def hf_case(rng: random.Random) -> tuple[list[str], list[float], float, str]:
    n = rng.randint(20, 80)
    lr = rng.choice([1e-3, 3e-3])
    name = rng.choice(list(N.HF_SCHEDULERS))
    typed = {"warmup_stable_decay": rng.choice(["wsd", "warmup_stable_decay", "WSD"])}.get(
        name, name)
    argv = [f"--steps={n}", f"--lr={lr}", f"--lr-scheduler=hf:{typed}"]
    W = 0
    if name != "constant" and rng.random() < 0.6:
        if rng.random() < 0.5:
            W = rng.randint(1, n // 4)
            argv.append(f"--warmup-steps={W}")
        else:
            r = rng.choice([0.05, 0.1, 0.13])
            W = math.ceil(n * r)
            argv.append(f"--warmup-ratio={r}")
    kw: dict = {}

    def opt_flag(field: str, key: str, vals: list, p: float = 0.5) -> None:
        if rng.random() < p:
            v = rng.choice(vals)
            kw[key] = v
            argv.append(f"--{field.replace('_', '-')}={v}")

    if name in ("cosine", "cosine_with_restarts", "cosine_with_min_lr",
                "cosine_warmup_with_min_lr", "warmup_stable_decay"):
        opt_flag("lr_num_cycles", "num_cycles", [1, 2] if name == "cosine_with_restarts"
                 else [0.5, 0.3])
    if name == "polynomial":
        opt_flag("min_lr", "lr_end", [1e-6, 1e-5])
        opt_flag("lr_power", "power", [0.5, 2.0])
    if name == "inverse_sqrt":
        opt_flag("lr_timescale", "timescale", [5, 50])
    if name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr"):
        if rng.random() < 0.5:
            opt_flag("min_lr", "min_lr", [1e-5], p=1)
        else:
            opt_flag("min_lr_ratio", "min_lr_rate", [0.1], p=1)
    if name == "cosine_warmup_with_min_lr":
        opt_flag("warmup_lr_ratio", "warmup_lr_rate", [0.05])
    if name == "warmup_stable_decay":
        opt_flag("lr_num_decay_steps", "num_decay_steps", [5, 10], p=1)
        opt_flag("lr_warmup_type", "warmup_type", ["linear", "cosine", "1-sqrt"])
        opt_flag("lr_decay_type", "decay_type", ["linear", "cosine", "1-sqrt"])
        opt_flag("min_lr_ratio", "min_lr_ratio", [0.0, 0.1])

    def factory(opt):
        return transformers.get_scheduler(
            name, opt, num_warmup_steps=None if name == "constant" else W,
            num_training_steps=n, scheduler_specific_kwargs=kw)

    return argv, torch_lrs(factory, n, lr), lr, " ".join(argv)


@pytest.mark.parametrize("seed", range(3))
def test_hf_names_are_transformers(seed: int) -> None:
    rng = random.Random(2000 + seed)
    for _ in range(12):
        argv, ref, lr, what = hf_case(rng)
        mine, _ = ours(argv)
        close(mine, ref, lr, what)


# -- Megatron ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_megatron_styles_are_megatron(seed: int) -> None:
    rng = random.Random(3000 + seed)
    styles = ["none", "constant", "linear", "cosine", "inverse-square-root", "WSD"]
    for i in range(12):
        style = styles[i % len(styles)]
        n = rng.randint(20, 80)
        lr = rng.choice([1e-3, 3e-3])
        gbs = rng.choice([1, 8, 48])  # Megatron counts samples: step(increment=gbs)
        argv = [f"--steps={n}", f"--lr={lr}", "--devices=1", f"--batch-size={gbs}",
                f"--lr-decay-style={style.lower() if rng.random() < 0.3 else style}"]
        W = rng.choice([0, rng.randint(1, n // 4)])
        if W or rng.random() < 0.5:
            argv.append(f"--lr-warmup-iters={W}")
        init = rng.choice([0.0, 1e-5])
        if init or rng.random() < 0.3:
            argv.append(f"--lr-warmup-init={init}")
        D = n if rng.random() < 0.5 else rng.randint(W + 1, n + 20)
        if rng.random() < 0.3 or D != n:  # noqa: SIM300
            argv.append(f"--lr-decay-iters={D}")
        mn = rng.choice([0.0, 1e-5])
        if mn or rng.random() < 0.3:
            argv.append(f"--min-lr={mn}")
        wsd = wsd_style = None
        if style == "WSD":
            wsd = rng.randint(1, D - W)
            argv.append(f"--lr-wsd-decay-iters={wsd}")
            wsd_style = rng.choice(["linear", "cosine", "exponential", "minus_sqrt", None])
            if wsd_style:
                argv.append(f"--lr-wsd-decay-style={wsd_style}")
            wsd_style = wsd_style or "exponential"  # Megatron's default
        ref = [get_lr(t * gbs, init=init, mx=lr, mn=mn, W=W * gbs, D=D * gbs,
                               style=style, wsd=None if wsd is None else wsd * gbs,
                               wsd_style=wsd_style) for t in range(n)]
        mine, _ = ours(argv)
        close(mine, ref, lr, " ".join(argv))


# -- semantics --------------------------------------------------------------------------------


def test_named_scheduler_has_no_default_warmup() -> None:
    """--lr-scheduler=cosine is torch's CosineAnnealingLR from step 0 (no 10% warmup)."""
    mine, _ = ours(["--steps=50", "--lr=0.1", "--lr-scheduler=cosine"])
    ref = torch_lrs(lambda o: L.CosineAnnealingLR(o, T_max=50), 50, 0.1)
    close(mine, ref, 0.1, "cosine")
    assert mine[0] == 0.1


def test_default_run_is_documented_warmup_cosine() -> None:
    mine, cfg = ours(["--steps=100", "--lr=0.1"])
    ref = torch_lrs(lambda o: L.SequentialLR(o, [
        L.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=10),
        L.CosineAnnealingLR(o, T_max=90)], milestones=[10]), 100, 0.1)
    close(mine, ref, 0.1, "default")
    assert cfg.warmup == 10


@pytest.mark.parametrize("typed,canon", [("step", "steplr"), ("StepLR", "steplr"),
                                         ("multi_step", "multistep"),
                                         ("MultiStepLR", "multistep"),
                                         ("CosineAnnealingLR", "cosine"),
                                         ("ExponentialLR", "exponential"),
                                         ("LinearLR", "linear"), ("OneCycleLR", "onecycle"),
                                         ("CyclicLR", "cyclic"), ("LambdaLR", "lambda"),
                                         ("ConstantLR", "constant"), ("hf:WSD",
                                                                      "hf:warmup_stable_decay")])
def test_aliases(typed: str, canon: str) -> None:
    assert N.canonical_scheduler(typed) == canon


@pytest.mark.parametrize("name", N.CHAINABLE)
def test_every_chainable_name_chains(name: str) -> None:
    """Each name --lr-chain advertises works in sequential and chained (torch's values)."""
    extra = {"steplr": ["--lr-step-size=5"], "exponential": ["--lr-gamma=0.9"],
             "cyclic": ["--lr-base=1e-4", "--lr-step-size-up=5"],
             "lambda": ["--lr-lambda=0.97 ** step"], "multistep": ["--lr-milestones=5,9"]}.get(
                 name, [])
    # multistep's --lr-milestones would also be sequential's boundaries: chained only
    for kind in ("chained",) if name == "multistep" else ("sequential", "chained"):
        other = "linear" if name != "linear" else "constant"
        argv = ["--steps=30", "--lr=0.01", f"--lr-scheduler={kind}",
                f"--lr-chain={other},{name}", *extra]
        if kind == "sequential":
            argv.append("--lr-milestones=10")
        mine, _ = ours(argv)
        assert len(mine) == 30 and all(math.isfinite(v) for v in mine)


@pytest.mark.parametrize("argv,needle", [
    (["--lr-scheduler=cosine", "--lr-chain=steplr,linear"], "--lr-chain='steplr,linear' is not "
     "used by --lr-scheduler=cosine"),
    (["--lr-scheduler=steplr", "--lr-step-size=3", "--lr-milestones=5"], "--lr-milestones='5' "
     "is not used by --lr-scheduler=steplr"),
    (["--lr-scheduler=exponential"], "--lr-gamma is required by --lr-scheduler=exponential"),
    (["--lr-scheduler=cosine", "--lr-decay-style=cosine"], "both given"),
    (["--lr-decay-style=cosine", "--warmup-steps=3"], "--warmup-steps=3 is not used by "
     "--lr-decay-style=cosine"),
    (["--schedule=constant(1e-3)", "--min-lr=0.1"], "--min-lr=0.1 is not used by --schedule"),
    (["--lr-scheduler=hf:constant", "--warmup-steps=3"], "--warmup-steps=3 is not used"),
    (["--lr-scheduler=wsd"], "did you mean hf:wsd"),
    (["--lr-scheduler=cosne"], "did you mean 'cosine'?"),
    (["--lr-scheduler=chained", "--lr-chain=steplr,bogus"], "--lr-chain='steplr,bogus'"),
    (["--lr-scheduler=steplr", "--lr-step-size=0"], "--lr-step-size=0"),
    (["--warmup-steps=3", "--warmup-ratio=0.1"], "not both"),
    (["--lr-decay-style=linear", "--lr-warmup-iters=30"], "--lr-warmup-iters=30 is invalid: "
     "must be < the decay iterations"),
    (["--lr-decay-style=WSD", "--lr-wsd-decay-iters=5", "--lr-wsd-decay-style=minus-sqrt"],
     "did you mean 'minus_sqrt'?"),
    (["--lr-decay-style=WSD"], "--lr-wsd-decay-iters is required by --lr-decay-style=WSD"),
    (["--lr-decay-style=linear", "--lr-wsd-decay-iters=5"], "--lr-wsd-decay-iters=5 is not "
     "used by --lr-decay-style=linear"),
])
def test_unused_missing_and_conflicting_flags(argv, needle, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        parse_config(["--steps=20", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err, err
    assert err.count("\n") == 2 and "usage" not in err and "Traceback" not in err


def test_schedule_built_once_per_check_and_never_stored_on_the_config(tmp_path) -> None:
    """The CLI's check builds the schedule once; the config holds no built schedule (the run's
    setup hands the one it built to the engine), and a later build is an equal schedule."""
    before = LR._BUILDS
    cfg, _ = parse_config(["--lr-scheduler=steplr", "--lr-step-size=5", "--steps=20"])
    assert LR._BUILDS - before == 1
    assert not any(isinstance(v, S.Schedule) for v in vars(cfg).values())
    s = build_schedule(cfg)
    assert LR._BUILDS - before == 2 and build_schedule(cfg) == s
    # the schedule builders read the config's type only for annotations: no runtime import
    for mod in ("plan", "build"):
        with open(os.path.join(ROOT, "train", "schedule", f"{mod}.py")) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.FunctionDef):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom) and (sub.module or "").endswith("config"):
                        raise AssertionError(f"train/schedule/{mod}.py imports the config lazily")


def test_reference_uses_the_same_table() -> None:
    """reference/torch_train.py builds the trainer's plan with torch: same lrs."""
    from reference import torch_train

    cfg, _ = parse_config(["--steps=30", "--lr=0.01", "--lr-scheduler=chained",
                           "--lr-chain=constant,steplr", "--lr-step-size=7", "--warmup-steps=4"])
    ref = torch_lrs(lambda o: torch_train.build_scheduler(cfg, o), 30, 0.01)
    close([build_schedule(cfg)(t) for t in range(30)], ref, 0.01, "reference")


# -- one real run -----------------------------------------------------------------------------


def test_real_run_logs_torchs_lr(tmp_path, corpus) -> None:
    """``python -m train`` (its ``main``, in-process: no second JAX start-up) with a named
    scheduler: the logged lr of each update is torch's."""
    from train.__main__ import main

    wd = tmp_path / "run"
    argv = ["--model-size=tiny", "--seq-len=16", "--batch-size=2", "--steps=4",
            "--lr=0.01", "--lr-scheduler=exponential", "--lr-gamma=0.5",
            "--eval-interval=100", "--eval-batches=1", "--checkpoint-interval=100",
            "--sample-tokens=0", "--no-tensorboard", "--devices=1", f"--data={corpus}",
            f"--data-cache={tmp_path / 'cache'}", f"--workdir={wd}"]
    assert main(argv) == 0
    with open(wd / "metrics" / "metrics.jsonl") as f:
        recs = [json.loads(x) for x in f if x.strip()]
    logged = [r["lr"] for r in sorted((r for r in recs if "loss" in r), key=lambda r: r["step"])]
    ref = torch_lrs(lambda o: L.ExponentialLR(o, gamma=0.5), 4, 0.01)
    # the log shows the lr the jitted update applied: a float32, so torch's float64 value
    # rounded once to float32, exactly (the schedule itself is checked at 1e-12 above)
    assert logged == [float(np.float32(x)) for x in ref], (logged, ref)
