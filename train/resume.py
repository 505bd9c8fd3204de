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

A run may change course (issue 27, docs/training.md "Changing course"): ``--resume
--change-schedule`` continues it with new schedule flags from the resumed step, and
``--branch-from=RUN_DIR[:STEP]`` starts a new run from another run's checkpoint with new
schedule flags. Either way the earlier schedule becomes an entry of ``--schedule-history``
(:func:`changed_course`) and the guard compares everything but the schedule's own flags
(:data:`train.schedule.build.PIECE_FIELDS`); the schedule itself is checked to continue the
saved history. Without ``--change-schedule`` a changed schedule flag is refused, naming it.

``tests/train/test_resume.py`` checks that every field is in exactly one of the two field
lists, so a new field must be classified here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Collection, Mapping
from typing import Any

from .checkpoint import CheckpointError, committed_steps
from .config import TrainConfig, resume_value
from .schedule.build import FAMILY_FIELDS, PIECE_FIELDS, build_schedule
from .schedule.names import canonical_decay_style, canonical_scheduler

__all__ = ["COURSE_KEYS", "DERIVED_KEYS", "FREE_KEYS", "TRAJECTORY_KEYS", "ForeignCheckpointError",
           "LEGACY_VALUES", "ResumeMismatchError", "available_steps", "branch_source",
           "changed_course", "check_compatible", "check_same_run", "choose_step", "clear_outputs",
           "dropout_streams", "read_saved_config", "skipped_line", "with_saved_config"]

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
    "lr_cycle_momentum", "lr_base_momentum", "lr_max_momentum",
    "lr_num_cycles", "lr_timescale", "min_lr_ratio", "warmup_lr_ratio", "lr_num_decay_steps",
    "lr_num_stable_steps", "lr_warmup_type", "lr_decay_type", "lr_decay_style",
    "lr_warmup_iters", "lr_warmup_init", "lr_decay_iters", "lr_wsd_decay_iters",
    "lr_wsd_decay_style", "schedule", "lr_mults",
    # optimizer
    "optimizer", "clip_norm", "beta1", "beta2", "eps", "weight_decay", "momentum", "nesterov",
    "dampening", "loss_scale_init", "loss_scale_growth_interval",
    # randomness
    "seed",
    # attention within documents (#25)
    "document_mask",
    # a population (train/run/sweep.py): which members train
    "sweep", "sweep_seeds",
    # issue 27: the schedule's history (changed only through --change-schedule /
    # --branch-from) and the per-group schedules
    "schedule_offset", "schedule_from", "schedule_history", "group",
    # issue 25 item 2: the embedding/head rows (the parameters' shapes)
    "vocab_pad_to",
    # issue 27 item 6: the global batch of every step and the lr's scaling by it
    "rampup_batch_size", "batch_size_schedule", "lr_batch_scaling",
)

#: fields whose value in a run saved before they existed is not their default: a saved config
#: without the key means this value (an old run's checkpoint has unpadded vocabulary rows, so
#: it resumes, and branches, unpadded).
LEGACY_VALUES: dict[str, Any] = {"vocab_pad_to": 1}

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
    "save_on_signal": "when to save, not what is computed",
    "save_every_minutes": "when to save, not what is computed",
    "exit_after_minutes": "when to stop (a resumed run continues the same trajectory)",
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
    "change_schedule": "how this run starts (the change itself is recorded in "
                       "schedule_history and schedule_from)",
    "branch_from": "where a branch started (its first start; its parent's schedule is "
                   "recorded in schedule_history)",
    "init_from": "applied only at a fresh start (step 0); a resume restores the run's own "
                 "checkpoint",
    "export_hf_every": "output only (transformers folders of the weights)",
    "tracker": "output only",
    "wandb_project": "output only (a resumed run continues the saved W&B run id)",
    "wandb_run_name": "output only",
    "wandb_mode": "output only",
}

#: saved fields that never carry over into a resumed run's settings (``exit_after_minutes``:
#: a limit of one job's allocation, not of the run; the printed resume command repeats it).
_NOT_CARRIED = ("resume", "overwrite", "change_schedule", "exit_after_minutes")
#: ... nor into a branch's (its outputs are its own)
_NOT_BRANCHED = (*_NOT_CARRIED, "checkpoint_dir", "metrics_dir", "branch_from")
#: the trajectory keys a schedule change may change (its own flags and its history), and the
#: derived entries that follow them
COURSE_KEYS = frozenset({*PIECE_FIELDS, "schedule_offset", "schedule_from",
                          "schedule_history", "schedule_spec", "schedule_config"})


