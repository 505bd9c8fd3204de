"""Resuming a run safely: which settings may change, the saved config, and the guard.

A resumed run must follow the trajectory the checkpoint started. Every
:class:`~train.config.TrainConfig` field is classified here, as data:

* :data:`TRAJECTORY_KEYS` change the trajectory (model, data, batch, optimizer, schedule,
  seed, ...): a resume that changes any of them is refused, all differences in one message;
* :data:`DERIVED_KEYS` are entries of the effective config saved with every checkpoint
  (the built schedule, the resolved model, the global batch) compared the same way, so a
  change that reaches the trajectory by another road (``--steps`` moving the schedule's
  horizon when ``--total-steps`` is unset, ``--devices`` changing the global batch) is
  caught too;
* :data:`FREE_KEYS` may change (intervals, outputs, sampling, ``--steps`` itself, the
  device count and layout when the global batch stays, ...).

Elastic resume: the batch of step ``t`` is a function of (seed, t, global batch) alone
(``train.data.Batcher``) and each update averages the gradient over the global batch, so the
device count, the per-device batch and the accumulation may change as long as the global
batch does not (``tokens_per_step``; ``--global-batch-size`` keeps it by construction). With
dropout they may not: the masks are drawn per device (pmap) and per micro-batch.

``tests/train/test_resume.py`` checks that every field is in exactly one of the two field
lists, so a new field must be classified here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from typing import Any

from .checkpoint import CheckpointError
from .config import TrainConfig, resume_value

__all__ = ["DERIVED_KEYS", "FREE_KEYS", "TRAJECTORY_KEYS", "ResumeMismatchError",
           "available_steps", "check_compatible", "choose_step", "clear_outputs", "dropout_streams",
           "read_saved_config", "with_saved_config"]

#: config fields that change the training trajectory: must equal the checkpoint's.
TRAJECTORY_KEYS: tuple[str, ...] = (
    # model
    "model", "model_size", "n_layer", "n_head", "n_embd", "n_kv_head", "dtype", "dropout",
    # data and batches
    "data", "val_data", "val_fraction", "tokenizer", "sampling", "seq_len",
    # schedule
    "lr", "lr_scheduler", "warmup_steps", "warmup_ratio", "total_steps", "min_lr",
    "lr_step_size", "lr_gamma", "lr_milestones", "lr_chain", "lr_lambda", "lr_factor",
    "lr_total_iters", "lr_start_factor", "lr_end_factor", "lr_power", "lr_t0", "lr_t_mult",
    "lr_base", "lr_step_size_up", "lr_step_size_down", "lr_mode", "lr_pct_start",
    "lr_anneal_strategy", "lr_div_factor", "lr_final_div_factor", "lr_three_phase",
    "lr_num_cycles", "lr_timescale", "min_lr_ratio", "warmup_lr_ratio", "lr_num_decay_steps",
    "lr_num_stable_steps", "lr_warmup_type", "lr_decay_type", "lr_decay_style",
    "lr_warmup_iters", "lr_warmup_init", "lr_decay_iters", "lr_wsd_decay_iters",
    "lr_wsd_decay_style", "schedule", "lr_mults",
    # optimizer
    "optimizer", "clip_norm", "beta1", "beta2", "eps", "weight_decay", "momentum", "nesterov",
    "dampening", "loss_scale_init", "loss_scale_growth_interval",
    # randomness
    "seed",
    # a population (train/run/sweep.py): which members train
    "sweep", "sweep_seeds",
)

#: entries of the effective (saved) config that change the trajectory, compared like
#: :data:`TRAJECTORY_KEYS` (the schedule without its ``horizon``, which only sets how far
#: torch's values are tabulated, not the values).
DERIVED_KEYS: tuple[str, ...] = (
    "schedule_spec", "schedule_config", "model_config", "tokens_per_step",
    # a population (train/run/sweep.py): each member's swept settings and schedule (None for
    # single runs)
    "members", "member_schedules",
)

#: config fields that may change on resume, and why they may.
FREE_KEYS: dict[str, str] = {
    "steps": "a longer run continues the same trajectory when the schedule is unchanged "
             "(its horizon is --total-steps when set; else the schedule change is refused)",
    "devices": "elastic resume: compared through tokens_per_step (the global batch; the "
               "batches are the same rows whatever the device count)",
    "batch_size": "per device (pmap) or per data-parallel replica (mesh): compared through "
                  "tokens_per_step (the global batch), so a layout change may trade devices "
                  "for batch size",
    "grad_accum": "the update averages over the global batch however it is accumulated: "
                  "compared through tokens_per_step (and the dropout masks)",
    "global_batch_size": "how the global batch is given: compared through tokens_per_step",
    "simulate_devices": "the device count: compared through tokens_per_step",
    "num_processes": "the device count: compared through tokens_per_step",
    "coordinator_address": "where the processes meet, not what they compute",
    "process_id": "which process this is",
    "data_cache": "where tokenized text is cached (the tokens are the same)",
    "eval_interval": "evaluation does not touch the training state",
    "eval_batches": "evaluation does not touch the training state",
    "early_stop_patience": "when to stop, not what each step computes",
    "log_interval": "output only",
    "metrics_dir": "output only",
    "tensorboard": "output only",
    "checkpoint_dir": "where checkpoints are (the one resumed from)",
    "checkpoint_interval": "when to save, not what is computed",
    "keep_checkpoints": "how many to keep",
    "async_checkpoints": "how to save",
    "resume": "how this run starts",
    "overwrite": "how this run starts",
    "sample_tokens": "the final sample only",
    "sample_prompt": "the final sample only",
    "verbose": "output only",
    "engine": "the layout, not the math: the same global batch and step (float32 rounding)",
    "data_parallel": "the layout: the global batch is compared through tokens_per_step",
    "tensor_parallel": "the layout (a checkpoint restores onto any layout)",
    "sequence_parallel": "the layout (a checkpoint restores onto any layout)",
    "zero_stage": "the layout (a checkpoint restores onto any layout)",
    "pipeline_parallel": "the layout (a checkpoint restores onto any layout)",
    "virtual_pipeline_parallel": "the layout (a checkpoint restores onto any layout)",
    "recompute": "what is stored for the backward pass, not what is computed",
    "recompute_method": "what is stored for the backward pass, not what is computed",
    "recompute_num_layers": "what is stored for the backward pass, not what is computed",
    "plan": "--plan only prints a plan and exits",
    "plan_peak_tflops": "--plan only",
    "tracker": "output only",
    "wandb_project": "output only (a resumed run continues the saved W&B run id)",
    "wandb_run_name": "output only",
    "wandb_mode": "output only",
}

#: saved fields that never carry over into a resumed run's settings.
_NOT_CARRIED = ("resume", "overwrite")


class ResumeMismatchError(CheckpointError):
    """The run's settings differ from the checkpoint's in ways that change the trajectory."""


def checkpoint_dir(cfg: Mapping[str, Any], workdir: str) -> str:
    """The checkpoint directory of a (possibly partial) config dict."""
    return os.path.abspath(cfg.get("checkpoint_dir") or os.path.join(workdir, "checkpoints"))


def available_steps(ckpt_dir: str) -> list[int]:
    """The committed checkpoint steps in ``ckpt_dir`` (orbax renames a finished save to its
    bare step number; half-written temporary directories are ignored)."""
    if not os.path.isdir(ckpt_dir):
        return []
    return sorted(int(d) for d in os.listdir(ckpt_dir)
                  if d.isdigit() and os.path.isdir(os.path.join(ckpt_dir, d)))


def read_saved_config(ckpt_dir: str, step: int) -> dict[str, Any]:
    """The effective config saved with checkpoint ``step`` (the orbax JSON item)."""
    path = os.path.join(ckpt_dir, str(step), "config", "metadata")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {os.path.join(ckpt_dir, str(step))} has no readable "
                              f"config ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: the saved config is not a mapping")
    return saved


def choose_step(resume: Any, ckpt_dir: str) -> int | None:
    """The checkpoint step ``--resume`` asks for (None: start from step 0).

    ``False``: None, and refused if checkpoints exist; ``True``: the latest, refused if
    there is none; ``"auto"``: the latest or None; an int: that step (refused if absent)."""
    steps = available_steps(ckpt_dir)
    if resume is False:
        if steps:
            raise ValueError(
                f"{ckpt_dir} already holds checkpoints (latest step {steps[-1]}); pass "
                "--resume to continue that run, --overwrite to start over, or use another "
                "--workdir")
        return None
    if resume == "auto" and not isinstance(resume, bool):
        return steps[-1] if steps else None
    if resume is True:
        if not steps:
            raise ValueError(f"--resume: no checkpoint in {ckpt_dir} (use --resume=auto to "
                             "start from scratch when there is none)")
        return steps[-1]
    if resume not in steps:
        have = ", ".join(map(str, steps)) or "none"
        raise ValueError(f"--resume={resume}: no checkpoint at step {resume} in {ckpt_dir} "
                         f"(available: {have})")
    return int(resume)


def with_saved_config(explicit: Mapping[str, Any], workdir: str) -> dict[str, Any]:
    """For ``--resume``: the checkpoint's saved settings, overridden by ``explicit`` ones.

    ``python -m train --resume --workdir W`` thus continues the run in ``W`` with its own
    settings; the guard (:func:`check_compatible`) then refuses overrides that would change
    the trajectory. Without ``resume`` (or with ``--resume=auto`` and no checkpoint) the
    settings are returned unchanged."""
    d = {str(k).replace("-", "_"): v for k, v in explicit.items()}
    resume = resume_value(d.get("resume", False))
    if resume is False:
        return d
    ck = checkpoint_dir(d, workdir)
    step = choose_step(resume, ck)
    if step is None:
        return d
    try:
        saved = read_saved_config(ck, step)
    except CheckpointError as e:
        raise ValueError(f"--resume: {e}") from None
    fields = set(TrainConfig.field_names())
    out = {k: v for k, v in saved.items() if k in fields and k not in _NOT_CARRIED}
    if "grad_accum" not in d and (d.get("global_batch_size", saved.get("global_batch_size"))
                                  is not None):
        out.pop("grad_accum", None)  # derived from the global batch on the new layout
    out.update(d)
    return out


def _strip_horizon(v: Any) -> Any:
    if isinstance(v, str):
        return re.sub(r",\s*horizon=\d+", "", v)
    if isinstance(v, Mapping):
        return {k: _strip_horizon(x) for k, x in v.items() if k != "horizon"}
    if isinstance(v, list | tuple):
        return [_strip_horizon(x) for x in v]
    return v


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(_strip_horizon(v), sort_keys=True, default=str))


_LAYOUT_FLAGS = ("data_parallel", "tensor_parallel", "zero_stage", "pipeline_parallel",
                 "virtual_pipeline_parallel")


def dropout_streams(eff: Mapping[str, Any]) -> str | None:
    """What an effective config's dropout masks depend on besides (seed, step): None without
    dropout; under pmap the device count and the micro-batches (each device folds in its
    index), on the mesh the micro-batches (masks over the global micro-batch)."""
    if not eff.get("dropout"):
        return None
    accum = eff.get("grad_accum")
    if eff.get("engine") == "mesh" or eff.get("sequence_parallel") or any(
            eff.get(k) is not None for k in _LAYOUT_FLAGS):
        return f"mesh engine, {accum} micro-batch(es)"
    return f"pmap on {eff.get('global_devices')} device(s), {accum} micro-batch(es)"


def differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``key: checkpoint X, now Y`` for every trajectory key (fields and derived entries)
    that differs between a saved effective config and this run's."""
    out: list[str] = []
    for k in (*TRAJECTORY_KEYS, *DERIVED_KEYS):
        a, b = _norm(saved.get(k)), _norm(now.get(k))
        if k == "schedule_config" and any(d.startswith("schedule_spec:") for d in out):
            continue  # the spec already shows the change
        if a != b:
            out.append(f"{k}: checkpoint {a!r}, now {b!r}")
    if not any(d.startswith("dropout:") for d in out):
        a, b = dropout_streams(saved), dropout_streams(now)
        if a != b:
            out.append(f"dropout masks: checkpoint {a}, now {b} (dropout draws its masks per "
                       "device and micro-batch: resume on the checkpoint's layout)")
    return out


