"""The four alignment cases (GPT-2 / LLaMA-3 x StepLR / ChainedScheduler(StepLR, LinearLR)) as
command-line flags shared by ``python -m train``, ``python -m reference.torch_train`` and
``reference.torch_ddp``, and the comparison of their JSON-lines logs. A case name is
``MODEL-SCHEDULER[-OPTIMIZER]`` (AdamW when no optimizer is named; ``SGD_CASE`` is SGD with
momentum). Used by ``tests/train/test_alignment.py`` (20 steps), ``scripts/align_200.py``
(200 steps) and ``scripts/align_report.py`` (the DDP report)."""

from __future__ import annotations

import json
import os
from typing import Any

MODELS = ("gpt2", "llama3")
SCHEDULERS = ("steplr", "chained")
CASES = tuple(f"{m}-{s}" for m in MODELS for s in SCHEDULERS)
#: optimizer name in a case -> its flags and peak lr (SGD needs a larger lr than AdamW)
OPTIMIZERS: dict[str, tuple[list[str], float]] = {
    "adamw": (["--optimizer=adamw", "--beta1=0.9", "--beta2=0.95", "--eps=1e-8"], 3e-3),
    "adam": (["--optimizer=adam", "--beta1=0.9", "--beta2=0.95", "--eps=1e-8"], 3e-3),
    "sgd": (["--optimizer=sgd", "--momentum=0.9"], 0.05),
}
SGD_CASE = "gpt2-chained-sgd"
#: OneCycleLR with torch's momentum cycling (AdamW's beta1 logged per step by both sides)
ONECYCLE_CASE = "gpt2-onecycle"


def schedule_flags(scheduler: str, steps: int) -> list[str]:
    """StepLR halving 4 times over the run; chained: that StepLR times LinearLR(1 -> 0.25);
    onecycle: OneCycleLR over the run with torch's defaults (its momentum cycling included)."""
    step_size = max(1, steps // 4)
    common = [f"--lr-step-size={step_size}", "--lr-gamma=0.5", "--warmup-steps=0"]
    if scheduler == "steplr":
        return ["--lr-scheduler=steplr", *common]
    if scheduler == "onecycle":  # torch's defaults: beta1 cycled 0.95 -> 0.85 -> 0.95 (issue 27)
        return ["--lr-scheduler=onecycle"]
    if scheduler == "chained":
        return ["--lr-scheduler=chained", "--lr-chain=steplr,linear", *common,
                "--lr-start-factor=1.0", "--lr-end-factor=0.25"]
    raise ValueError(scheduler)


def case_flags(case: str, steps: int = 20, seq_len: int = 32, batch_size: int = 2,
               devices: int = 8, grad_accum: int = 1, lr: float | None = None,
               extra: list[str] | None = None) -> list[str]:
    """Every flag of one case (model, schedule, optimizer, data parallelism, quiet outputs);
    ``lr`` defaults to the optimizer's (3e-3 for AdamW)."""
    model, scheduler, *rest = case.split("-")
    opt_flags, opt_lr = OPTIMIZERS[rest[0] if rest else "adamw"]
    if scheduler in ("onecycle", "cyclic"):  # the scheduler sets beta1/momentum (the trainer
        # refuses a typed one, as torch would overwrite it)
        opt_flags = [f for f in opt_flags if not f.startswith(("--beta1=", "--momentum="))]
    lr = opt_lr if lr is None else lr
    return [
        f"--model={model}", "--model-size=tiny", f"--seq-len={seq_len}",
        f"--batch-size={batch_size}", f"--grad-accum={grad_accum}", f"--devices={devices}",
        f"--steps={steps}", f"--lr={lr:g}", *schedule_flags(scheduler, steps),
        "--clip-norm=1.0", "--weight-decay=0.1", *opt_flags,
        "--seed=0", f"--eval-interval={steps}", "--eval-batches=1",
        f"--checkpoint-interval={steps}", "--log-interval=10", "--sample-tokens=0",
        "--no-tensorboard", *(extra or []),
    ]


def read_metrics(path: str) -> list[dict[str, Any]]:
    """The per-step records (``step``, ``loss``, ``lr``, ...) of a metrics.jsonl, by step."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics", "metrics.jsonl")
    with open(path) as f:
        recs = [json.loads(x) for x in f if x.strip()]
    return sorted((r for r in recs if "loss" in r), key=lambda r: r["step"])


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def compare(ours: list[dict], ref: list[dict]) -> dict[str, Any]:
    """Per-step relative differences of lr and loss (``ref`` is the denominator)."""
    if [r["step"] for r in ours] != [r["step"] for r in ref]:
        raise AssertionError(f"different steps: {[r['step'] for r in ours]} vs "
                             f"{[r['step'] for r in ref]}")
    lr = [rel(a["lr"], b["lr"]) for a, b in zip(ours, ref)]
    loss = [rel(a["loss"], b["loss"]) for a, b in zip(ours, ref)]
    worst = max(range(len(loss)), key=loss.__getitem__)
    return {"steps": len(ref), "max_lr_rel": max(lr), "max_loss_rel": max(loss),
            "worst_step": ref[worst]["step"], "lr_rel": lr, "loss_rel": loss}