class ResumeMismatchError(CheckpointError):
    """The run's settings differ from the checkpoint's in ways that change the trajectory."""


def checkpoint_dir(cfg: Mapping[str, Any], workdir: str) -> str:
    """The checkpoint directory of a (possibly partial) config dict."""
    return os.path.abspath(cfg.get("checkpoint_dir") or os.path.join(workdir, "checkpoints"))


def available_steps(ckpt_dir: str) -> list[int]:
    """The committed checkpoint steps in ``ckpt_dir``, step-based and temporary
    (:func:`train.checkpoint.committed_steps`: orbax's commit marker and every item; half-written
    temporary directories and uncommitted copies are ignored)."""
    return list(committed_steps(ckpt_dir)[0])


def skipped_line(ckpt_dir: str, step: int | None) -> str | None:
    """The one line saying which newer step directories are skipped as not committed (None:
    none is), and which checkpoint is used instead."""
    bad = [(p, why) for p, why in committed_steps(ckpt_dir)[1]
           if step is None or int(os.path.basename(p)) > step]
    if not bad:
        return None
    what = "; ".join(f"{p} ({why})" for p, why in bad)
    use = f"resuming from step {step}" if step is not None else "no committed checkpoint"
    return (f"skipped uncommitted checkpoint(s), moved aside as <step>.uncommitted: {what}; "
            f"{use}")


def read_saved_config(ckpt_dir: str, step: int) -> dict[str, Any]:
    """The effective config saved with committed checkpoint ``step`` (the orbax JSON item)."""
    where = committed_steps(ckpt_dir)[0].get(step, os.path.join(ckpt_dir, str(step)))
    path = os.path.join(where, "config", "metadata")
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {where} has no readable "
                              f"config ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: the saved config is not a mapping")
    return _legacy(saved)