def _batch_hint(saved: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """The global batch in sequences, when it is what differs, and how to keep it."""
    a, b, seq = saved.get("tokens_per_step"), now.get("tokens_per_step"), now.get("seq_len")
    if not (isinstance(a, int) and isinstance(b, int) and a != b and seq
            and saved.get("seq_len") == seq):
        return ""
    return (f" (the global batch: {a // seq} sequences per update at the checkpoint, "
            f"{b // seq} now; resume with --global-batch-size={a // seq}, or a --batch-size "
            "and --grad-accum that give it on this layout)")


def check_compatible(saved: Mapping[str, Any], now: Mapping[str, Any], where: str) -> None:
    """Raise :class:`ResumeMismatchError` listing every difference that changes the
    trajectory (one message); settings in :data:`FREE_KEYS` may differ."""
    diffs = differences(saved, now)
    if diffs:
        hint = ""
        if any(d.startswith("schedule_") for d in diffs) and saved.get("steps") != now.get(
                "steps") and now.get("total_steps") is None:
            hint = (" (without --total-steps the schedule's length follows --steps: set "
                    "--total-steps in the original run to extend it later)")
        hint += _batch_hint(saved, now)
        raise ResumeMismatchError(
            f"cannot resume from {where}: settings that change the training trajectory differ "
            f"from the checkpoint's: {'; '.join(diffs)}{hint}. Resume with the saved settings "
            "(drop these flags), or start a new run (another --workdir, or --overwrite)")


def clear_outputs(workdir: str, paths: list[str]) -> list[str]:
    """``--overwrite``: delete ``paths`` (a run's checkpoints, metrics, config.json), each
    only if it lies inside ``workdir``; returns the deleted paths. Refuses (``ValueError``)
    a path outside the workdir instead of deleting it."""
    root = os.path.realpath(workdir)
    removed = []
    for p in paths:
        real = os.path.realpath(p)
        if not os.path.lexists(p):
            continue
        if real == root or os.path.commonpath([root, real]) != root:
            raise ValueError(f"--overwrite: {p} is not inside --workdir={workdir}; delete it "
                             "yourself or point --checkpoint-dir/--metrics-dir into the workdir")
        if os.path.isdir(real) and not os.path.islink(p):
            shutil.rmtree(real)
        else:
            os.remove(p)
        removed.append(p)
    return removed
