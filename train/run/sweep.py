"""Population training: K members of a hyperparameter sweep in one compiled program.

``python -m train --sweep lr=1e-3,3e-3 --sweep warmup_steps=0,50`` (the grid is the product of
the ``--sweep`` entries; ``--sweep-seeds=K`` adds the seeds ``seed .. seed+K-1`` as one more
axis) or :func:`sweep` from Python. Every member is exactly the single run with its settings:
the step is :func:`train.engine.step.update` (the single run's step body) under ``jax.vmap`` over
the members' parameters, optimizer states and hyperparameters, inside the usual ``jax.pmap`` over
devices, so K small matrix products become one batched one.

What varies across members, and how it enters the program:

* **optimizer hyperparameters** (``beta1``, ``beta2``, ``eps``, ``weight_decay``,
  ``clip_norm``): the optimizer is built inside the vmapped function from traced values (a
  member with ``clip_norm=0`` gets ``inf``: ``clip_by_global_norm(inf)`` is the identity);
* **schedule fields** (``lr``, ``warmup_steps``, ``min_lr``, ...): each member's schedule is
  built from its config by :func:`train.schedule.build.build_schedule`. Algebra schedules
  (Megatron's,
  ``constant``, ``--schedule`` specs) are pytrees whose hyperparameters are leaves: the K
  schedules must share one tree structure and their varying leaves are stacked and vmapped.
  Torch schedulers are, in a single run already, a table of torch's exact values gathered by
  the step; here the K tables are stacked into one ``[K, steps]`` leaf;
* **dropout**: the member's rate is passed to the model at call time (``dropout_rate``, a
  traced scalar; ``models.layers.Dropout`` is ``nn.Dropout``'s arithmetic bit for bit);
* **seed** (``--sweep seed=...`` or ``--sweep-seeds``): the initialization, the data order and
  the dropout keys, as in a single run. Members with one seed share the data stream (the same
  batch at step ``t``), so their curves are comparable.

With ``--dtype=float16`` each member also has its own dynamic loss scaler (the single run's
``state["loss_scale"]``, stacked and vmapped like the rest of the state): a member skips the
steps its single run skips, and a skipped step is no divergence.

Anything else changes the compiled program's structure (model shapes, scheduler type, the run's
bookkeeping) and is rejected with a message: such variants need separate runs.

A member whose loss, gradient norm or new state (``update``'s ``finite``) is not finite is
**frozen** (its update is masked with ``jnp.where``: it keeps its last finite state) and
reported as diverged (a float16 step skipped for overflowing gradients is not);
``--early-stop-patience`` freezes members one by one. The others go on. Outputs:
``WORKDIR/members.json`` (member index -> its swept settings under the config's field names),
``WORKDIR/metrics/metrics.jsonl`` (rows carry ``member``), checkpoints of the whole population
(exact resume), a ranked table and ``WORKDIR/sweep.png``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

import models

from ..checkpoint import Checkpointer
from ..config import TrainConfig, check_dirs
from ..data import Batcher, load_data
from ..devices import simulate_devices
from ..engine.pmap import replicate, select_devices, unreplicate
from ..engine.population import OPTIMIZER_FIELDS, Population, population_steps, schedule_mode
from ..engine.step import loss_scale_rule
from ..metrics import Console, MetricsWriter, fmt_duration, settings_text
from ..plot import plot_sweep
from ..resume import check_compatible, choose_step, clear_outputs, read_saved_config
from ..schedule.build import build_schedule
from ..tokenizer import get_tokenizer
from .setup import effective_config, finished_message, init_distributed

__all__ = ["SWEEPABLE", "member_configs", "parse_sweep", "run_sweep", "sweep"]

#: fields a sweep may vary: they are leaves of one compiled program.
SCHEDULE_FIELDS = ("lr", "warmup_steps", "warmup_ratio", "total_steps", "min_lr",
                   "lr_step_size", "lr_gamma", "lr_factor", "lr_total_iters", "lr_start_factor",
                   "lr_end_factor", "lr_power", "lr_t0", "lr_t_mult", "lr_base",
                   "lr_pct_start", "lr_div_factor", "lr_final_div_factor", "lr_num_cycles",
                   "min_lr_ratio", "lr_warmup_iters", "lr_warmup_init", "lr_decay_iters",
                   "lr_wsd_decay_iters")
SWEEPABLE = (*SCHEDULE_FIELDS, *OPTIMIZER_FIELDS, "dropout", "seed")

_WHY = {
    **dict.fromkeys(("model", "model_size", "n_layer", "n_head", "n_embd", "dtype", "seq_len",
                     "tokenizer"),
                    "defines the model (its parameter shapes or its compiled Flax module)"),
    **dict.fromkeys(("data", "val_data", "val_fraction", "data_cache", "batch_size",
                     "grad_accum"), "defines the data or the batch shape shared by all members"),
    **dict.fromkeys(("lr_scheduler", "schedule", "lr_chain", "lr_lambda", "lr_milestones",
                     "lr_decay_style", "lr_wsd_decay_style", "lr_mode", "lr_anneal_strategy",
                     "lr_three_phase", "lr_warmup_type", "lr_decay_type"),
                    "selects the schedule's structure (a different pytree, not different "
                    "leaves)"),
    "lr_mults": "defines the optimizer's parameter groups (its structure)",
}


def _why(name: str) -> str:
    return _WHY.get(name, "is the run's bookkeeping, shared by the whole population")


# -- the grid -----------------------------------------------------------------------------


def _parse_value(name: str, text: str, hint: Any) -> Any:
    args = typing.get_args(hint) or (hint,)
    t = text.strip()
    if type(None) in args and t.lower() in ("none", "null"):
        return None
    try:
        if int in args:
            return int(t)
        return float(t)
    except ValueError:
        kind = "an int" if int in args else "a number"
        raise ValueError(f"--sweep {name}={text!r} is invalid: each value must be {kind}") from None


def parse_sweep(entries: Sequence[str], seeds: int = 0,
                base_seed: int = 0) -> tuple[list[str], list[dict[str, Any]]]:
    """``["lr=1e-3,3e-3", "warmup_steps=0,50"]`` -> (swept field names, member settings).

    The members are the grid's product in row-major order (the last entry varies fastest);
    ``seeds=K > 1`` appends the axis ``seed = base_seed .. base_seed + K - 1``. Raises
    ``ValueError`` naming the entry for a malformed entry or a field that cannot be swept."""
    hints = typing.get_type_hints(TrainConfig)
    names: list[str] = []
    axes: list[list[Any]] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"--sweep={entry!r} is invalid: must be FIELD=V1,V2,... "
                             "(e.g. lr=1e-3,3e-3)")
        key, sep, vals = entry.partition("=")
        name = key.strip().lstrip("-").replace("-", "_")
        if not sep or not name or not vals.strip():
            raise ValueError(f"--sweep={entry!r} is invalid: must be FIELD=V1,V2,... "
                             "(e.g. lr=1e-3,3e-3)")
        if name not in hints:
            raise ValueError(f"--sweep={entry!r} is invalid: {name!r} is not a config field; "
                             f"sweepable: {', '.join(SWEEPABLE)}")
        if name not in SWEEPABLE:
            raise ValueError(
                f"--sweep={entry!r} is invalid: {name} cannot be swept: it {_why(name)}, which "
                "one compiled program cannot vary; run one `python -m train` per value instead. "
                f"Sweepable: {', '.join(SWEEPABLE)}")
        if name in names or (name == "seed" and seeds and seeds > 1):
            raise ValueError(f"--sweep={entry!r} is invalid: {name} is swept twice")
        values = [_parse_value(name, v, hints[name]) for v in vals.split(",") if v.strip()]
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"--sweep={entry!r} is invalid: the values must be distinct")
        names.append(name)
        axes.append(values)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 0:
        raise ValueError(f"--sweep-seeds={seeds!r} is invalid: must be an int >= 0 (K seeds)")
    if seeds > 1:
        names.append("seed")
        axes.append(list(range(base_seed, base_seed + seeds)))
    members = [dict(zip(names, combo)) for combo in itertools.product(*axes)]
    return names, members


def member_configs(cfg: TrainConfig) -> tuple[list[str], list[dict[str, Any]], list[TrainConfig]]:
    """(swept names, member settings, member configs) of a sweep config, every member validated
    as a single run; raises ``ValueError`` naming the member otherwise."""
    names, members = parse_sweep(cfg.sweep, cfg.sweep_seeds, cfg.seed)
    base = dataclasses.replace(cfg, sweep=(), sweep_seeds=0)
    cfgs = []
    for i, m in enumerate(members):
        try:
            cfgs.append(base.replace(**m))
        except ValueError as e:
            raise ValueError(f"--sweep member {i} ({settings_text(m)}) is invalid: {e}") from None
    schedule_mode([build_schedule(c) for c in cfgs], members)  # structure check
    return names, members, cfgs


# -- what varies, and how it enters the compiled step ---------------------------------------


# -- the runner ---------------------------------------------------------------------------


def sweep(config: TrainConfig | Mapping[str, Any], workdir: str,
          grid: Mapping[str, Sequence[Any]] | None = None, seeds: int | None = None
          ) -> dict[str, Any]:
    """Train the grid's product of ``config`` variants as one population under ``workdir``.

    ``grid`` maps config field names to value lists (``{"lr": [1e-3, 3e-3], "warmup_steps":
    [0, 50]}``); ``seeds=K`` adds the seeds ``seed .. seed+K-1``. Both add to any ``sweep``
    entries already in ``config``. Returns the summary of :func:`run_sweep`."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    entries = list(cfg.sweep)
    for k, vals in (grid or {}).items():
        if isinstance(vals, str | bytes) or not isinstance(vals, Sequence) or not vals:
            raise ValueError(f"grid[{k!r}]={vals!r} is invalid: must be a non-empty list")
        entries.append(f"{k}=" + ",".join(repr(v) if isinstance(v, float) else str(v)
                                          for v in vals))
    cfg = cfg.replace(sweep=tuple(entries),
                      sweep_seeds=cfg.sweep_seeds if seeds is None else seeds)
    return run_sweep(cfg, workdir)


