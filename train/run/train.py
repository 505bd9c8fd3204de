"""``train_and_evaluate(config, workdir)``: a single run, the shared setup
(:func:`train.run.setup.prepare_run`) and the shared loop (:class:`train.run.loop.Loop`) with
the single run's hook (:class:`SingleRun`: its log lines, the non-finite check, evaluation and
early stopping) and the checkpointer. The step convention: :mod:`train.run.loop`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

import models

from .._flag import flag
from .._paths import path_str
from ..checkpoint import Checkpointer, CheckpointError, host_scalar
from ..config import TrainConfig
from ..engine.mesh import mesh_engine
from ..engine.pmap import pmap_engine
from ..engine.step import init_state, loss_scale_rule
from ..metrics import MetricsWriter, fmt_duration, iter_records, param_summary
from ..optim import group_labels, param_table
from ..resume import with_saved_config
from ..schedule.hparams import HPARAMS, build_hparams
from .loop import (
    Checkpointing,
    Hook,
    Loop,
    NonFiniteLossError,
    TrainingInterrupted,
    mean_eval,
    stall_text,
)
from .setup import RunSetup, prepare_run, write_json
from .tracking import Tracking
from .weights import export_hf

__all__ = ["CheckpointError", "NonFiniteLossError", "SingleRun", "TrainingInterrupted",
           "train_and_evaluate"]


def _peak_flops(n_devices: int) -> tuple[float, str]:
    """A rough peak FLOP/s for the MFU estimate (dense float32 for CPUs, bf16 for GPUs/TPUs)."""
    dev = jax.devices()[0]
    kind = dev.device_kind.lower()
    table = {"h200": 989e12, "h100": 989e12, "a100": 312e12, "v100": 125e12, "l4": 121e12,
             "v5e": 197e12, "v4": 275e12}
    for k, v in table.items():
        if k in kind:
            return v * n_devices, f"{dev.device_kind} ({v / 1e12:.0f} TFLOP/s per device)"
    if dev.platform == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        peak = float(cores or 1) * 2.5e9 * 32  # 2 AVX2 FMA units x 8 float32 lanes x 2, 2.5 GHz
        return peak, f"CPU, {cores} cores x 2.5 GHz x 32 FLOP/cycle (nominal)"
    return float("nan"), dev.device_kind


def _param_rows(params: Any, lr_mults: Mapping[str, float], groups: tuple[str, ...] = ()
                ) -> list[tuple[str, int, bool, float | str]]:
    mask = jax.tree_util.tree_leaves(models.decay_mask(params))
    labels = jax.tree_util.tree_leaves(group_labels(params, lr_mults, groups))
    return [(path_str(p), int(np.prod(np.shape(x))), bool(d),
             1.0 if lab == "default" else f"--group {lab}" if lab in groups
             else float(lr_mults[lab]))
            for (p, x), d, lab in zip(jax.tree_util.tree_leaves_with_path(params), mask, labels)]


def _patterns(cfg: TrainConfig) -> tuple[str, ...]:
    """``--group``'s patterns, in order."""
    return tuple(g.partition(":")[0].strip() for g in cfg.group)


def _start_lines(cfg: TrainConfig, eff: dict, config_path: str | None) -> str:
    """The compact start summary (``--verbose`` prints the whole effective config)."""
    m = eff["model_config"]
    dims = ", ".join(f"{k} {m[k]}" for k in ("n_layer", "n_head", "n_embd") if k in m)
    spec = eff["schedule_spec"]
    spec = spec if len(spec) <= 120 else spec[:117] + "..."
    where = f"full config: {config_path}" if config_path else "full config: not written"
    return "\n".join([
        f"model: {cfg.model} {cfg.model_size} ({dims}), seq {cfg.seq_len}, {cfg.dtype}"
        + (f", dropout {cfg.dropout}" if cfg.dropout else ""),
        f"schedule: {spec}",
        f"optimizer: AdamW b1={cfg.beta1} b2={cfg.beta2} eps={cfg.eps} weight decay "
        f"{cfg.weight_decay}, clip {cfg.clip_norm or 'off'}"
        + (f", lr x {dict(cfg.lr_mults)}" if cfg.lr_mults else "") + f"; seed {cfg.seed}",
        *(f"group {g.partition(':')[0].strip()!r}: own schedule "
          f"{g.partition(':')[2].strip()}" for g in cfg.group),
        *[f"scheduled: {flag(k)} = {s!r}" for k, s in build_hparams(cfg).items()],
        f"run: {cfg.steps} steps, eval every {cfg.eval_interval}, checkpoint every "
        f"{cfg.checkpoint_interval} (keep {cfg.keep_checkpoints}); {where}",
    ])


