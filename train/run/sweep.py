"""Population training: K members of a hyperparameter sweep in one compiled program.

``python -m train --sweep lr=1e-3,3e-3 --sweep warmup_steps=0,50`` (the grid is the product of
the ``--sweep`` entries; ``--sweep-seeds=K`` adds the seeds ``seed .. seed+K-1`` as one more
axis) or :func:`sweep` from Python. Every member is exactly the single run with its settings:
the step is :func:`train.engine.step.update` (the single run's step body) under ``jax.vmap`` over
the members' parameters, optimizer states and hyperparameters, inside the usual ``jax.pmap`` over
devices, so K small matrix products become one batched one. On CPUs the members run one after
the other in the same program instead (``lax.map``; ``train.engine.population.MEMBER_LOOP``):
there the batched program's K-fold working set cost more than the batching saved.

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

With ``--branch-from=RUN_DIR[:STEP]`` (issue 27) every member starts from the parent's
checkpoint (:func:`branch_state`: its state read once into a single run's structure and given
to each member) and only the branch's schedule flags may be swept: several branches of one
parent as one population, each equal to its single branch.

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

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from ..checkpoint import Checkpointer, CheckpointError
from ..config import TrainConfig
from ..engine.pmap import replicate
from ..engine.population import Population, population_engine, population_state
from ..engine.step import init_state, loss_scale_rule
from ..metrics import MetricsWriter, fmt_duration, settings_text
from ..optim import make_optimizer
from ..plot import plot_sweep
from ..schedule.hparams import HPARAMS, build_hparams
from .grid import SWEEPABLE, member_configs, parse_sweep
from .loop import Checkpointing, Hook, Loop, mean_eval
from .ranking import finished_summary, member_status, member_table, new_book, print_ranking
from .setup import RunSetup, prepare_run, run_schedule, write_json

__all__ = ["SWEEPABLE", "PopulationRun", "member_configs", "parse_sweep", "run_sweep", "sweep"]


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
    ``status`` (``ok``, ``diverged at step t``, ``early-stopped at step t``) and ``params``.
    Ctrl-C saves the population after the current step and raises
    :class:`~train.run.loop.TrainingInterrupted`, as a single run."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg = cfg.normalized().validate()
    grid: dict[str, Any] = {}

    def validate(cfg: TrainConfig) -> tuple[Any, dict[str, Any]]:
        names, members, cfgs = member_configs(cfg)
        schedules = [run_schedule(c) for c in cfgs]
        grid.update(names=names, members=members, cfgs=cfgs,
                    pop=Population(cfgs, members, schedules))
        # the saved config: the base run's keys, the members and each member's schedule, so
        # that train.resume's guard compares every member's trajectory (one message)
        return schedules[0], {"members": members, "swept": names,
                              "member_schedules": [repr(x) for x in schedules]}

    setup = prepare_run(cfg, workdir, "sweep", validate=validate, outputs=("members.json",))
    names, members, cfgs, pop = grid["names"], grid["members"], grid["cfgs"], grid["pop"]
    if setup.finished:  # as a single run: nothing to do; the saved summary
        return finished_summary(setup, names, members, pop.mode)
    per_member_data = "seed" in names
    seeds = [c.seed for c in cfgs] if per_member_data else [cfg.seed]
    _, _, batchers, val_batchers = setup.load_data(seeds)
    console, k = setup.console, len(members)
    console.print(f"sweep: {k} members over {', '.join(names)} in one program "
                  f"(schedules: {pop.mode}; data: "
                  f"{'one stream per seed' if per_member_data else 'one shared stream'})")
    console.print(f"data: {setup.data_desc}; devices: {setup.n_global} "
                  f"({setup.process_count} process(es) x {setup.n_local}); "
                  f"{setup.tokens_per_step:,} tokens per step per member")
    if setup.primary:
        write_json(os.path.join(setup.workdir, "members.json"), members)

    # the top-level "step" is the checkpoint's label (train.checkpoint checks it)
    host = {"step": np.zeros((), np.int32), "state": population_state(setup.model_cfg, pop),
            "book": new_book(k)}
    eng = population_engine(setup.model_cfg, pop, per_member_data, setup.devices,
                            setup.documents)
    ckpt = Checkpointer(setup.ckpt_dir, cfg.keep_checkpoints, cfg.async_checkpoints,
                        set_aside=True)
    try:
        if setup.resume_step is not None:
            host = ckpt.restore(setup.resume_step, host, setup.eff)
            setup.resumed_line(int(host["state"]["step"]), ckpt.path(setup.resume_step))
        elif setup.branch is not None:  # every member from the parent's checkpoint
            host = {**host, "step": np.asarray(setup.branch[1], np.int32),
                    "state": branch_state(setup, cfgs[0], host["state"])}
        else:
            setup.fresh_line()
        summary = _run(setup, names, members, pop, eng, host, batchers, val_batchers, ckpt)
    finally:
        ckpt.close()
    if setup.primary:
        summary["plot"] = plot_sweep(summary, os.path.join(setup.workdir, "sweep.png"))
        console.print(f"plot: {summary['plot']}")
    return summary


def branch_state(setup: RunSetup, cfg: TrainConfig, pop_state: dict) -> dict:
    """``--branch-from`` with ``--sweep``: the parent's state at the branch step (a single
    run's: parameters, optimizer state, step, float16 loss scaler) read once, read only, into
    its single run's structure (``cfg``: a member's config), then given to every member of
    ``pop_state`` (the population's initial host state). The members' optimizer states hold the
    single run's leaves in the same order (the population chains its clipping outside
    ``make_optimizer``: an empty state, no leaf)."""
    parent_dir, bstep = setup.branch  # type: ignore[misc]
    params = jax.tree.map(lambda x: x[0], pop_state["params"])
    tx = make_optimizer(cfg, run_schedule(cfg), params, build_hparams(cfg))
    target = init_state(params, tx, loss_scale_rule(cfg))
    parent = Checkpointer(parent_dir, 1, False, read_only=True)
    try:
        got = parent.restore(bstep, target, setup.eff)
    finally:
        parent.close()
    setup.console.print(f"branched from {parent.path(bstep)} (step {bstep}): its state in "
                        f"each of the {len(pop_state['active'])} members")
    k = len(pop_state["active"])
    out = dict(pop_state, step=np.asarray(got["step"], np.int32))
    for key in ("params", "opt_state", "loss_scale"):
        if key not in pop_state:
            continue
        leaves, treedef = jax.tree.flatten(pop_state[key])
        new = jax.tree.leaves(got[key])
        if len(new) != len(leaves) or any(
                (np.shape(a)[1:], np.asarray(a).dtype) != (np.shape(b), np.asarray(b).dtype)
                for a, b in zip(leaves, new)):
            raise CheckpointError(f"cannot branch from {parent.path(bstep)}: its {key} does "
                                  "not match a population member's (leaves, shapes or dtypes)")
        out[key] = jax.tree.unflatten(treedef, [np.stack([np.asarray(b)] * k) for b in new])
    return out


def _batch_of(batchers: list, per_member: bool, fn: str, i: int) -> np.ndarray:
    """The population's batch: the shared stream's, or one per member (axis 1) per seed."""
    if not per_member:
        return getattr(batchers[0], fn)(i)
    return np.stack([getattr(b, fn)(i) for b in batchers], axis=1)


class PopulationRun(Hook):
    """A population's hook on the loop: the members' metrics rows (a diverged member is
    reported and frozen), the log table, evaluation per member, early stopping member by
    member (frozen) and the stop once no member is active. ``book`` is the bookkeeping the
    checkpoint saves with the state (:func:`train.run.ranking.new_book`)."""

    def __init__(self, setup: RunSetup, names: list[str], members: list[dict], eng: Any,
                 book: dict, eval_batches: list) -> None:
        self.cfg, self.console, self.devices = setup.cfg, setup.console, setup.devices
        self.names, self.members, self.eng, self.k = names, members, eng, len(members)
        self.book = {n: np.array(v) for n, v in book.items()}
        self.eval_batches = eval_batches
        self.history: list[list[tuple[int, float]]] = [[] for _ in range(self.k)]
        self.evals: list[list[tuple[int, float]]] = [[] for _ in range(self.k)]
        self._was_active: dict[int, np.ndarray] = {}

    def active(self) -> np.ndarray:
        return (self.book["diverged"] < 0) & (self.book["stopped"] < 0)

    def checkpoint_view(self, state: Any) -> dict:
        """What a population checkpoint holds: the state and the bookkeeping; the top-level
        ``step`` is the checkpoint's label. Frozen members keep their last finite state."""
        host = self.eng.checkpoint_view(state)
        return {"step": host["step"], "state": host, "book": dict(self.book)}

    def before_step(self, loop: Loop) -> None:
        self._was_active[loop.step] = self.active()

    def on_metrics(self, loop: Loop, rows: list[tuple[int, dict]], tokens_per_s: float | None,
                   log: bool) -> None:
        tps = self.k * (tokens_per_s or 0.0)
        for t, m in rows:
            for i in np.flatnonzero(self._was_active.pop(t)):
                loss = float(m["loss"][0][i])
                extra = {}
                if "skipped" in m:  # float16: the member's dynamic loss scaling
                    extra = {"loss_scale": float(m["loss_scale"][0][i]),
                             "skipped": int(m["skipped"][0][i])}
                extra.update({k: float(m[k][0][i]) for k in HPARAMS if k in m})  # issue 27
                loop.writer.write(t, member=int(i), loss=loss, lr=float(m["lr"][0][i]),
                                  grad_norm=float(m["grad_norm"][0][i]), **extra,
                                  tokens_per_s=tps, time=time.time())
                self.history[i].append((t, loss))
                if not bool(m["ok"][0][i]) and self.book["diverged"][i] < 0:
                    self.book["diverged"][i] = t
                    self.console.print(f"member {i} ({settings_text(self.members[i])}) "
                                       f"diverged at step {t} (loss {loss}); frozen, the "
                                       "others go on")
        if log:
            t_last, m = rows[-1]
            self.console.print(f"step {t_last:>6}/{self.cfg.steps} | {tps:,.0f} tok/s "
                               f"(all {self.k} members)")
            self.console.print(member_table(self.names, self.members, self.book, [
                (i, float(m["loss"][0][i]), float(m["lr"][0][i])) for i in range(self.k)]))

    def evaluate(self, state: Any) -> np.ndarray:
        return mean_eval(self.eng, state["params"], self.eval_batches)

    def after_step(self, loop: Loop) -> None:
        if loop.due(self.cfg.eval_interval):
            self._evaluate(loop)
        if not self.active().any():
            loop.stop("every member stopped (diverged or early-stopped)")

    def _evaluate(self, loop: Loop) -> None:
        loop.flush()
        v, step, patience = self.evaluate(loop.state), loop.step, self.cfg.early_stop_patience
        stopped_now = []
        for i in np.flatnonzero(self.active()):
            self.evals[i].append((step, float(v[i])))
            loop.writer.write(step, member=int(i), val_loss=float(v[i]))
            if v[i] < self.book["best"][i]:
                self.book["best"][i], self.book["since_best"][i] = v[i], 0
            else:
                self.book["since_best"][i] += 1
            if patience and self.book["since_best"][i] >= patience:
                self.book["stopped"][i] = step
                stopped_now.append(int(i))
        shown = np.flatnonzero(self.active() | np.isin(np.arange(self.k), stopped_now))
        self.console.print(f"eval at step {step}: val loss "
                           + " ".join(f"{i}:{v[i]:.4f}" for i in shown))
        if stopped_now:
            self.console.print(f"early stop: member(s) {stopped_now} frozen (no val-loss "
                               f"improvement in {patience} evaluation(s))")
            loop.state = {**loop.state, "active": replicate(self.active(), self.devices)}
        loop.reset_window()


