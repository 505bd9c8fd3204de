"""``train_and_evaluate(config, workdir)``: the training loop.

Step convention: optimizer step ``t`` (0-based) consumes ``batch(t)`` and uses the learning rate
``schedule(t)`` (optax's count before the update); the metrics record ``{"step": t, "loss",
"lr": schedule(t), ...}``. A checkpoint labelled ``n`` holds the state after ``n`` updates, so a
resumed run continues with step ``n`` — bit-identical to an uninterrupted run.
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
import schedules as S

from .checkpoint import Checkpointer, CheckpointError
from .config import TrainConfig
from .data import Batcher, load_data
from .lr import build_schedule
from .metrics import Console, MetricsWriter, fmt_duration
from .optim import make_optimizer, param_table
from .step import AXIS, make_eval_step, make_train_step
from .tokenizer import get_tokenizer

__all__ = ["NonFiniteLossError", "effective_config", "train_and_evaluate"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped without saving."""


_STEP_CACHE: dict[Any, tuple[Any, Any, Any]] = {}


def _init_distributed(cfg: TrainConfig) -> None:
    if cfg.coordinator_address is None:
        return
    from jax._src import distributed as _dist

    if getattr(_dist.global_state, "client", None) is not None:
        return  # already initialized in this process
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                               num_processes=cfg.num_processes, process_id=cfg.process_id)


def _devices(cfg: TrainConfig) -> list | None:
    """The devices to pmap over (None: all), ``cfg.devices`` per process when set."""
    local = jax.local_device_count()
    if cfg.devices is None:
        return None
    if cfg.devices > local:
        raise ValueError(f"--devices={cfg.devices} is invalid: this process has {local} local "
                         f"device(s)")
    by_proc: dict[int, list] = {}
    for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
        by_proc.setdefault(d.process_index, []).append(d)
    return [d for p in sorted(by_proc) for d in by_proc[p][: cfg.devices]]


def effective_config(cfg: TrainConfig, schedule: S.Schedule, model_cfg: Any,
                     extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config as saved with every checkpoint: all keys, the schedule's ``to_config`` and
    spec, and the resolved model configuration."""
    out = cfg.to_dict()
    try:
        out["schedule_config"] = schedule.to_config()
    except ValueError:
        out["schedule_config"] = None
    out["schedule_spec"] = repr(schedule)
    out["model_config"] = dataclasses.asdict(model_cfg)
    out.update(extra or {})
    return out


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


def _compiled(model_cfg: Any, cfg: TrainConfig, schedule: S.Schedule, params: Any,
              devices: list | None) -> tuple[Any, Any, Any]:
    """(optimizer, pmapped train step, pmapped eval step), cached per process so repeated runs
    with the same model/optimizer settings (tests, benchmarks) reuse the compiled code."""
    key = (model_cfg, repr(schedule), cfg.clip_norm, cfg.beta1, cfg.beta2, cfg.eps,
           cfg.weight_decay, tuple(sorted(cfg.lr_mults.items())), cfg.seed,
           None if devices is None else tuple(d.id for d in devices))
    if key not in _STEP_CACHE:
        tx = make_optimizer(cfg, schedule, params)
        _STEP_CACHE[key] = (tx, make_train_step(model_cfg, tx, cfg.seed, devices),
                            make_eval_step(model_cfg, devices))
    return _STEP_CACHE[key]


def _replicate(tree: Any, devices: list | None) -> Any:
    """Copy a host pytree onto every (local) device, laid out as the pmapped step expects.

    The identity is pmapped over the step's axis name (``AXIS``) so the copies carry the same
    sharding as the step's outputs: otherwise the train step compiles twice (first call,
    then again for its own outputs)."""
    n = jax.local_device_count() if devices is None else sum(
        d.process_index == jax.process_index() for d in devices)
    stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), tree)
    return jax.pmap(lambda x: x, axis_name=AXIS, devices=devices)(stacked)


def _unreplicate(tree: Any) -> Any:
    """Host NumPy copy of device 0's replica."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x.addressable_data(0)))[0], tree)