def _saved_results(path: str, step: int) -> dict[str, float]:
    """A finished single run's train loss of its last update (step ``step - 1``) and its
    validation loss at ``step``, read from its ``metrics.jsonl`` (``{}`` if either is missing)."""
    loss = val = None
    try:
        for r in iter_records(path):
            if "member" in r or r.get("step") is None:
                continue
            if r.get("loss") is not None and r["step"] == step - 1:
                loss = float(r["loss"])
            if r.get("val_loss") is not None and r["step"] == step:
                val = float(r["val_loss"])
    except OSError:
        return {}
    return {} if loss is None or val is None else {"final_loss": loss, "val_loss": val}


def _finished(setup: RunSetup) -> dict[str, Any]:
    """A run resumed at its ``--steps``: nothing to do; the saved results."""
    step, path = setup.resume_step, setup.metrics_path
    saved = _saved_results(path, step)
    if saved:
        setup.console.print(f"saved results: train loss {saved['final_loss']:.4f} (step "
                            f"{step}), val loss {saved['val_loss']:.4f}; metrics: {path}")
    return {"steps": step, "start_step": step, "stop_reason": "already finished",
            "checkpoint_dir": setup.ckpt_dir, "last_checkpoint": step, "metrics_path": path,
            **saved}


def train_and_evaluate(config: TrainConfig | Mapping[str, Any], workdir: str) -> dict[str, Any]:
    """Train per ``config`` with outputs under ``workdir``; returns a summary dict.

    ``config.resume``: ``False`` (refused if ``workdir`` holds checkpoints, unless
    ``overwrite``), ``True`` (the latest checkpoint; refused if none), ``"auto"`` (the latest,
    or from scratch) or a step. Given as a mapping with ``resume``, the checkpoint's saved
    settings fill in the keys it does not give (:func:`train.resume.with_saved_config`).
    A resume that changes a setting that changes the trajectory is refused
    (:class:`~train.resume.ResumeMismatchError`, listing every difference); a run whose
    checkpoint is already at ``steps`` returns at once (``stop_reason`` "already finished").

    Raises ``ValueError`` for an invalid config (before anything compiles),
    :class:`~train.checkpoint.CheckpointError` for an unusable checkpoint,
    :class:`NonFiniteLossError` when the loss becomes NaN/inf, and
    :class:`TrainingInterrupted` after a SIGINT (Ctrl-C) once the current step is saved."""
    if isinstance(config, TrainConfig):
        cfg = config
    else:
        cfg = TrainConfig.from_dict(with_saved_config(config, workdir))
    cfg = cfg.normalized().validate()
    if cfg.sweep or cfg.sweep_seeds:  # a population: train/run/sweep.py
        from .sweep import run_sweep

        return run_sweep(cfg, workdir)
    if cfg.plan:
        from .memplan import plan_run

        return plan_run(cfg, workdir)
    setup = prepare_run(cfg, workdir, "train")
    if setup.finished:
        return _finished(setup)
    cfg = setup.cfg  # --init-from may have set --model, --tokenizer
    train_data, val_data, (batcher,), (val_batcher,) = setup.load_data()
    c, eff = setup.console, setup.eff
    if setup.primary:  # the fields only, as given (not resolved on this layout): `--config`
        write_json(setup.config_path, {k: v for k, v in cfg.to_dict().items()
                                       if k not in ("resume", "overwrite", "change_schedule")})
    cfg = setup.cfg  # --global-batch-size: the per-device batch and accumulation resolved
    if cfg.verbose:
        c.print("effective config:\n" + json.dumps(eff, indent=1, sort_keys=True))
    else:
        c.print(_start_lines(cfg, eff, setup.config_path if setup.primary else None))
    pcount, n_local = setup.process_count, setup.n_local
    c.print(f"data: {setup.data_desc}: {train_data.num_tokens:,} train / "
            f"{val_data.num_tokens:,} val tokens ({setup.tok.name} tokenizer)")
    c.print(f"devices: {setup.n_global} ({pcount} process(es) x {n_local}, "
            f"{jax.devices()[0].platform}); global batch {setup.tokens_per_step:,} tokens "
            f"({pcount * n_local} x {cfg.grad_accum} x {cfg.batch_size} x {cfg.seq_len})")
    if setup.ramp is not None:
        r = setup.ramp
        seen = r.distinct(cfg.steps)
        parts = [f"{b} from step {s}" for s, b in zip(r.starts, r.batches) if s < cfg.steps]
        c.print(f"batch-size ramp ({r.source}): global batch {', '.join(parts)} "
                f"({len(seen)} step shape(s), each compiled once)")

    model_cfg, schedule = setup.model_cfg, setup.schedule
    # on the host until the engine places each device's shards
    params, init_line = setup.initial_params()
    if init_line is not None:  # --init-from
        c.print(f"{init_line}; optimizer and schedule fresh at step 0")
    docs = setup.documents  # --document-mask
    eng = (pmap_engine(model_cfg, cfg, schedule, params, setup.devices, docs)
           if setup.layout is None else
           mesh_engine(model_cfg, cfg, schedule, params, setup.layout, setup.devices, c.print,
                       docs))
    host_state = init_state(params, eng.tx, loss_scale_rule(cfg))
    if cfg.verbose:
        c.print("parameters:\n" + param_table(params, cfg.lr_mults, _patterns(cfg)))
    else:
        c.print(param_summary(_param_rows(params, cfg.lr_mults, _patterns(cfg))))

    ckpt = Checkpointer(setup.ckpt_dir, cfg.keep_checkpoints, cfg.async_checkpoints,
                        set_aside=True)
    try:
        if setup.resume_step is not None:
            host_state = eng.from_checkpoint(ckpt.restore(
                setup.resume_step, eng.restore_target(host_state), eff))
            setup.resumed_line(host_scalar(host_state["step"]), ckpt.path(setup.resume_step))
        elif setup.branch is not None:  # the parent's checkpoint, read only
            parent_dir, bstep = setup.branch
            parent = Checkpointer(parent_dir, 1, False, read_only=True)
            try:
                host_state = eng.from_checkpoint(parent.restore(
                    bstep, eng.restore_target(host_state), eff))
            finally:
                parent.close()
            c.print(f"branched from {parent.path(bstep)} (step {bstep})")
        else:
            setup.fresh_line()
        return _run(setup, eng, host_state, batcher, val_batcher, ckpt)
    finally:
        ckpt.close()


