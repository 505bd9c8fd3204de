"""The step loop, one for single runs and populations: :class:`Loop` drives an engine
(:class:`train.engine.base.Engine`: ``train(state, batch)``) over the steps; what a run does
around its steps is a list of :class:`Hook` s: the run's own logging, evaluation and early
stopping (``train.run.train`` for a single run, ``train.run.sweep`` for a population) and the
checkpointer (:class:`Checkpointing`, a hook as in Levanter).

Step convention: optimizer step ``t`` (0-based) consumes ``batch(t)`` and uses the learning rate
``schedule(count)``, optax's count before the update (``count == t`` unless float16 loss scaling
skipped updates); the metrics record ``{"step": t, "loss", "lr", ...}`` where ``lr`` is the rate
the update applied, as the step itself reports it (``train.engine.step``). A checkpoint labelled
``n`` holds the state after ``n`` updates, so a resumed run continues with step ``n`` —
bit-identical to an uninterrupted run.

The loop keeps the metrics of the steps since the last flush on the devices and fetches them
together (:meth:`Loop.flush`: at every ``--log-interval``, before an evaluation or a save, at the
end), and times steady-state training only (the first, compiling step, evaluations and saves
are excluded from tokens/s, as is a step of a new batch shape under a batch-size ramp, which
compiles). Ctrl-C (SIGINT) and the ``--save-on-signal`` signals end the loop
after the current step: the checkpointer saves it (if finite) and :class:`TrainingInterrupted`
is raised, for single runs and populations alike (:mod:`train.run.stop`: one mechanism; a
signal before the first step completed stops at once, without a checkpoint).

The wall clock: ``--exit-after-minutes`` stops the loop like an early stop (the checkpointer
saves; the resume command is printed), ``--save-every-minutes`` has the checkpointer write a
temporary checkpoint (:class:`train.checkpoint.Checkpointer`). Signals and clocks are read
after each step (multi-process runs: at each ``--log-interval`` step, the processes agreeing
through :func:`train.run.stop.agree`). Every save's stall of the loop is measured: the time the
loop waits for the save, plus how much longer the step after it takes than the median step
(the ``save_stall_s`` rows of metrics.jsonl, and the summary).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from ..checkpoint import Checkpointer, CheckpointError, leaf_checksums
from ..config import TrainConfig
from ..data import Prefetcher
from ..metrics import Console, MetricsWriter
from .stop import TrainingInterrupted, agree, exit_status, signal_name, stop_signals

#: batches built ahead of the step (the prefetch thread; issue 25)
PREFETCH_DEPTH = 2

__all__ = ["Checkpointing", "Hook", "Loop", "NonFiniteLossError", "TrainingInterrupted",
           "is_finite", "mean_eval", "resume_command", "stall_text"]


class NonFiniteLossError(FloatingPointError):
    """The loss, or the state after an update, became NaN or infinite; training stopped
    without saving that state (every checkpoint on disk is finite)."""


def is_finite(tree: Any) -> bool:
    """Every float leaf finite (checked where the arrays live: no gather of sharded ones)."""
    try:
        leaf_checksums(tree, check_finite=True)
    except CheckpointError:
        return False
    return True


def resume_command(cfg: TrainConfig, workdir_arg: str) -> str:
    """The command line that continues the run in ``workdir_arg`` with its saved settings
    (and this run's ``--exit-after-minutes``, which is not saved: a limit of one job)."""
    cmd = ["python", "-m", "train", "--resume", "--workdir", workdir_arg]
    if cfg.checkpoint_dir:
        cmd += ["--checkpoint-dir", cfg.checkpoint_dir]
    if cfg.exit_after_minutes is not None:
        cmd.append(f"--exit-after-minutes={cfg.exit_after_minutes:g}")
    return " ".join(shlex.quote(c) for c in cmd)


class Hook:
    """One concern of a run around its steps; every method is a no-op unless overridden.
    Hooks run in the order given to :class:`Loop` (evaluation before the checkpointer, so a
    save sees an early stop decided at the same step)."""

    def before_step(self, loop: Loop) -> None:
        """Before ``loop.step`` runs."""

    def on_metrics(self, loop: Loop, rows: list[tuple[int, dict]], tokens_per_s: float | None,
                   log: bool) -> None:
        """The fetched metrics ``(step, metrics)`` of the steps since the last flush;
        ``tokens_per_s`` of their steady-state window (None: no timed step), ``log``: a log
        line is due."""

    def after_step(self, loop: Loop) -> None:
        """After a step (``loop.step`` updates done): evaluate, stop, save... when due."""

    def on_interrupt(self, loop: Loop) -> str | None:
        """A signal after ``loop.step``; a checkpointer saves and returns where (else None)."""
        return None

    def on_end(self, loop: Loop) -> None:
        """The loop ended (completed or stopped); every metric is flushed."""


class Loop:
    """The step loop over ``engine.train`` (see the module docstring).

    ``state`` is the engine's device state after ``start`` updates; ``batch(t)`` the host batch
    of step ``t``; ``tokens_per_step`` counts the tokens of one update (for tokens/s; a function
of the step under a batch-size ramp). After
    :meth:`run`: ``step`` (updates done), ``state``, ``stop_reason`` (None: completed),
    ``wall_s`` and :meth:`tokens_per_s` (steady state)."""

    def __init__(self, engine: Any, state: Any, *, start: int, cfg: TrainConfig,
                 batch: Callable[[int], Any], tokens_per_step: int | Callable[[int], int],
                 console: Console,
                 writer: MetricsWriter, hooks: Sequence[Hook], workdir_arg: str,
                 started: float | None = None) -> None:
        self.engine, self.state, self.cfg, self.batch = engine, state, cfg, batch
        self.start = self.step = start
        self.steps = cfg.steps
        self.tokens_of: Callable[[int], int] = (
            tokens_per_step if callable(tokens_per_step) else lambda t: tokens_per_step)
        self.console, self.writer, self.hooks = console, writer, list(hooks)
        self.workdir_arg = workdir_arg
        self.stop_reason: str | None = None
        self.pending: list[tuple[int, dict]] = []
        self.t_first: float | None = None  # wall time after the first (compiling) step
        self.t_start = self.t_end = time.perf_counter()
        self._window_t, self._window_steps, self._window_tokens = self.t_start, 0, 0
        self._window_cpu = time.process_time()
        self._train_time, self._train_tokens = 0.0, 0  # steady-state training only
        self._train_cpu = 0.0  # the process's CPU seconds in the same windows
        console.start_step = start
        #: ``time.monotonic()`` when the run began (its setup): ``--exit-after-minutes``
        self.started = time.monotonic() if started is None else started
        self.last_save_t = time.monotonic()  # any save: ``--save-every-minutes`` counts from it
        self.temporary_due = False  # the clock asks for a temporary checkpoint after this step
        self.signum: int | None = None  # the signal the processes agreed to stop on
        self.resumable = False  # a stop that leaves a run to continue (the time limit)
        self._step_s: list[float] = []  # per-step time of each timed window
        self._after_save: dict | None = None  # the save whose next step is to be timed
        self.stalls: list[dict] = []  # every measured save
        self._shapes: set[tuple] = set()  # the batch shapes stepped (compiled) so far

    def due(self, interval: int) -> bool:
        """``interval`` divides the updates done, or the run is at its last step."""
        return self.step % interval == 0 or self.step == self.steps

    def stop(self, reason: str, resumable: bool = False) -> None:
        """End the loop after this step (the checkpointer saves it first); ``resumable``: the
        run is not over (the resume command is printed)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.resumable = resumable

    def median_step_s(self) -> float | None:
        """The median per-step time of the timed windows so far (None: none yet)."""
        return float(np.median(self._step_s)) if self._step_s else None

    def saved(self, step: int, kind: str, wait_s: float) -> None:
        """A checkpointer saved the state after ``step`` (``kind``: permanent or temporary),
        the loop waiting ``wait_s`` seconds for it; the next step is timed to measure the
        rest of the stall (:meth:`_stall`)."""
        self.last_save_t = time.monotonic()
        self._after_save = {"step": step, "kind": kind, "wait_s": wait_s}

    def reset_window(self) -> None:
        """After an evaluation or a save: the next window times training steps only."""
        self._window_t, self._window_steps, self._window_tokens = time.perf_counter(), 0, 0
        self._window_cpu = time.process_time()

    def tokens_per_s(self) -> float:
        """Steady-state training throughput of the whole run (NaN: no timed step)."""
        if self._train_time <= 0:
            return float("nan")
        return self._train_tokens / self._train_time

    def tokens_per_cpu_s(self) -> float:
        """The same tokens per CPU second of this process (every thread, XLA's included):
        on a machine shared with other work, less sensitive to the load than wall time."""
        if self._train_cpu <= 0:
            return float("nan")
        return self._train_tokens / self._train_cpu

    def flush(self) -> None:
        """Fetch the pending metrics and hand them to the hooks (``on_metrics``)."""
        if not self.pending:
            return
        fetched = jax.device_get([m for _, m in self.pending])
        now, cpu = time.perf_counter(), time.process_time()
        tps = None
        if self._window_steps > 0:  # timed steady-state steps in this window
            tps = self._window_tokens / max(now - self._window_t, 1e-9)
            self._step_s.append((now - self._window_t) / self._window_steps)
            self._train_time += now - self._window_t
            self._train_tokens += self._window_tokens
            self._train_cpu += cpu - self._window_cpu
        self._window_t, self._window_steps, self._window_tokens = now, 0, 0
        self._window_cpu = cpu
        rows = [(t, m) for (t, _), m in zip(self.pending, fetched)]
        self.pending.clear()
        t_last = rows[-1][0]
        log = (t_last + 1) % self.cfg.log_interval == 0 or t_last + 1 == self.steps
        for h in self.hooks:
            h.on_metrics(self, rows, tps, log)

    def run(self) -> Loop:
        """Train from ``start`` to ``steps`` (or a stop); returns ``self``."""
        self.t_start = time.perf_counter()
        # the next batches are built and placed on the devices in a thread while the devices
        # run this step (the batch of a step is a pure function of the step: only the timing
        # changes)
        place = getattr(self.engine, "place_batch", None)
        with stop_signals(self.cfg.save_on_signal, jax.process_count() > 1) as sig, Prefetcher(
                self.batch, start=self.step, depth=PREFETCH_DEPTH, place=place) as batches:
            while self.step < self.steps:
                for h in self.hooks:
                    h.before_step(self)
                batch = batches.get(self.step)
                # a batch-size ramp's new step shape compiles: not steady-state training
                shape = getattr(batch, "shape", None)
                compiles = (self.t_first is not None and shape is not None
                            and shape not in self._shapes)
                self._shapes.add(shape)
                if compiles:
                    self.flush()
                t0 = time.perf_counter()
                self.state, m = self.engine.train(self.state, batch)
                self.pending.append((self.step, m))
                self._window_tokens += self.tokens_of(self.step)
                self.step += 1
                self._window_steps += 1
                if self._after_save is not None:  # (a compiling step would time its compile)
                    self._stall(None if compiles else m, t0)
                if self.t_first is None:
                    jax.block_until_ready(m["loss"])
                    sig.defer()  # from here, a signal stops after a step, with a checkpoint
                    self.t_first = time.perf_counter()
                    self._window_t, self._window_steps, self._window_tokens = self.t_first, 0, 0
                    self._window_cpu = time.process_time()
                    self.console.steady(self.step, self.t_first)
                    self.flush()  # first step: compile time excluded from tokens/s, the ETA
                elif compiles:
                    jax.block_until_ready(m["loss"])
                    self.reset_window()  # its time is not in tokens/s
                    if self.due(self.cfg.log_interval):
                        self.flush()
                elif self.due(self.cfg.log_interval):
                    self.flush()
                self._outside(sig.received)
                for h in self.hooks:
                    h.after_step(self)
                self.temporary_due = False
                if self.stop_reason is not None:
                    self.console.print(self.stop_reason)
                    if self.resumable:
                        self.console.print("resume with: "
                                           + resume_command(self.cfg, self.workdir_arg))
                    break
                if self.signum is None and sig.received and jax.process_count() == 1:
                    self.signum = sig.received  # arrived during the hooks (evaluation, a save)
                if self.signum is not None and self.step < self.steps:
                    self._interrupt(self.signum)
        self.flush()
        if self._after_save is not None:  # a save after the last step: no next step to time
            self._stall(None, 0.0)
        self.t_end = time.perf_counter()
        self.console.close()
        for h in self.hooks:
            h.on_end(self)
        return self

    def _outside(self, received: int | None) -> None:
        """After a step: the signal received and the clocks' decisions, agreed by every
        process (each step with one process; at each --log-interval step with several, where
        the processes meet anyway)."""
        cfg = self.cfg
        if jax.process_count() > 1 and not self.due(cfg.log_interval):
            return
        now = time.monotonic()
        exit_due = (cfg.exit_after_minutes is not None
                    and now - self.started >= 60 * cfg.exit_after_minutes)
        save_due = (cfg.save_every_minutes is not None
                    and now - self.last_save_t >= 60 * cfg.save_every_minutes)
        signum, save_due, exit_due = (int(x) for x in agree([received or 0, save_due,
                                                              exit_due]))
        if signum:
            self.signum = signum
        elif exit_due and self.step < self.steps:
            self.stop(f"time limit: --exit-after-minutes={cfg.exit_after_minutes:g} reached "
                      f"after step {self.step} ({(now - self.started) / 60:.2f} min)",
                      resumable=True)
        elif save_due:
            self.temporary_due = True

    def _stall(self, m: Any, t0: float) -> None:
        """Time the step after a save (``m``: its metrics, dispatched at ``t0``; None: there is
        none) and record the save's stall: the wait plus what that step took beyond the
        median step, in seconds and in steps."""
        rec, self._after_save = self._after_save, None
        assert rec is not None
        median = self.median_step_s()
        nxt = None
        if m is not None:
            jax.block_until_ready(m["loss"])
            nxt = time.perf_counter() - t0
        extra = max(0.0, nxt - median) if nxt is not None and median is not None else 0.0
        rec.update(next_step_s=nxt, median_step_s=median, stall_s=rec["wait_s"] + extra,
                   stall_steps=(rec["wait_s"] + extra) / median if median else None)
        self.stalls.append(rec)
        self.writer.write(rec["step"], save_kind=rec["kind"], save_stall_s=rec["stall_s"],
                          save_wait_s=rec["wait_s"], next_step_s=nxt, median_step_s=median)
        if rec["kind"] == "temporary":
            self.console.print(f"temporary checkpoint at step {rec['step']} (every "
                               f"{self.cfg.save_every_minutes:g} min): {stall_text(rec)}")

    @property
    def wall_s(self) -> float:
        return self.t_end - self.t_start

    def _interrupt(self, signum: int) -> None:
        """A signal: log, let the checkpointer save the state after ``step`` if finite, say
        how to resume, raise :class:`TrainingInterrupted`."""
        self.flush()  # raises NonFiniteLossError (nothing saved) if a loss is not finite
        name = signal_name(signum)
        ck = next((h for h in self.hooks if isinstance(h, Checkpointing)), None)
        self.console.print(f"{name} after step {self.step}: saving a checkpoint, then exiting "
                           f"(status {exit_status(signum)})")
        if ck is not None and ck.ckpt.saving():
            self.console.print(f"{name}: waiting for the checkpoint save in flight to complete")
        saved = None
        for h in self.hooks:
            saved = h.on_interrupt(self) or saved
        self.console.close()
        self.writer.close()
        if saved is None:
            last = ck.ckpt.path(ck.last_saved) if ck and ck.last_saved is not None else "none"
            msg = (f"interrupted after step {self.step} by {name}: the state is not finite, "
                   f"nothing saved (last checkpoint: {last})")
        else:
            msg = f"interrupted after step {self.step} by {name}; checkpoint saved: {saved}"
        self.console.print(f"{msg}\nresume with: {resume_command(self.cfg, self.workdir_arg)}")
        raise TrainingInterrupted(msg, self.step, saved, signum)


def stall_text(rec: dict) -> str:
    """How long a save stalled the loop, in one phrase."""
    steps = rec.get("stall_steps")
    per = (f" = {steps:.2f} step(s) of {rec['median_step_s']:.3g} s" if steps is not None
           else "")
    return f"the loop stalled {rec['stall_s']:.3g} s{per}"


class Checkpointing(Hook):
    """The checkpointer as a hook: saves ``view(state)`` (what a checkpoint holds: the
    engine's ``checkpoint_view``, or a population's state and bookkeeping) with the
    effective config ``eff`` every ``interval`` updates, at the last step, at a stop and on a
    signal (then only if finite), and a temporary checkpoint when the loop's clock asks for
    one (``--save-every-minutes``; a temporary save refused for want of space is reported in
    one line and training goes on; one whose write failed stops the run with its
    :class:`CheckpointError`, the last committed checkpoint the last good one). A step already
    on disk (a run resumed from an earlier
    checkpoint) is not saved again: it holds the same state. ``require_finite``: refuse to
    save a non-finite tree (``FloatingPointError``) instead of trusting the run's checks.
    Each save tells the loop how long it waited (:meth:`Loop.saved`)."""

    def __init__(self, ckpt: Checkpointer, eff: dict, view: Callable[[Any], Any],
                 interval: int, require_finite: bool = False) -> None:
        self.ckpt, self.eff, self.view, self.interval = ckpt, eff, view, interval
        self.require_finite = require_finite
        self.existing = set(ckpt.permanent_steps())
        self.last_saved: int | None = ckpt.latest_step()
        self.last_temporary: int | None = None

    def save(self, step: int, tree: Any, temporary: bool = False) -> None:
        if step in self.existing or (temporary and step == self.last_temporary):
            return
        if self.require_finite and not is_finite(tree):
            raise FloatingPointError("non-finite values in the state to save; not saved")
        self.ckpt.save(step, tree, self.eff, temporary=temporary)
        if temporary:
            self.last_temporary = step
        else:
            self.existing.add(step)
        self.last_saved = step

    def _timed_save(self, loop: Loop, temporary: bool) -> None:
        jax.block_until_ready(loop.state)  # the steps in flight: not the save's time
        t0 = time.perf_counter()
        self.save(loop.step, self.view(loop.state), temporary)
        loop.saved(loop.step, "temporary" if temporary else "permanent",
                   time.perf_counter() - t0)

    def after_step(self, loop: Loop) -> None:
        permanent = loop.due(self.interval) or loop.stop_reason is not None
        if not (permanent or loop.temporary_due):
            return
        loop.flush()
        if permanent:
            self._timed_save(loop, temporary=False)
        else:
            try:
                self._timed_save(loop, temporary=True)
            except CheckpointError as e:
                if self.ckpt.failed:  # a write failed: no later save can succeed, stop now
                    raise
                # refused before writing (no space): go on, retry after another interval
                loop.last_save_t = time.monotonic()
                last = self.ckpt.path(self.last_saved) if self.last_saved is not None else "none"
                loop.console.print(f"warning: temporary checkpoint not saved, training goes on "
                                   f"(last checkpoint: {last}): {e}")
        loop.reset_window()

    def on_interrupt(self, loop: Loop) -> str | None:
        if loop.step not in self.existing and loop.step != self.last_temporary:
            if not is_finite(self.view(loop.state)):
                return None
            self._timed_save(loop, temporary=False)
        self.ckpt.wait()
        return self.ckpt.path(loop.step)

    def on_end(self, loop: Loop) -> None:
        self.ckpt.wait()


def mean_eval(engine: Any, params: Any, batches: Sequence[Any]) -> Any:
    """The mean of ``engine.eval`` over ``batches`` (per member for a population), float64."""
    losses = jax.device_get([engine.eval(params, b) for b in batches])
    return np.mean([np.asarray(x[0], np.float64) for x in losses], axis=0)