def train_and_evaluate(config: TrainConfig | Mapping[str, Any], workdir: str) -> dict[str, Any]:
    """Train per ``config`` with outputs under ``workdir``; returns a summary dict.

    Raises ``ValueError`` for an invalid config (before anything compiles),
    :class:`~train.checkpoint.CheckpointError` for an unusable checkpoint and
    :class:`NonFiniteLossError` when the loss becomes NaN/inf."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg = cfg.normalized().validate()
    if cfg.sweep or cfg.sweep_seeds:  # a population: train/sweep.py
        from .sweep import run_sweep

        return run_sweep(cfg, workdir)
    schedule = build_schedule(cfg)
    _init_distributed(cfg)
    pidx, pcount = jax.process_index(), jax.process_count()
    primary = pidx == 0
    devices = _devices(cfg)
    local_devices = [d for d in (devices or jax.devices()) if d.process_index == pidx]
    n_local, n_global = len(local_devices), len(devices or jax.devices())

    workdir = os.path.abspath(workdir)
    ckpt_dir = cfg.checkpoint_dir or os.path.join(workdir, "checkpoints")
    metrics_dir = cfg.metrics_dir or os.path.join(workdir, "metrics")
    console = Console(cfg.steps, enabled=primary)

    tok = get_tokenizer(cfg.tokenizer)
    model_cfg = models.get_config(cfg.model, cfg.base_size(), vocab_size=tok.vocab_size,
                                  **cfg.model_overrides())
    train_data, val_data, data_desc = load_data(cfg.data, cfg.val_data, tok, cfg.data_cache,
                                                cfg.val_fraction)
    train_data.check(cfg.seq_len + 1, tok.vocab_size)
    val_data.check(cfg.seq_len + 1, tok.vocab_size)
    batch_kw = dict(seq_len=cfg.seq_len, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                    local_devices=n_local, process_index=pidx, process_count=pcount,
                    seed=cfg.seed)
    batcher = Batcher(train_data, **batch_kw)
    val_batcher = Batcher(val_data, **batch_kw)
    tokens_per_step = pcount * n_local * cfg.grad_accum * cfg.batch_size * cfg.seq_len

    eff = effective_config(cfg, schedule, model_cfg, {
        "workdir": workdir, "process_count": pcount, "global_devices": n_global,
        "tokens_per_step": tokens_per_step, "data_description": data_desc,
    })
    console.print("effective config:\n" + json.dumps(eff, indent=1, sort_keys=True))
    console.print(f"data: {data_desc}: {train_data.num_tokens:,} train / "
                  f"{val_data.num_tokens:,} val tokens ({tok.name} tokenizer)")
    console.print(f"devices: {n_global} ({pcount} process(es) x {n_local}, "
                  f"{jax.devices()[0].platform}); global batch {tokens_per_step:,} tokens "
                  f"({pcount * n_local} x {cfg.grad_accum} x {cfg.batch_size} x {cfg.seq_len})")

    # state
    params = jax.device_get(models.init_params(model_cfg, jax.random.key(cfg.seed)))
    tx, p_train, p_eval = _compiled(model_cfg, cfg, schedule, params, devices)
    host_state = {"step": np.zeros((), np.int32), "params": params,
                  "opt_state": jax.device_get(tx.init(params))}
    console.print("parameters:\n" + param_table(params, cfg.lr_mults))

    ckpt = Checkpointer(ckpt_dir, cfg.keep_checkpoints, cfg.async_checkpoints)
    try:
        latest = ckpt.latest_step()
        if latest is not None and not cfg.resume:
            raise ValueError(
                f"--resume=False but {ckpt_dir} already holds checkpoints (latest step "
                f"{latest}); pass --resume to continue, or use another --workdir/"
                "--checkpoint-dir (existing checkpoints are never overwritten)")
        if latest is not None:
            host_state = ckpt.restore(latest, host_state, eff)
            console.print(f"resumed from {ckpt.path(latest)} (step {int(host_state['step'])})")
        elif cfg.resume:
            console.print(f"--resume: no checkpoint in {ckpt_dir}; starting from step 0")
        return _run(cfg, eff, schedule, model_cfg, tok, host_state, p_train, p_eval,
                    batcher, val_batcher, ckpt, console, metrics_dir, devices,
                    tokens_per_step, n_global, primary)
    finally:
        ckpt.close()


def _run(cfg: TrainConfig, eff: dict, schedule: S.Schedule, model_cfg: Any, tok: Any,
         host_state: dict, p_train: Any, p_eval: Any, batcher: Batcher, val_batcher: Batcher,
         ckpt: Checkpointer, console: Console, metrics_dir: str, devices: list | None,
         tokens_per_step: int, n_global: int, primary: bool) -> dict[str, Any]:
    start = int(host_state["step"])
    state = _replicate(host_state, devices)
    writer = MetricsWriter(metrics_dir, tensorboard=cfg.tensorboard, enabled=primary)
    console.start_step = start
    history: list[tuple[int, float]] = []
    evals: list[tuple[int, float]] = []
    eval_batches = [val_batcher.eval_batch(i) for i in range(cfg.eval_batches)]
    pending: list[tuple[int, dict]] = []
    best, since_best = math.inf, 0
    last_saved = ckpt.latest_step()
    stop_reason = "completed"
    t_first = None  # wall time after the first (compiling) step finished
    window_t, window_steps = time.perf_counter(), 0

    def flush(step_done: int) -> None:
        """Fetch pending metrics, log them, and stop on a non-finite loss."""
        nonlocal window_t, window_steps, t_first
        if not pending:
            return
        fetched = jax.device_get([m for _, m in pending])
        now = time.perf_counter()
        tps = tokens_per_step * window_steps / max(now - window_t, 1e-9)
        window_t, window_steps = now, 0
        bad = None
        for (t, _), m in zip(pending, fetched):
            loss, gnorm = float(m["loss"][0]), float(m["grad_norm"][0])
            lr = schedule(t)
            writer.write(t, loss=loss, lr=lr, grad_norm=gnorm, tokens_per_s=tps,
                         time=time.time())
            history.append((t, loss))
            if bad is None and not math.isfinite(loss):
                bad = (t, loss)
        t_last, _ = pending[-1]
        pending.clear()
        if bad is None and ((t_last + 1) % cfg.log_interval == 0 or t_last + 1 == cfg.steps):
            m = fetched[-1]
            console.update(t_last, float(m["loss"][0]), schedule(t_last), tps,
                           float(m["grad_norm"][0]))
        if bad is not None:
            where = ckpt.path(last_saved) if last_saved is not None else "none saved yet"
            console.print(f"ERROR: loss is {bad[1]} at step {bad[0]}; training stopped. "
                          f"The last good checkpoint is untouched: {where}")
            writer.close()
            raise NonFiniteLossError(
                f"loss is {bad[1]} at step {bad[0]} (lr {schedule(bad[0]):.3e}); stopped without "
                f"saving. Last good checkpoint: {where}")

    def evaluate() -> float:
        losses = [p_eval(state["params"], b) for b in eval_batches]
        return float(np.mean([float(x[0]) for x in jax.device_get(losses)]))

    t_start = time.perf_counter()
    step = start
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
            flush(step)  # first step: compile time excluded from tokens/s
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
        if (step % cfg.checkpoint_interval == 0 or step == cfg.steps
                or stop_reason != "completed"):
            flush(step)
            ckpt.save(step, _unreplicate(state), eff)
            last_saved = step
        if stop_reason != "completed":
            console.print(stop_reason)
            break
    flush(step)
    t_end = time.perf_counter()
    console.close()
    ckpt.wait()

    timed_steps = step - start - 1
    tps = tokens_per_step * timed_steps / (t_end - t_first) if t_first and timed_steps > 0 else 0.0
    fpt = models.flops_per_token(model_cfg, cfg.seq_len)
    peak, peak_desc = _peak_flops(n_global)
    mfu = fpt * tps / peak if peak and math.isfinite(peak) else float("nan")
    final_params = _unreplicate(state["params"])
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
    console.print(f"train loss {summary['first_loss']:.4f} (step {start}) -> "
                  f"{summary['final_loss']:.4f} (step {step - 1}); val loss {final_val:.4f}")
    console.print(f"throughput {tps:,.0f} tokens/s; {fpt / 1e6:.2f} MFLOP/token; MFU "
                  f"{100 * mfu:.2f}% of {peak_desc}")
    console.print(f"checkpoints: {ckpt.directory} (last step {last_saved})")
    console.print(f"metrics: {writer.path} (TensorBoard: {os.path.join(metrics_dir, 'tb')}); "
                  f"plot: python -m train.plot {writer.path}")
    if "sample" in summary:
        console.print(f"sample ({cfg.sample_tokens} tokens, temperature 0.8):\n"
                      f"{summary['sample']}")
    return summary


__all__ += ["CheckpointError"]