class SingleRun(Hook):
    """A single run's hook: its metrics rows and log lines, the stop on a non-finite loss or
    state (before any save), evaluation every ``--eval-interval`` and early stopping."""

    def __init__(self, setup: RunSetup, eng: Any, eval_batches: list, ck: Checkpointing,
                 source_batches: dict[str, list] | None = None) -> None:
        self.cfg, self.eng, self.eval_batches, self.ck = setup.cfg, eng, eval_batches, ck
        self.ramp = setup.ramp  # issue 27 item 6: each row logs its global batch and samples
        self.source_batches = source_batches or {}
        self.source_evals: dict[str, list[tuple[int, float]]] = {
            n: [] for n in self.source_batches}
        self.fpt = models.flops_per_token(setup.model_cfg, setup.cfg.seq_len)
        self.peak, self.peak_desc = _peak_flops(setup.n_global)
        self.history: list[tuple[int, float]] = []
        self.evals: list[tuple[int, float]] = []
        self.best, self.since_best = math.inf, 0

    def mfu(self, tps: float | None) -> float | None:
        if tps is None or not (self.peak and math.isfinite(self.peak)):
            return None
        return self.fpt * tps / self.peak

    def on_metrics(self, loop: Loop, rows: list[tuple[int, dict]], tps: float | None,
                   log: bool) -> None:
        bad = None
        for t, m in rows:
            row = {k: v[0].item() for k, v in m.items()}  # device 0's copy
            loss, finite = float(row["loss"]), bool(row.pop("finite"))
            extra = {}
            if "skipped" in row:  # float16: dynamic loss scaling
                extra = {"loss_scale": float(row["loss_scale"]), "skipped": int(row["skipped"])}
            groups = {k: float(v) for k, v in row.items() if k.startswith("lr_")}
            extra.update({k: float(row[k]) for k in HPARAMS if k in row})  # issue 27
            if self.ramp is not None:  # the batch of step t, the samples consumed after it
                extra.update(global_batch=self.ramp.batch(t),
                             samples=self.ramp.samples_before(t + 1))
            loop.writer.write(t, loss=loss, lr=float(row["lr"]),
                              grad_norm=float(row["grad_norm"]), **groups, **extra,
                              tokens_per_s=tps, time=time.time())
            self.history.append((t, loss))
            skipped = bool(row.get("skipped", False))
            if bad is None and (not finite or (not math.isfinite(loss) and not skipped)):
                what = (f"loss is {loss}" if not math.isfinite(loss) else
                        f"the parameters/optimizer state are not finite after the update (loss "
                        f"{loss:.4g})")
                bad = (t, what, float(row["lr"]))
        if bad is None and log:
            t_last, m = rows[-1]
            loop.console.update(t_last, float(m["loss"][0]), float(m["lr"][0]), tps,
                                float(m["grad_norm"][0]), self.mfu(tps))
        if bad is not None:
            t, what, lr = bad
            last = self.ck.last_saved
            where = self.ck.ckpt.path(last) if last is not None else "none saved yet"
            loop.console.print(f"ERROR: {what} at step {t}; training stopped. "
                               f"The last good checkpoint is untouched: {where}")
            loop.writer.close()
            raise NonFiniteLossError(
                f"{what} at step {t} (lr {lr:.3e}); stopped without saving. Last good "
                f"checkpoint: {where}" + (" (resume with --resume and, e.g., a lower --lr)"
                                          if last is not None else ""))

    def evaluate(self, state: Any) -> float:
        return float(mean_eval(self.eng, state["params"], self.eval_batches))

    def after_step(self, loop: Loop) -> None:
        if not loop.due(self.cfg.eval_interval):
            return
        loop.flush()
        v = self.evaluate(loop.state)
        self.evals.append((loop.step, v))
        parts = {n: float(mean_eval(self.eng, loop.state["params"], b))
                 for n, b in self.source_batches.items()}
        for n, pv in parts.items():
            self.source_evals[n].append((loop.step, pv))
        loop.writer.write(loop.step, val_loss=v, **{f"val_loss/{n}": pv for n, pv in parts.items()})
        loop.console.print(f"eval at step {loop.step}: val loss {v:.4f}" + (
            " (" + ", ".join(f"{n} {pv:.4f}" for n, pv in parts.items()) + ")" if parts else ""))
        if v < self.best:
            self.best, self.since_best = v, 0
        else:
            self.since_best += 1
        patience = self.cfg.early_stop_patience
        if patience and self.since_best >= patience:
            loop.stop(f"early stop: no val-loss improvement in {patience} evaluation(s)")
        loop.reset_window()