def _legacy(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint saved before ``--lr-cycle-momentum`` existed (issue 27) trained a
    onecycle/cyclic schedule with a constant beta1 (momentum), and its optimizer state has no
    injected hyperparameters: it reads as ``lr_cycle_momentum=False``, so that a plain
    ``--resume`` continues it as it ran (today's default, cycling, would need another optimizer
    state layout and change the trajectory)."""
    if "lr_cycle_momentum" in saved:
        return saved
    from .schedule.hparams import cycled_momentum
    from .schedule.plan import plan

    fields = set(TrainConfig.field_names())
    try:
        cfg = TrainConfig.from_dict({k: v for k, v in saved.items() if k in fields})
        cfg = cfg.normalized()
        torch_plan = cfg.lr_decay_style is None and cfg.schedule is None
        if not torch_plan or cycled_momentum(plan(cfg)) is None:
            return saved
        # the lr is the same either way; the built schedule records the flag: the saved one
        # is today's default's when nothing else differs, and then reads as the flag's
        if _norm(repr(build_schedule(cfg))) != _norm(saved.get("schedule_spec")):
            return saved  # something else differs: the guard names it
        now = build_schedule(dataclasses.replace(cfg, lr_cycle_momentum=False))
    except (TypeError, ValueError):
        return saved  # the resume's own checks name what is wrong with it
    try:
        conf = now.to_config()
    except ValueError:
        conf = None
    return {**saved, "lr_cycle_momentum": False, "schedule_spec": repr(now),
            "schedule_config": conf}


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
        bad = {int(os.path.basename(p)): why for p, why in committed_steps(ckpt_dir)[1]}
        what = (f"the checkpoint at step {resume} is not committed ({bad[resume]})"
                if resume in bad else f"no checkpoint at step {resume}")
        raise ValueError(f"--resume={resume}: {what} in {ckpt_dir} (available: {have})")
    return int(resume)


def branch_source(spec: str) -> tuple[str, str, int]:
    """``--branch-from=RUN_DIR[:STEP]`` -> (the run directory, its checkpoint directory, the
    step: STEP, default its latest checkpoint). The checkpoint directory is the one the
    parent's ``config.json`` names (``checkpoint_dir``), else ``RUN_DIR/checkpoints``.
    ``ValueError`` naming the flag when there is no such run or checkpoint."""
    head, sep, tail = str(spec).rpartition(":")
    run_dir, step = (head, int(tail)) if sep and tail.isdigit() else (str(spec), None)
    run_dir = os.path.abspath(run_dir)
    if not os.path.isdir(run_dir):
        raise ValueError(f"--branch-from={spec} is invalid: {run_dir} is not a directory (give "
                         "RUN_DIR[:STEP], the --workdir of the run to branch from)")
    saved: dict[str, Any] = {}
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        pass
    ck = checkpoint_dir(saved if isinstance(saved, dict) else {}, run_dir)
    steps = available_steps(ck)
    if not steps:
        raise ValueError(f"--branch-from={spec} is invalid: no checkpoint in {ck}")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ValueError(f"--branch-from={spec} is invalid: no checkpoint at step {step} in "
                         f"{ck} (available: {', '.join(map(str, steps))})")
    return run_dir, ck, step


def _canonical(k: str, v: Any) -> Any:
    if v is None or not isinstance(v, str):
        return v
    try:
        return (canonical_scheduler(v) if k == "lr_scheduler" else
                canonical_decay_style(v) if k == "lr_decay_style" else v)
    except ValueError:
        return v  # the config's own check names it


def _family_changed(saved: Mapping[str, Any], d: Mapping[str, Any]) -> bool:
    return any(k in d and _canonical(k, d[k]) != _canonical(k, saved.get(k))
               for k in FAMILY_FIELDS)


def _fill(saved: Mapping[str, Any], d: Mapping[str, Any], skip: tuple[str, ...],
          family_changed: bool = False) -> dict[str, Any]:
    """``saved``'s fields overridden by ``d``'s. When ``d`` changes the scheduler family
    (:data:`~train.schedule.build.FAMILY_FIELDS`; ``family_changed``: a population sweeps it),
    the saved schedule flags (but ``--lr``) are the old family's: not filled in (they would
    be flags the user never gave)."""
    fields = set(TrainConfig.field_names())
    drop = set(skip)
    if family_changed or _family_changed(saved, d):
        drop |= set(PIECE_FIELDS) - {"lr"}
    out = {k: v for k, v in saved.items() if k in fields and k not in drop}
    out.update({k: v for k, v in LEGACY_VALUES.items() if k not in saved and k not in drop})
    if "grad_accum" not in d and (d.get("global_batch_size", saved.get("global_batch_size"))
                                  is not None):
        out.pop("grad_accum", None)  # derived from the global batch on the new layout
    out.update(d)
    return out


def changed_course(saved: Mapping[str, Any], step: int) -> dict[str, Any]:
    """The history entries of a run changing course at ``step`` from the saved effective
    config ``saved``: its history plus its own schedule (from ``schedule_from``, its flags
    :data:`~train.schedule.build.PIECE_FIELDS` and ``steps``), and ``schedule_from=step``."""
    defaults = TrainConfig().to_dict()
    flags = {k: saved.get(k, defaults[k]) for k in (*PIECE_FIELDS, "steps")}
    entry = {"from_step": int(saved.get("schedule_from", 0)), "flags": flags,
             "offset": saved.get("schedule_offset", "global")}
    return {"schedule_history": [*saved.get("schedule_history", []), entry],
            "schedule_from": int(step)}


def with_saved_config(explicit: Mapping[str, Any], workdir: str) -> dict[str, Any]:
    """For ``--resume``: the checkpoint's saved settings, overridden by ``explicit`` ones.

    ``python -m train --resume --workdir W`` thus continues the run in ``W`` with its own
    settings; the guard (:func:`check_compatible`) then refuses overrides that would change
    the trajectory. Without ``resume`` (or with ``--resume=auto`` and no checkpoint) the
    settings are returned unchanged. With ``change_schedule``, the schedule flags given (the
    saved ones fill in the rest within the same scheduler family) apply from the resumed step
    on: :func:`changed_course`. With ``branch_from`` (and no checkpoint of this run to resume)
    the parent's saved settings at its step fill in, and its schedule becomes the history."""
    d = {str(k).replace("-", "_"): v for k, v in explicit.items()}
    resume = resume_value(d.get("resume", False))
    step = None
    if resume is not False:
        ck = checkpoint_dir(d, workdir)
        step = choose_step(resume, ck)
    if step is None:
        if d.get("branch_from"):
            return _branched(d)
        return d
    try:
        saved = read_saved_config(ck, step)
    except CheckpointError as e:
        raise ValueError(f"--resume: {e}") from None
    out = _fill(saved, d, _NOT_CARRIED)
    if d.get("change_schedule") is not True:
        out.update({k: v for k, v in _change_at(saved, step, workdir).items() if k not in d})
    if d.get("change_schedule") is True:
        for k in ("schedule_history", "schedule_from"):
            if k in d:
                raise ValueError(f"--{k.replace('_', '-')} cannot be given with "
                                 "--change-schedule: the change sets it")
        out.update(changed_course(saved, step))
        out["schedule_offset"] = d.get("schedule_offset", "global")  # the new schedule's own
    return out