def _run(setup: RunSetup, names: list[str], members: list[dict], pop: Population, eng: Any,
         host: dict, batchers: list, val_batchers: list, ckpt: Checkpointer) -> dict[str, Any]:
    cfg, k = setup.cfg, len(members)
    per_member = "seed" in names  # one data stream per member
    start = int(host["state"]["step"])
    writer = MetricsWriter(setup.metrics_dir, tensorboard=False, enabled=setup.primary)
    run = PopulationRun(setup, names, members, eng, host["book"],
                        [_batch_of(val_batchers, per_member, "eval_batch", i)
                         for i in range(cfg.eval_batches)])
    ck = Checkpointing(ckpt, setup.eff, run.checkpoint_view, cfg.checkpoint_interval,
                       require_finite=True)
    loop = Loop(eng, eng.put_state(host["state"]), start=start, cfg=cfg,
                batch=lambda t: _batch_of(batchers, per_member, "batch", t),
                tokens_per_step=setup.tokens_per_step, console=setup.console, writer=writer,
                hooks=[run, ck], workdir_arg=setup.workdir_arg,
                started=setup.started).run()
    step, stop_reason = loop.step, loop.stop_reason or "completed"
    final = eng.get_state(loop.state)
    val = np.full(k, np.nan)
    for i in range(k):
        if run.evals[i] and run.evals[i][-1][0] == step:
            val[i] = run.evals[i][-1][1]
    if np.isnan(val).any() and step > start:
        # members frozen before the end: their final (frozen) parameters' val loss, also
        # logged, so that the saved metrics hold every member's final validation loss
        v = run.evaluate(loop.state)
        for i in np.flatnonzero(np.isnan(val)):
            writer.write(step, member=int(i), val_loss=float(v[i]))
        val = np.where(np.isnan(val), v, val)
    tps = k * loop.tokens_per_s()
    tps = tps if np.isfinite(tps) else 0.0
    results = []
    for i in range(k):
        hist = run.history[i]
        results.append({
            "member": i, "settings": members[i], "status": member_status(run.book, i),
            "losses": hist, "evals": run.evals[i],
            "final_loss": hist[-1][1] if hist else float("nan"), "val_loss": float(val[i]),
            "params": jax.tree.map(lambda x, i=i: x[i], final["params"]),
        })
    writer.close()
    c = setup.console
    c.print("\n=== sweep summary (ranked by final validation loss) ===")
    c.print(f"steps {start} -> {step} ({stop_reason}) in {fmt_duration(loop.wall_s)}; "
            f"{tps:,.0f} tokens/s over {k} members")
    ranking, best = print_ranking(c, names, members, run.book, results, setup.workdir,
                                  writer.path, ckpt.directory, ck.last_saved)
    return {"members": members, "swept": names, "results": results, "ranking": ranking,
            "best": best, "steps": step, "start_step": start, "stop_reason": stop_reason,
            "resumable": loop.resumable, "tokens_per_s": tps,
            "tokens_per_cpu_s": k * loop.tokens_per_cpu_s(), "wall_s": loop.wall_s,
            "metrics_path": writer.path,
            "checkpoint_dir": ckpt.directory, "last_checkpoint": ck.last_saved,
            "schedule_mode": pop.mode}