class ExportHF(Hook):
    """``--export-hf-every=N``: the params after every N-th update as a transformers folder
    ``WORKDIR/hf/step_N`` with the run's tokenizer files (atomic: a temporary sibling renamed
    when complete; an export of the same step again replaces it). Every process gathers the
    params (a collective on a multi-process mesh); the first writes."""

    def __init__(self, setup: RunSetup, eng: Any, every: int) -> None:
        self.setup, self.eng, self.every = setup, eng, every
        self.root = os.path.join(setup.workdir or os.getcwd(), "hf")

    def after_step(self, loop: Loop) -> None:
        if loop.step % self.every:
            return
        params = self.eng.get_state(loop.state["params"])
        if self.setup.primary:
            out = export_hf(self.setup.model_cfg, params, self.setup.cfg.tokenizer,
                            os.path.join(self.root, f"step_{loop.step}"), overwrite=True)
            loop.console.print(f"exported step {loop.step} to {out}")
        loop.reset_window()


def _run(setup: RunSetup, eng: Any, host_state: dict, batcher: Any, val_batcher: Any,
         ckpt: Checkpointer) -> dict[str, Any]:
    start = host_scalar(host_state["step"])
    writer = MetricsWriter(setup.metrics_dir, tensorboard=setup.cfg.writes_tensorboard,
                           enabled=setup.primary)
    tracking = Tracking(setup, writer, start)  # --tracker: W&B, TensorBoard's config and lr
    try:
        summary = _train(setup, eng, host_state, batcher, val_batcher, ckpt, writer, tracking)
        tracking.finish(summary)
        return summary
    finally:
        tracking.close()
        writer.close()