def _change_at(saved: Mapping[str, Any], step: int, workdir: str) -> dict[str, Any]:
    """A change of schedule made at the checkpoint's own ``step`` (``--change-schedule`` or
    ``--branch-from``), then killed before its next checkpoint: the checkpoint holds the
    settings from before the change, the run's ``config.json`` (written, atomically, before
    the first update) the change. A plain resume continues the changed run: its schedule
    fields, when that file records a history continuing the checkpoint's at ``step``; else
    nothing."""
    try:
        with open(os.path.join(workdir, "config.json")) as f:
            cur = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(cur, dict) or cur.get("schedule_from") != step:
        return {}
    want = _norm(changed_course(saved, step))
    if _norm({k: cur.get(k) for k in ("schedule_history", "schedule_from")}) != want:
        return {}
    keys = (*PIECE_FIELDS, "steps", "schedule_offset", "schedule_from", "schedule_history")
    return {k: cur[k] for k in keys if k in cur}


def _branched(d: dict[str, Any]) -> dict[str, Any]:
    """``--branch-from``: the parent's saved settings at its step under ``d``, the parent's
    schedule as the history, ``branch_from`` as ``RUN_DIR:STEP`` (absolute)."""
    run_dir, ck, step = branch_source(d["branch_from"])
    try:
        saved = read_saved_config(ck, step)
    except CheckpointError as e:
        raise ValueError(f"--branch-from: {e}") from None
    for k in ("schedule_history", "schedule_from"):
        if k in d:
            raise ValueError(f"--{k.replace('_', '-')} cannot be given with --branch-from: "
                             "the branch sets it")
    # a population of branches sweeping the family (--sweep 'schedule=SPEC1,SPEC2'): each
    # member is a branch given that flag
    entries = d.get("sweep") or ()
    swept = {str(e).partition("=")[0].strip().lstrip("-").replace("-", "_")
             for e in ((entries,) if isinstance(entries, str) else entries)}
    out = _fill(saved, d, _NOT_BRANCHED, family_changed=bool(swept & set(FAMILY_FIELDS)))
    out.update(changed_course(saved, step))
    out["schedule_offset"] = d.get("schedule_offset", "global")
    out["branch_from"] = f"{run_dir}:{step}"
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


def differences(saved: Mapping[str, Any], now: Mapping[str, Any],
                change_at: int | None = None) -> list[str]:
    """``key: checkpoint X, now Y`` for every trajectory key (fields and derived entries)
    that differs between a saved effective config and this run's. ``change_at``: this run
    changes its schedule at that step (``--change-schedule``, ``--branch-from``): the
    schedule's own flags may differ, and its history must be the saved one continued
    (:func:`changed_course`). A field a checkpoint predates (added since it was written)
    counts as its default there."""
    import dataclasses

    field_defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                      if f.default is not dataclasses.MISSING}
    field_defaults.update(LEGACY_VALUES)
    out: list[str] = []
    if change_at is not None:
        want = _norm(changed_course(saved, change_at))
        got = _norm({k: now.get(k) for k in ("schedule_history", "schedule_from")})
        if want != got:
            out.append(f"schedule_history: the checkpoint's history continued at step "
                       f"{change_at} is {want!r}, now {got!r}")
    # a resume changing the scheduler family leaves the old family's flags unset
    # (:func:`_fill`): they are no change the user typed, and the spec shows the change
    unset = set()
    if change_at is None and _family_changed(saved, now):
        defaults = TrainConfig().to_dict()
        unset = {k for k in PIECE_FIELDS if k not in FAMILY_FIELDS and k != "lr"
                 and _norm(now.get(k)) == _norm(defaults[k])}
    for k in (*TRAJECTORY_KEYS, *DERIVED_KEYS):
        if (change_at is not None and k in COURSE_KEYS) or k in unset:
            continue
        a, b = saved.get(k, field_defaults.get(k)), now.get(k)
        if k == "model_config":
            a = _model_fields_added(saved.get("model"), a, b)
        a, b = _norm(a), _norm(b)
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