def run_sweep(config: TrainConfig | Mapping[str, Any], workdir: str) -> dict[str, Any]:
    """Train every member of ``config.sweep``/``config.sweep_seeds`` in one program.

    Returns ``{"members", "swept", "results", "ranking", "best", "plot", "steps", ...}``;
    ``results[i]`` has member ``i``'s ``losses``, ``evals``, ``final_loss``, ``val_loss``,
    ``status`` (``ok``, ``diverged at step t``, ``early-stopped at step t``) and ``params``."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg = cfg.normalized().validate()
    simulate_devices(cfg.simulate_devices)  # as a single run: before JAX starts
    init_distributed(cfg)  # before any JAX computation (the population's hyperparameters)
    names, members, cfgs = member_configs(cfg)
    k = len(members)
    schedules = [build_schedule(c) for c in cfgs]
    pop = Population(cfgs, members, schedules)
    per_member_data = "seed" in names
    pidx, pcount = jax.process_index(), jax.process_count()
    primary = pidx == 0
    devices = select_devices(cfg)
    local = [d for d in (devices or jax.devices()) if d.process_index == pidx]
    n_local, n_global = len(local), len(devices or jax.devices())

    check_dirs(cfg, workdir)
    workdir = os.path.abspath(workdir)
    ckpt_dir = os.path.abspath(cfg.checkpoint_dir or os.path.join(workdir, "checkpoints"))
    metrics_dir = cfg.metrics_dir or os.path.join(workdir, "metrics")
    console = Console(cfg.steps, enabled=primary, bar=False)
    if cfg.overwrite and primary:
        removed = clear_outputs(workdir, [ckpt_dir, metrics_dir,
                                          os.path.join(workdir, "members.json")])
        if removed:
            console.print(f"--overwrite: deleted {', '.join(removed)}")
    resume_step = choose_step(cfg.resume, ckpt_dir)
    tok = get_tokenizer(cfg.tokenizer)
    model_cfg = models.get_config(cfg.model, cfg.base_size(), vocab_size=tok.vocab_size,
                                  **cfg.model_overrides())
    tokens_per_step = pcount * n_local * cfg.grad_accum * cfg.batch_size * cfg.seq_len
    # the saved config: the base run's keys, the members and each member's schedule, so that
    # train.resume's guard compares every member's trajectory (one message, as single runs)
    eff = effective_config(cfg, schedules[0], model_cfg, {
        "workdir": workdir, "process_count": pcount, "global_devices": n_global,
        "tokens_per_step": tokens_per_step, "members": members, "swept": names,
        "member_schedules": [repr(x) for x in schedules],
    })
    if resume_step is not None:  # the guard, before any data is read or code compiled
        where = os.path.join(ckpt_dir, str(resume_step))
        check_compatible(read_saved_config(ckpt_dir, resume_step), eff, where)
        if resume_step > cfg.steps:
            raise ValueError(f"--steps={cfg.steps} is invalid: the checkpoint to resume from "
                             f"({where}) is at step {resume_step}, past it")
        if resume_step == cfg.steps:  # as a single run: nothing to do; the saved summary
            return _finished(cfg, names, members, ckpt_dir, metrics_dir, resume_step, workdir,
                             console, pop.mode)
    train_data, val_data, data_desc = load_data(cfg.data, cfg.val_data, tok, cfg.data_cache,
                                                cfg.val_fraction)
    train_data.check(cfg.seq_len + 1, tok.vocab_size)
    val_data.check(cfg.seq_len + 1, tok.vocab_size)
    batch_kw = dict(seq_len=cfg.seq_len, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                    local_devices=n_local, process_index=pidx, process_count=pcount)
    seeds = [c.seed for c in cfgs] if per_member_data else [cfg.seed]
    batchers = [Batcher(train_data, seed=s, **batch_kw) for s in seeds]
    val_batchers = [Batcher(val_data, seed=s, **batch_kw) for s in seeds]

    def batch_of(bs: list[Batcher], fn: str, i: int) -> np.ndarray:
        if not per_member_data:
            return getattr(bs[0], fn)(i)
        return np.stack([getattr(b, fn)(i) for b in bs], axis=1)

    eff["data_description"] = data_desc
    console.print(f"sweep: {k} members over {', '.join(names)} in one program "
                  f"(schedules: {pop.mode}; data: "
                  f"{'one stream per seed' if per_member_data else 'one shared stream'})")
    console.print(f"data: {data_desc}; devices: {n_global} ({pcount} process(es) x {n_local}); "
                  f"{tokens_per_step:,} tokens per step per member")
    if primary:
        os.makedirs(workdir, exist_ok=True)
        tmp = os.path.join(workdir, f"members.json.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(members, f, indent=1)
        os.replace(tmp, os.path.join(workdir, "members.json"))

    # state: each member's init is its single run's (init seed), stacked on a leading axis
    inits = {s: jax.device_get(models.init_params(model_cfg, jax.random.key(s)))
             for s in {c.seed for c in cfgs}}
    params = jax.tree.map(lambda *xs: np.stack(xs), *[inits[c.seed] for c in cfgs])
    opt_state = jax.vmap(lambda p, h: pop.optimizer(h, pop.schedule(h), p).init(p))(
        params, pop.h)
    # the top-level "step" is the checkpoint's label (train.checkpoint checks it on save and
    # restore); "best" starts at the largest finite float (checkpoints hold finite values only)
    host = {"step": np.zeros((), np.int32),
            "state": {"step": np.zeros((), np.int32), "params": params,
                      "opt_state": jax.device_get(opt_state), "active": np.ones(k, bool)},
            "book": {"best": np.full(k, np.finfo(np.float64).max),
                     "since_best": np.zeros(k, np.int32),
                     "stopped": np.full(k, -1, np.int32), "diverged": np.full(k, -1, np.int32)}}
    rule = loss_scale_rule(cfg)
    if rule is not None:  # float16: one loss scaler per member, as each single run's
        host["state"]["loss_scale"] = jax.tree.map(lambda x: np.stack([x] * k),
                                                   rule.init_state())
    p_train, p_eval = population_steps(model_cfg, pop, per_member_data, devices)

    ckpt = Checkpointer(ckpt_dir, cfg.keep_checkpoints, cfg.async_checkpoints)
    try:
        if resume_step is not None:
            host = ckpt.restore(resume_step, host, eff)
            console.print(f"resumed from {ckpt.path(resume_step)} "
                          f"(step {int(host['state']['step'])})")
        elif cfg.resume == "auto" and not isinstance(cfg.resume, bool):
            console.print(f"--resume=auto: no checkpoint in {ckpt_dir}; starting from step 0")
        run = _Run(cfg, eff, names, members, pop, model_cfg, host, p_train, p_eval,
                   lambda fn, i: batch_of(batchers if fn == "batch" else val_batchers, fn, i),
                   ckpt, console, metrics_dir, devices, tokens_per_step, primary,
                   replicate, unreplicate)
        summary = run.loop()
    finally:
        ckpt.close()
    if primary:
        summary["plot"] = plot_sweep(summary, os.path.join(workdir, "sweep.png"))
        console.print(f"plot: {summary['plot']}")
    return summary


class _Run:
    """The population's training loop (the single run's, with per-member logging/freezing)."""

    def __init__(self, cfg: TrainConfig, eff: dict, names: list[str], members: list[dict],
                 pop: Population, model_cfg: Any, host: dict, p_train: Any, p_eval: Any,
                 batch_of: Any, ckpt: Checkpointer, console: Console, metrics_dir: str,
                 devices: list | None, tokens_per_step: int, primary: bool, replicate: Any,
                 unreplicate: Any) -> None:
        self.cfg, self.eff, self.names, self.members, self.pop = cfg, eff, names, members, pop
        self.model_cfg, self.host, self.p_train, self.p_eval = model_cfg, host, p_train, p_eval
        self.batch_of, self.ckpt, self.console, self.metrics_dir = batch_of, ckpt, console, \
            metrics_dir
        self.devices, self.tokens_per_step, self.primary = devices, tokens_per_step, primary
        self.replicate, self.unreplicate = replicate, unreplicate
        self.k = len(members)
        self.book = {n: np.array(v) for n, v in host["book"].items()}
        self.hdev = replicate(pop.h, devices)

    def status(self, i: int) -> str:
        return _status(self.book, i)

    def table(self, rows: list[tuple[int, float, float]], last: str = "lr") -> str:
        return _table(self.names, self.members, self.book, rows, last)

    def loop(self) -> dict[str, Any]:
        cfg, k = self.cfg, self.k
        state = self.replicate(self.host["state"], self.devices)
        start = int(self.host["state"]["step"])
        writer = MetricsWriter(self.metrics_dir, tensorboard=False, enabled=self.primary)
        self.console.start_step = start
        history: list[list[tuple[int, float]]] = [[] for _ in range(k)]
        evals: list[list[tuple[int, float]]] = [[] for _ in range(k)]
        eval_batches = [self.batch_of("eval_batch", i) for i in range(cfg.eval_batches)]
        pending: list[tuple[int, np.ndarray, dict]] = []
        last_saved = self.ckpt.latest_step()
        t_first = None
        window = [time.perf_counter(), 0]
        stop_reason = "completed"

        def active() -> np.ndarray:
            return (self.book["diverged"] < 0) & (self.book["stopped"] < 0)

        def flush() -> None:
            nonlocal t_first
            if not pending:
                return
            fetched = jax.device_get([m for _, _, m in pending])
            now = time.perf_counter()
            tps = k * self.tokens_per_step * window[1] / max(now - window[0], 1e-9)
            window[:] = [now, 0]
            for (t, was_active, _), m in zip(pending, fetched):
                for i in np.flatnonzero(was_active):
                    loss = float(m["loss"][0][i])
                    extra = {}
                    if "skipped" in m:  # float16: the member's dynamic loss scaling
                        extra = {"loss_scale": float(m["loss_scale"][0][i]),
                                 "skipped": int(m["skipped"][0][i])}
                    writer.write(t, member=int(i), loss=loss, lr=float(m["lr"][0][i]),
                                 grad_norm=float(m["grad_norm"][0][i]), **extra,
                                 tokens_per_s=tps, time=time.time())
                    history[i].append((t, loss))
                    if not bool(m["ok"][0][i]) and self.book["diverged"][i] < 0:
                        self.book["diverged"][i] = t
                        self.console.print(f"member {i} ({settings_text(self.members[i])}) "
                                           f"diverged at step {t} (loss {loss}); frozen, the "
                                           "others go on")
            t_last = pending[-1][0]
            pending.clear()
            if (t_last + 1) % cfg.log_interval == 0 or t_last + 1 == cfg.steps:
                m = fetched[-1]
                self.console.print(f"step {t_last:>6}/{cfg.steps} | {tps:,.0f} tok/s "
                                   f"(all {k} members)")
                self.console.print(self.table([(i, float(m["loss"][0][i]),
                                                 float(m["lr"][0][i])) for i in range(k)]))

        def evaluate(st: dict) -> np.ndarray:
            losses = jax.device_get([self.p_eval(st["params"], b) for b in eval_batches])
            return np.mean([np.asarray(x[0], np.float64) for x in losses], axis=0)

        t_start = time.perf_counter()
        step = start
        while step < cfg.steps:
            was_active = active()
            state, m = self.p_train(state, self.batch_of("batch", step), self.hdev)
            pending.append((step, was_active, m))
            step += 1
            window[1] += 1
            if t_first is None:
                jax.block_until_ready(m["loss"])
                t_first = time.perf_counter()
                window[:] = [t_first, 0]
                flush()
            elif step % cfg.log_interval == 0 or step == cfg.steps:
                flush()
            if step % cfg.eval_interval == 0 or step == cfg.steps:
                flush()
                v = evaluate(state)
                stopped_now = []
                for i in np.flatnonzero(active()):
                    evals[i].append((step, float(v[i])))
                    writer.write(step, member=int(i), val_loss=float(v[i]))
                    if v[i] < self.book["best"][i]:
                        self.book["best"][i], self.book["since_best"][i] = v[i], 0
                    else:
                        self.book["since_best"][i] += 1
                    if (cfg.early_stop_patience
                            and self.book["since_best"][i] >= cfg.early_stop_patience):
                        self.book["stopped"][i] = step
                        stopped_now.append(int(i))
                self.console.print(f"eval at step {step}: val loss " + " ".join(
                    f"{i}:{v[i]:.4f}" for i in np.flatnonzero(active() | np.isin(
                        np.arange(k), stopped_now))))
                if stopped_now:
                    self.console.print(f"early stop: member(s) {stopped_now} frozen (no val-loss "
                                       f"improvement in {cfg.early_stop_patience} evaluation(s))")
                    state = {**state, "active": self.replicate(active(), self.devices)}
            if not active().any() and stop_reason == "completed":
                stop_reason = "every member stopped (diverged or early-stopped)"
            if (step % cfg.checkpoint_interval == 0 or step == cfg.steps
                    or stop_reason != "completed"):
                flush()
                host_state = self.unreplicate(state)
                # frozen members keep their last finite state: nothing non-finite is saved
                if not all(np.isfinite(x).all() for x in jax.tree.leaves(host_state["params"])):
                    raise FloatingPointError("non-finite parameters in the population state; "
                                             "not saved")
                self.ckpt.save(step, {"step": host_state["step"], "state": host_state,
                                      "book": dict(self.book)}, self.eff)
                last_saved = step
            if stop_reason != "completed":
                self.console.print(stop_reason)
                break
        flush()
        t_end = time.perf_counter()
        self.ckpt.wait()
        final = self.unreplicate(state)
        val = np.full(k, np.nan)
        for i in range(k):
            if evals[i] and evals[i][-1][0] == step:
                val[i] = evals[i][-1][1]
        if np.isnan(val).any() and step > start:
            # members frozen before the end: their final (frozen) parameters' val loss, also
            # logged, so that the saved metrics hold every member's final validation loss
            v = evaluate(state)
            for i in np.flatnonzero(np.isnan(val)):
                writer.write(step, member=int(i), val_loss=float(v[i]))
            val = np.where(np.isnan(val), v, val)
        timed = step - start - 1
        tps = (k * self.tokens_per_step * timed / (t_end - t_first)
               if t_first and timed > 0 else 0.0)
        results = []
        for i in range(k):
            results.append({
                "member": i, "settings": self.members[i], "status": self.status(i),
                "losses": history[i], "evals": evals[i],
                "final_loss": history[i][-1][1] if history[i] else float("nan"),
                "val_loss": float(val[i]),
                "params": jax.tree.map(lambda x, i=i: x[i], final["params"]),
            })
        writer.close()
        c = self.console
        c.print("\n=== sweep summary (ranked by final validation loss) ===")
        c.print(f"steps {start} -> {step} ({stop_reason}) in {fmt_duration(t_end - t_start)}; "
                f"{tps:,.0f} tokens/s over {k} members")
        ranking, best = _print_ranking(c, self.names, self.members, self.book, results,
                                       self.eff["workdir"], writer.path, self.ckpt.directory,
                                       last_saved)
        return {"members": self.members, "swept": self.names, "results": results,
                "ranking": ranking, "best": best, "steps": step, "start_step": start,
                "stop_reason": stop_reason, "tokens_per_s": tps, "wall_s": t_end - t_start,
                "metrics_path": writer.path, "checkpoint_dir": self.ckpt.directory,
                "last_checkpoint": last_saved, "schedule_mode": self.pop.mode}


def _status(book: Mapping[str, np.ndarray], i: int) -> str:
    """Member ``i``'s status from the population's bookkeeping."""
    if book["diverged"][i] >= 0:
        return f"diverged at step {book['diverged'][i]}"
    if book["stopped"][i] >= 0:
        return f"early-stopped at step {book['stopped'][i]}"
    return "ok"


def _table(names: list[str], members: list[dict], book: Mapping[str, np.ndarray],
           rows: list[tuple[int, float, float]], last: str = "lr") -> str:
    w = [max(len(n), 8) for n in names]
    head = "  member " + " ".join(f"{n:>{x}}" for n, x in zip(names, w))
    lines = [head + f" {'loss':>9} {last:>10}"]
    for i, a, b in rows:
        vals = " ".join(f"{_fmt(members[i][n]):>{x}}" for n, x in zip(names, w))
        st = "" if _status(book, i) == "ok" else f"  {_status(book, i)}"
        bs = f"{b:>10.4f}" if last == "val loss" else f"{b:>10.3e}"
        lines.append(f"  {i:>6} {vals} {a:>9.4f} {bs}{st}")
    return "\n".join(lines)


def _print_ranking(c: Console, names: list[str], members: list[dict],
                   book: Mapping[str, np.ndarray], results: list[dict], workdir: str,
                   metrics_path: str, ckpt_dir: str, last_saved: int | None
                   ) -> tuple[list[int], int]:
    """The summary's ranked table (diverged members last, then by final validation loss), the
    best member and where the outputs are; returns (ranking, best)."""
    k = len(results)
    ranking = sorted(range(k), key=lambda i: (results[i]["status"] != "ok"
                                              and "diverged" in results[i]["status"],
                                              _nan_last(results[i]["val_loss"])))
    c.print(_table(names, members, book, [(i, results[i]["final_loss"], results[i]["val_loss"])
                                          for i in ranking], last="val loss"))
    best = ranking[0]
    c.print(f"best: member {best} ({settings_text(members[best])}), val loss "
            f"{results[best]['val_loss']:.4f}")
    c.print(f"members: {os.path.join(workdir, 'members.json')}; metrics: {metrics_path}; "
            f"checkpoints: {ckpt_dir} (last step {last_saved})")
    return ranking, best


def _finished(cfg: TrainConfig, names: list[str], members: list[dict], ckpt_dir: str,
              metrics_dir: str, step: int, workdir: str, console: Console,
              schedule_mode: str) -> dict[str, Any]:
    """A population whose checkpoint is at ``--steps``: the single run's one line (nothing to
    do), then the finished run's summary rebuilt from what it saved: each member's status from
    the checkpoint's bookkeeping (checked against its checksums), its losses and validation
    losses from ``metrics.jsonl`` (a resumed run's replayed steps logged the same values; the
    last row of a step wins). Nothing is trained, compiled or evaluated."""
    k = len(members)
    ckpt = Checkpointer(ckpt_dir, cfg.keep_checkpoints, async_save=False)
    try:
        book = ckpt.restore_part(step, {"book": {
            "best": np.zeros(k, np.float64), "since_best": np.zeros(k, np.int32),
            "stopped": np.zeros(k, np.int32), "diverged": np.zeros(k, np.int32)}})["book"]
    finally:
        ckpt.close()
    console.print(finished_message(step, os.path.join(ckpt_dir, str(step))))
    path = os.path.join(os.path.abspath(metrics_dir), "metrics.jsonl")
    losses: list[dict[int, float]] = [{} for _ in range(k)]
    vals: list[dict[int, float]] = [{} for _ in range(k)]
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a killed run
                i = r.get("member")
                if not isinstance(i, int) or not 0 <= i < k or not isinstance(r.get("step"), int):
                    continue
                for key, into in (("loss", losses), ("val_loss", vals)):
                    if key in r:
                        v = r[key]
                        into[i][r["step"]] = float("nan") if v is None else float(v)
    results = []
    for i in range(k):
        frozen = max(int(book["stopped"][i]), int(book["diverged"][i]))
        hist = sorted((t, v) for t, v in losses[i].items() if t < step)
        evals = sorted((t, v) for t, v in vals[i].items()
                       if t <= step and (frozen < 0 or t <= frozen))
        results.append({"member": i, "settings": members[i], "status": _status(book, i),
                        "losses": hist, "evals": evals,
                        "final_loss": hist[-1][1] if hist else float("nan"),
                        "val_loss": vals[i].get(step, float("nan"))})
    console.print("\n=== sweep summary (saved; ranked by final validation loss) ===")
    ranking, best = _print_ranking(console, names, members, book, results, workdir, path,
                                   ckpt_dir, step)
    out = {"members": members, "swept": names, "results": results, "ranking": ranking,
           "best": best, "steps": step, "start_step": step, "stop_reason": "already finished",
           "metrics_path": path, "checkpoint_dir": ckpt_dir, "last_checkpoint": step,
           "schedule_mode": schedule_mode}
    if os.path.exists(os.path.join(workdir, "sweep.png")):
        out["plot"] = os.path.join(workdir, "sweep.png")
        console.print(f"plot: {out['plot']}")
    return out


def _nan_last(x: float) -> float:
    return x if math.isfinite(x) else math.inf


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