def _train(setup: RunSetup, eng: Any, host_state: dict, batcher: Any, val_batcher: Any,
           ckpt: Checkpointer, writer: MetricsWriter, tracking: Tracking) -> dict[str, Any]:
    cfg, tok, model_cfg = setup.cfg, setup.tok, setup.model_cfg
    start = host_scalar(host_state["step"])
    # what a checkpoint holds: host arrays (pmap) or the sharded global arrays themselves (mesh)
    ck = Checkpointing(ckpt, setup.eff, eng.checkpoint_view, cfg.checkpoint_interval)
    # a mixture's validation data: also one loss per source (val_loss/NAME), on batches drawn
    # from each source alone
    per_source = {name: [dataclasses.replace(val_batcher, data=part).eval_batch(i)
                         for i in range(cfg.eval_batches)]
                  for name, part in getattr(val_batcher.data, "parts", {}).items()}
    run = SingleRun(setup, eng, [val_batcher.eval_batch(i) for i in range(cfg.eval_batches)],
                    ck, per_source)
    hooks: list[Hook] = [run, tracking, ck]
    if cfg.export_hf_every:
        hooks.append(ExportHF(setup, eng, cfg.export_hf_every))
    ramp = setup.ramp
    tokens: Any = (setup.tokens_per_step if ramp is None else
                   (lambda t: ramp.batch(t) * cfg.seq_len))
    loop = Loop(eng, eng.put_state(host_state), start=start, cfg=cfg, batch=batcher.batch,
                tokens_per_step=tokens, console=setup.console, writer=writer,
                hooks=hooks, workdir_arg=setup.workdir_arg, started=setup.started).run()
    step, stop_reason = loop.step, loop.stop_reason or "completed"
    tps = loop.tokens_per_s()
    mfu = run.fpt * tps / run.peak if run.peak and math.isfinite(run.peak) else float("nan")
    final_params = eng.get_state(loop.state["params"])
    evals, history = run.evals, run.history
    final_val = evals[-1][1] if evals and evals[-1][0] == step else (
        run.evaluate(loop.state) if step > start else float("nan"))
    summary: dict[str, Any] = {
        "steps": step, "start_step": start, "stop_reason": stop_reason,
        "resumable": loop.resumable,
        "final_loss": history[-1][1] if history else float("nan"),
        "first_loss": history[0][1] if history else float("nan"),
        "val_loss": final_val, "tokens_per_s": tps, "mfu": mfu,
        "tokens_per_cpu_s": loop.tokens_per_cpu_s(),
        "flops_per_token": run.fpt, "wall_s": loop.wall_s,
        "checkpoint_dir": ckpt.directory, "last_checkpoint": ck.last_saved,
        "metrics_path": writer.path, "losses": history, "evals": evals,
        "source_evals": run.source_evals, "params": final_params, "save_stalls": loop.stalls,
    }
    if setup.primary and cfg.sample_tokens > 0:
        prompt = tok.encode(cfg.sample_prompt).astype(np.int32)
        out = models.generate(model_cfg, final_params, prompt, cfg.sample_tokens,
                              jax.random.key(cfg.seed), temperature=0.8, top_k=None)
        summary["sample"] = tok.decode(np.asarray(out))
    c = setup.console
    c.print("\n=== summary ===")
    c.print(f"steps {start} -> {step} ({stop_reason}) in {fmt_duration(loop.wall_s)}")
    c.print(f"train loss {summary['first_loss']:.4f} (step {start + 1}) -> "
            f"{summary['final_loss']:.4f} (step {step}); val loss {final_val:.4f}")
    if math.isfinite(tps):
        c.print(f"throughput {tps:,.0f} tokens/s (steady state); {run.fpt / 1e6:.2f} "
                f"MFLOP/token; MFU {100 * mfu:.2f}% of {run.peak_desc}")
    c.print(f"checkpoints: {ckpt.directory} (last step {ck.last_saved})")
    if loop.stalls:
        c.print(f"checkpoint saves: {len(loop.stalls)}; the slowest: "
                f"{stall_text(max(loop.stalls, key=lambda r: r['stall_s']))}")
    tb = (f" (TensorBoard: {os.path.join(setup.metrics_dir, 'tb')})" if cfg.writes_tensorboard
          else "")
    c.print(f"metrics: {writer.path}{tb}; plot: python -m train.plot {writer.path}")
    if "sample" in summary:
        c.print(f"sample ({cfg.sample_tokens} tokens, temperature 0.8):\n{summary['sample']}")
    return summary