def _model_fields_added(model: Any, saved: Any, now: Any) -> Any:
    """A saved model config with the model fields added since it was written (keys of
    ``now`` it lacks) at their defaults, which keep the behaviour from before the field
    (``vocab_pad_to=1``: no padding)."""
    import dataclasses

    import models

    fam = models.FAMILIES.get(model)
    if fam is None or not isinstance(saved, Mapping) or not isinstance(now, Mapping):
        return saved
    defaults = {f.name: f.default for f in dataclasses.fields(fam.config_cls)
                if f.default is not dataclasses.MISSING}
    return {**{k: defaults[k] for k in now if k not in saved and k in defaults}, **saved}


def _batch_hint(saved: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """The global batch in sequences, when it is what differs, and how to keep it."""
    a, b, seq = saved.get("tokens_per_step"), now.get("tokens_per_step"), now.get("seq_len")
    if not (isinstance(a, int) and isinstance(b, int) and a != b and seq
            and saved.get("seq_len") == seq):
        return ""
    return (f" (the global batch: {a // seq} sequences per update at the checkpoint, "
            f"{b // seq} now; resume with --global-batch-size={a // seq}, or a --batch-size "
            "and --grad-accum that give it on this layout)")


def check_compatible(saved: Mapping[str, Any], now: Mapping[str, Any], where: str,
                     change_at: int | None = None) -> None:
    """Raise :class:`ResumeMismatchError` listing every difference that changes the
    trajectory (one message); settings in :data:`FREE_KEYS` may differ. ``change_at``: see
    :func:`differences`."""
    diffs = differences(saved, now, change_at)
    if diffs:
        hint = ""
        if any(d.startswith("schedule_") for d in diffs) and saved.get("steps") != now.get(
                "steps") and now.get("total_steps") is None:
            hint = (" (without --total-steps the schedule's length follows --steps: set "
                    "--total-steps in the original run to extend it later)")
        if change_at is None and any(d.split(":", 1)[0] in COURSE_KEYS for d in diffs):
            hint += (" (to continue with a new schedule from the checkpoint's step, add "
                     "--change-schedule; docs/training.md 'Changing course')")
        hint += _batch_hint(saved, now)
        if any(d.startswith("lr_cycle_momentum:") for d in diffs) and not saved.get(
                "lr_cycle_momentum", True):
            hint += (" (this checkpoint's optimizer keeps beta1 (momentum) constant: its state "
                     "has no room for torch's momentum cycling; a checkpoint saved before "
                     "issue 27 did not cycle it. Resume with --no-lr-cycle-momentum, or start "
                     "a new run to cycle it)")
        raise ResumeMismatchError(
            f"cannot resume from {where}: settings that change the training trajectory differ "
            f"from the checkpoint's: {'; '.join(diffs)}{hint}. Resume with the saved settings "
            "(drop these flags), or start a new run (another --workdir, or --overwrite)")


class ForeignCheckpointError(ResumeMismatchError):
    """A checkpoint's saved settings differ from the ones its workdir recorded: it was written
    by another run (copied over, or a shared --checkpoint-dir)."""


def check_same_run(saved: Mapping[str, Any], recorded: Mapping[str, Any], where: str,
                   recorded_at: str, allow: Collection[str] = ()) -> None:
    """Refuse (:class:`ForeignCheckpointError`, naming every difference) a checkpoint whose
    saved trajectory settings differ from ``recorded``, the settings the workdir's run wrote
    in its ``config.json`` (``recorded_at``). Keys missing from either side are not compared
    (an older ``config.json``). ``allow``: the keys a run changed on purpose (a run
    re-configured or branched explicitly), not compared."""
    diffs = []
    for k in TRAJECTORY_KEYS:
        if k in allow or k not in saved or k not in recorded:
            continue
        a, b = _norm(saved[k]), _norm(recorded[k])
        if a != b:
            diffs.append(f"{k}: checkpoint {a!r}, {os.path.basename(recorded_at)} {b!r}")
    if diffs:
        raise ForeignCheckpointError(
            f"refusing {where}: it was not written by the run recorded in {recorded_at} "
            f"(copied from another run?): {'; '.join(diffs)}. Resume from that run's own "
            "checkpoint, or start a new run (another --workdir, or --overwrite)")


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
