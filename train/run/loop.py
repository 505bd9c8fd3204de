"""``train_and_evaluate(config, workdir)``: the training loop.

Step convention: optimizer step ``t`` (0-based) consumes ``batch(t)`` and uses the learning rate
``schedule(count)``, optax's count before the update (``count == t`` unless float16 loss scaling
skipped updates); the metrics record ``{"step": t, "loss", "lr", ...}`` where ``lr`` is the rate
the update applied, as the step itself reports it (``train.engine.step``). A checkpoint labelled
``n``
holds the state after ``n`` updates, so a resumed run continues with step ``n`` — bit-identical
to an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

import models
import schedules as S

from .._paths import path_str
from ..checkpoint import Checkpointer, CheckpointError, host_scalar, leaf_checksums
from ..config import TrainConfig, check_dirs
from ..data import Batcher, load_data
from ..devices import simulate_devices
from ..engine.mesh import mesh_engine
from ..engine.pmap import pmap_engine, select_devices
from ..engine.step import init_state, loss_scale_rule
from ..metrics import Console, MetricsWriter, fmt_duration, param_summary
from ..optim import group_labels, param_table
from ..parallel.layout import make_layout
from ..resume import (
    check_compatible,
    choose_step,
    clear_outputs,
    read_saved_config,
    with_saved_config,
)
from ..tokenizer import get_tokenizer
from .setup import check_config, effective_config, finished_message, init_distributed

__all__ = ["NonFiniteLossError", "TrainingInterrupted", "train_and_evaluate"]


class NonFiniteLossError(FloatingPointError):
    """The loss, or the state after an update, became NaN or infinite; training stopped
    without saving that state (every checkpoint on disk is finite)."""


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


def _param_rows(params: Any, lr_mults: Mapping[str, float]) -> list[tuple[str, int, bool,
                                                                            float]]:
    mask = jax.tree_util.tree_leaves(models.decay_mask(params))
    labels = jax.tree_util.tree_leaves(group_labels(params, lr_mults))
    return [(path_str(p), int(np.prod(np.shape(x))), bool(d),
             1.0 if lab == "default" else float(lr_mults[lab]))
            for (p, x), d, lab in zip(jax.tree_util.tree_leaves_with_path(params), mask, labels)]


def _start_lines(cfg: TrainConfig, eff: dict, model_cfg: Any, config_path: str | None) -> str:
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
        f"run: {cfg.steps} steps, eval every {cfg.eval_interval}, checkpoint every "
        f"{cfg.checkpoint_interval} (keep {cfg.keep_checkpoints}); {where}",
    ])


def _resume_command(cfg: TrainConfig, workdir_arg: str) -> str:
    import shlex

    cmd = ["python", "-m", "train", "--resume", "--workdir", workdir_arg]
    if cfg.checkpoint_dir:
        cmd += ["--checkpoint-dir", cfg.checkpoint_dir]
    return " ".join(shlex.quote(c) for c in cmd)


def _finite(tree: Any) -> bool:
    """Every float leaf finite (checked where the arrays live: no gather of sharded ones)."""
    try:
        leaf_checksums(tree, check_finite=True)
    except CheckpointError:
        return False
    return True


def _saved_results(path: str, step: int) -> dict[str, float]:
    """A finished single run's train loss of its last update (step ``step - 1``) and its
    validation loss at ``step``, read from its ``metrics.jsonl`` (``{}`` if either is missing)."""
    loss = val = None
    try:
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if "member" in r or r.get("step") is None:
                    continue
                if r.get("loss") is not None and r["step"] == step - 1:
                    loss = float(r["loss"])
                if r.get("val_loss") is not None and r["step"] == step:
                    val = float(r["val_loss"])
    except OSError:
        return {}
    return {} if loss is None or val is None else {"final_loss": loss, "val_loss": val}


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
    workdir_arg = workdir
    if isinstance(config, TrainConfig):
        cfg = config
    else:
        cfg = TrainConfig.from_dict(with_saved_config(config, workdir))
    cfg = cfg.normalized().validate()
    if cfg.sweep or cfg.sweep_seeds:  # a population: train/run/sweep.py
        from .sweep import run_sweep

        return run_sweep(cfg, workdir)
    simulate_devices(cfg.simulate_devices)
    schedule = check_config(cfg)  # built once, here
    check_dirs(cfg, workdir)
    init_distributed(cfg)
    pidx, pcount = jax.process_index(), jax.process_count()
    primary = pidx == 0
    devices = select_devices(cfg)
    local_devices = [d for d in (devices or jax.devices()) if d.process_index == pidx]
    n_local, n_global = len(local_devices), len(devices or jax.devices())

    workdir = os.path.abspath(workdir)
    ckpt_dir = cfg.checkpoint_dir or os.path.join(workdir, "checkpoints")
    metrics_dir = cfg.metrics_dir or os.path.join(workdir, "metrics")
    config_path = os.path.join(workdir, "config.json")
    console = Console(cfg.steps, enabled=primary)
    if cfg.overwrite and primary:
        removed = clear_outputs(workdir, [ckpt_dir, metrics_dir, config_path])
        if removed:
            console.print(f"--overwrite: deleted {', '.join(removed)}")
    resume_step = choose_step(cfg.resume, os.path.abspath(ckpt_dir))

    tok = get_tokenizer(cfg.tokenizer)
    model_cfg = models.get_config(cfg.model, cfg.base_size(), vocab_size=tok.vocab_size,
                                  **cfg.model_overrides())
    if cfg.plan:
        from .memplan import print_plan

        # the size's own vocabulary (e.g. LLaMA-3's 128256), not the tokenizer's
        plan_cfg = models.get_config(cfg.model, cfg.base_size(), **cfg.model_overrides())
        return print_plan(cfg, plan_cfg, schedule, console.print)
    layout = None
    if cfg.mesh_engine:  # the mesh engine: replicas per process, validated here
        layout = make_layout(cfg, model_cfg, len(devices or jax.devices()), pcount,
                             len(local_devices))
        n_local, n_global = layout.data // pcount, layout.size
    tokens_per_step = pcount * n_local * cfg.grad_accum * cfg.batch_size * cfg.seq_len
    eff = effective_config(cfg, schedule, model_cfg, {
        "workdir": workdir, "process_count": pcount, "global_devices": n_global,
        "tokens_per_step": tokens_per_step,
    })
    if resume_step is not None:  # the guard, before any data is read or code compiled
        where = os.path.join(os.path.abspath(ckpt_dir), str(resume_step))
        check_compatible(read_saved_config(os.path.abspath(ckpt_dir), resume_step), eff, where)
        if resume_step > cfg.steps:
            raise ValueError(f"--steps={cfg.steps} is invalid: the checkpoint to resume from "
                             f"({where}) is at step {resume_step}, past it")
        if resume_step == cfg.steps:  # (a population says the same: train/run/sweep.py)
            console.print(finished_message(resume_step, where))
            path = os.path.join(os.path.abspath(metrics_dir), "metrics.jsonl")
            saved = _saved_results(path, resume_step)
            if saved:
                console.print(f"saved results: train loss {saved['final_loss']:.4f} (step "
                              f"{resume_step}), val loss {saved['val_loss']:.4f}; metrics: {path}")
            return {"steps": resume_step, "start_step": resume_step,
                    "stop_reason": "already finished", "checkpoint_dir":
                    os.path.abspath(ckpt_dir), "last_checkpoint": resume_step,
                    "metrics_path": path, **saved}

    train_data, val_data, data_desc = load_data(cfg.data, cfg.val_data, tok, cfg.data_cache,
                                                cfg.val_fraction)
    train_data.check(cfg.seq_len + 1, tok.vocab_size)
    val_data.check(cfg.seq_len + 1, tok.vocab_size)
    batch_kw = dict(seq_len=cfg.seq_len, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                    local_devices=n_local, process_index=pidx, process_count=pcount,
                    seed=cfg.seed)
    batcher = Batcher(train_data, **batch_kw)
    val_batcher = Batcher(val_data, **batch_kw)
    eff["data_description"] = data_desc

    if primary:
        os.makedirs(workdir, exist_ok=True)
        with open(config_path, "w") as f:  # the fields only: `--config` reads it back
            settings = {k: v for k, v in cfg.to_dict().items() if k not in ("resume",
                                                                            "overwrite")}
            json.dump(settings, f, indent=1, sort_keys=True)
            f.write("\n")
    if cfg.verbose:
        console.print("effective config:\n" + json.dumps(eff, indent=1, sort_keys=True))
    else:
        console.print(_start_lines(cfg, eff, model_cfg, config_path if primary else None))
    console.print(f"data: {data_desc}: {train_data.num_tokens:,} train / "
                  f"{val_data.num_tokens:,} val tokens ({tok.name} tokenizer)")
    console.print(f"devices: {n_global} ({pcount} process(es) x {n_local}, "
                  f"{jax.devices()[0].platform}); global batch {tokens_per_step:,} tokens "
                  f"({pcount * n_local} x {cfg.grad_accum} x {cfg.batch_size} x {cfg.seq_len})")

    # state
    params = jax.device_get(models.init_params(model_cfg, jax.random.key(cfg.seed)))
    eng = (pmap_engine(model_cfg, cfg, schedule, params, devices) if layout is None else
           mesh_engine(model_cfg, cfg, schedule, params, layout, devices, console.print))
    tx, p_train, p_eval, put, get = eng.tx, eng.train, eng.eval, eng.put_state, eng.get_state
    # what a checkpoint holds: host arrays (pmap) or the sharded global arrays themselves (mesh)
    to_ckpt, restore_target, from_ckpt = (eng.checkpoint_view, eng.restore_target,
                                          eng.from_checkpoint)
    host_state = init_state(params, tx, loss_scale_rule(cfg))
    if cfg.verbose:
        console.print("parameters:\n" + param_table(params, cfg.lr_mults))
    else:
        console.print(param_summary(_param_rows(params, cfg.lr_mults)))

    ckpt = Checkpointer(ckpt_dir, cfg.keep_checkpoints, cfg.async_checkpoints)
    try:
        if resume_step is not None:
            host_state = from_ckpt(ckpt.restore(resume_step, restore_target(host_state), eff))
            console.print(f"resumed from {ckpt.path(resume_step)} "
                          f"(step {host_scalar(host_state['step'])})")
        elif cfg.resume == "auto" and not isinstance(cfg.resume, bool):
            console.print(f"--resume=auto: no checkpoint in {ckpt.directory}; starting from "
                          "step 0")
        return _run(cfg, eff, schedule, model_cfg, tok, host_state, p_train, p_eval,
                    batcher, val_batcher, ckpt, console, metrics_dir, (put, get, to_ckpt),
                    tokens_per_step, n_global, primary, workdir_arg)
    finally:
        ckpt.close()


class _SigintFlag:
    """Ctrl-C (SIGINT) sets a flag the loop checks after each step; a second one interrupts
    at once (Python's default). Installed only in the main thread."""

    def __init__(self) -> None:
        self.hit = False
        self._old: Any = None

    def __enter__(self) -> _SigintFlag:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum: int, frame: Any) -> None:
        del signum, frame
        self.hit = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped training after a step; ``checkpoint`` is where the state was
    saved (None if it was not finite). ``python -m train`` exits with status 130."""

    def __init__(self, msg: str, step: int, checkpoint: str | None) -> None:
        super().__init__(msg)
        self.step = step
        self.checkpoint = checkpoint


def _run(cfg: TrainConfig, eff: dict, schedule: S.Schedule, model_cfg: Any, tok: Any,
         host_state: dict, p_train: Any, p_eval: Any, batcher: Batcher, val_batcher: Batcher,
         ckpt: Checkpointer, console: Console, metrics_dir: str, put_get: tuple,
         tokens_per_step: int, n_global: int, primary: bool,
         workdir_arg: str) -> dict[str, Any]:
    start = host_scalar(host_state["step"])
    # the engine's host -> devices, devices -> host copies, state -> what a checkpoint saves
    _put, get_host, to_ckpt = put_get
    state = _put(host_state)
    writer = MetricsWriter(metrics_dir, tensorboard=cfg.tensorboard, enabled=primary)
    console.start_step = start
    fpt = models.flops_per_token(model_cfg, cfg.seq_len)
    peak, peak_desc = _peak_flops(n_global)
    history: list[tuple[int, float]] = []
    evals: list[tuple[int, float]] = []
    eval_batches = [val_batcher.eval_batch(i) for i in range(cfg.eval_batches)]
    pending: list[tuple[int, dict]] = []
    best, since_best = math.inf, 0
    existing = set(ckpt.all_steps())
    last_saved = max(existing) if existing else None
    stop_reason = "completed"
    t_first = None  # wall time after the first (compiling) step finished
    window_t, window_steps = time.perf_counter(), 0
    train_time, train_steps = 0.0, 0  # steady-state training only (no compile, eval, save)

    def mfu_of(tps: float | None) -> float | None:
        if tps is None or not (peak and math.isfinite(peak)):
            return None
        return fpt * tps / peak

    def flush(step_done: int) -> None:
        """Fetch pending metrics and log them (the ``lr`` each update applied, as the step
        reports it); stop on a non-finite loss or a non-finite new state, before any save."""
        nonlocal window_t, window_steps, train_time, train_steps
        if not pending:
            return
        fetched = jax.device_get([m for _, m in pending])
        now = time.perf_counter()
        tps = None
        if window_steps > 0:  # timed steady-state steps in this window (none: compile step)
            tps = tokens_per_step * window_steps / max(now - window_t, 1e-9)
            train_time += now - window_t
            train_steps += window_steps
        window_t, window_steps = now, 0
        bad = None
        for (t, _), m in zip(pending, fetched):
            row = {k: v[0].item() for k, v in m.items()}  # device 0's copy
            loss, finite = float(row["loss"]), bool(row.pop("finite"))
            extra = {}
            if "skipped" in row:  # float16: dynamic loss scaling
                extra = {"loss_scale": float(row["loss_scale"]), "skipped": int(row["skipped"])}
            writer.write(t, loss=loss, lr=float(row["lr"]), grad_norm=float(row["grad_norm"]),
                         **extra, tokens_per_s=tps, time=time.time())
            history.append((t, loss))
            skipped = bool(row.get("skipped", False))
            if bad is None and (not finite or (not math.isfinite(loss) and not skipped)):
                what = (f"loss is {loss}" if not math.isfinite(loss) else
                        f"the parameters/optimizer state are not finite after the update (loss "
                        f"{loss:.4g})")
                bad = (t, what, float(row["lr"]))
        t_last, _ = pending[-1]
        pending.clear()
        if bad is None and ((t_last + 1) % cfg.log_interval == 0 or t_last + 1 == cfg.steps):
            m = fetched[-1]
            console.update(t_last, float(m["loss"][0]), float(m["lr"][0]), tps,
                           float(m["grad_norm"][0]), mfu_of(tps))
        if bad is not None:
            t, what, lr = bad
            where = ckpt.path(last_saved) if last_saved is not None else "none saved yet"
            console.print(f"ERROR: {what} at step {t}; training stopped. "
                          f"The last good checkpoint is untouched: {where}")
            writer.close()
            raise NonFiniteLossError(
                f"{what} at step {t} (lr {lr:.3e}); stopped without saving. Last good "
                f"checkpoint: {where}" + (" (resume with --resume and, e.g., a lower --lr)"
                                          if last_saved is not None else ""))

    def reset_window() -> None:
        """After an evaluation or a save: the next window times training steps only."""
        nonlocal window_t, window_steps
        window_t, window_steps = time.perf_counter(), 0

    def save(step: int) -> None:
        nonlocal last_saved
        if step in existing:  # resumed from an earlier step: the same state is saved there
            return
        ckpt.save(step, to_ckpt(state), eff)
        existing.add(step)
        last_saved = step

    def evaluate() -> float:
        losses = [p_eval(state["params"], b) for b in eval_batches]
        return float(np.mean([float(x[0]) for x in jax.device_get(losses)]))

    t_start = time.perf_counter()
    step = start
    with _SigintFlag() as sigint:
        while step < cfg.steps:
            batch = batcher.batch(step)
            state, m = p_train(state, batch)
            pending.append((step, m))
            step += 1
            window_steps += 1
            if t_first is None:
                jax.block_until_ready(m["loss"])
                t_first = time.perf_counter()
                window_t, window_steps = t_first, 0
                console.steady(step, t_first)
                flush(step)  # first step: compile time excluded from tokens/s and the ETA
            elif step % cfg.log_interval == 0 or step == cfg.steps:
                flush(step)
            if step % cfg.eval_interval == 0 or step == cfg.steps:
                flush(step)
                v = evaluate()
                evals.append((step, v))
                writer.write(step, val_loss=v)
                console.print(f"eval at step {step}: val loss {v:.4f}")
                if v < best:
                    best, since_best = v, 0
                else:
                    since_best += 1
                if cfg.early_stop_patience and since_best >= cfg.early_stop_patience:
                    stop_reason = (f"early stop: no val-loss improvement in "
                                   f"{cfg.early_stop_patience} evaluation(s)")
                reset_window()
            if (step % cfg.checkpoint_interval == 0 or step == cfg.steps
                    or stop_reason != "completed"):
                flush(step)
                save(step)
                reset_window()
            if stop_reason != "completed":
                console.print(stop_reason)
                break
            if sigint.hit:
                _interrupt(step, flush, save, to_ckpt(state), ckpt, console, writer, cfg,
                           workdir_arg, existing)
    flush(step)
    t_end = time.perf_counter()
    console.close()
    ckpt.wait()

    tps = tokens_per_step * train_steps / train_time if train_time > 0 else float("nan")
    mfu = fpt * tps / peak if peak and math.isfinite(peak) else float("nan")
    final_params = get_host(state["params"])
    final_val = evals[-1][1] if evals and evals[-1][0] == step else (evaluate() if step > start
                                                                     else float("nan"))
    summary: dict[str, Any] = {
        "steps": step, "start_step": start, "stop_reason": stop_reason,
        "final_loss": history[-1][1] if history else float("nan"),
        "first_loss": history[0][1] if history else float("nan"),
        "val_loss": final_val, "tokens_per_s": tps, "mfu": mfu,
        "flops_per_token": fpt, "wall_s": t_end - t_start,
        "checkpoint_dir": ckpt.directory, "last_checkpoint": last_saved,
        "metrics_path": writer.path, "losses": history, "evals": evals,
        "params": final_params,
    }
    if primary and cfg.sample_tokens > 0:
        prompt = tok.encode(cfg.sample_prompt).astype(np.int32)
        out = models.generate(model_cfg, final_params, prompt, cfg.sample_tokens,
                              jax.random.key(cfg.seed), temperature=0.8, top_k=None)
        summary["sample"] = tok.decode(np.asarray(out))
    writer.close()
    console.print("\n=== summary ===")
    console.print(f"steps {start} -> {step} ({stop_reason}) in {fmt_duration(t_end - t_start)}")
    console.print(f"train loss {summary['first_loss']:.4f} (step {start + 1}) -> "
                  f"{summary['final_loss']:.4f} (step {step}); val loss {final_val:.4f}")
    if math.isfinite(tps):
        console.print(f"throughput {tps:,.0f} tokens/s (steady state); {fpt / 1e6:.2f} "
                      f"MFLOP/token; MFU {100 * mfu:.2f}% of {peak_desc}")
    console.print(f"checkpoints: {ckpt.directory} (last step {last_saved})")
    tb = f" (TensorBoard: {os.path.join(metrics_dir, 'tb')})" if cfg.tensorboard else ""
    console.print(f"metrics: {writer.path}{tb}; plot: python -m train.plot {writer.path}")
    if "sample" in summary:
        console.print(f"sample ({cfg.sample_tokens} tokens, temperature 0.8):\n"
                      f"{summary['sample']}")
    return summary


def _interrupt(step: int, flush: Any, save: Any, state: Any, ckpt: Checkpointer,
               console: Console, writer: MetricsWriter, cfg: TrainConfig, workdir_arg: str,
               existing: set[int]) -> None:
    """Ctrl-C: log, save the state after ``step`` if finite, say how to resume, raise.
    ``state`` is the checkpoint's view of it (host arrays or sharded global arrays)."""
    flush(step)  # raises NonFiniteLossError (nothing saved) if a loss is not finite
    saved: str | None = None
    if step in existing:
        saved = ckpt.path(step)
    elif _finite(state):
        save(step)
        ckpt.wait()
        saved = ckpt.path(step)
    console.close()
    writer.close()
    if saved is None:
        msg = (f"interrupted after step {step}: the state is not finite, nothing saved "
               f"(last checkpoint: {ckpt.path(max(existing)) if existing else 'none'})")
    else:
        msg = f"interrupted after step {step}; checkpoint saved: {saved}"
    console.print(f"{msg}\nresume with: {_resume_command(cfg, workdir_arg)}")
    raise TrainingInterrupted(msg, step, saved)


__all__ += ["CheckpointError"]
