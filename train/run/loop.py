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
are excluded from tokens/s). Ctrl-C (SIGINT) ends the loop after the current step: the
checkpointer saves it (if finite) and :class:`TrainingInterrupted` is raised, for single runs
and populations alike.
"""

from __future__ import annotations

import shlex
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from ..checkpoint import Checkpointer, CheckpointError, leaf_checksums
from ..config import TrainConfig
from ..data import Prefetcher
from ..metrics import Console, MetricsWriter

#: batches built ahead of the step (the prefetch thread; issue 25)
PREFETCH_DEPTH = 2

__all__ = ["Checkpointing", "Hook", "Loop", "NonFiniteLossError", "TrainingInterrupted",
           "is_finite", "mean_eval", "resume_command"]


class NonFiniteLossError(FloatingPointError):
    """The loss, or the state after an update, became NaN or infinite; training stopped
    without saving that state (every checkpoint on disk is finite)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped training after a step; ``checkpoint`` is where the state was
    saved (None if it was not finite). ``python -m train`` exits with status 130."""

    def __init__(self, msg: str, step: int, checkpoint: str | None) -> None:
        super().__init__(msg)
        self.step = step
        self.checkpoint = checkpoint


def is_finite(tree: Any) -> bool:
    """Every float leaf finite (checked where the arrays live: no gather of sharded ones)."""
    try:
        leaf_checksums(tree, check_finite=True)
    except CheckpointError:
        return False
    return True


def resume_command(cfg: TrainConfig, workdir_arg: str) -> str:
    """The command line that continues the run in ``workdir_arg`` with its saved settings."""
    cmd = ["python", "-m", "train", "--resume", "--workdir", workdir_arg]
    if cfg.checkpoint_dir:
        cmd += ["--checkpoint-dir", cfg.checkpoint_dir]
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
        """Ctrl-C after ``loop.step``; a checkpointer saves and returns where (else None)."""
        return None

    def on_end(self, loop: Loop) -> None:
        """The loop ended (completed or stopped); every metric is flushed."""


class Loop:
    """The step loop over ``engine.train`` (see the module docstring).

    ``state`` is the engine's device state after ``start`` updates; ``batch(t)`` the host batch
    of step ``t``; ``tokens_per_step`` counts the tokens of one update (for tokens/s). After
    :meth:`run`: ``step`` (updates done), ``state``, ``stop_reason`` (None: completed),
    ``wall_s`` and :meth:`tokens_per_s` (steady state)."""

    def __init__(self, engine: Any, state: Any, *, start: int, cfg: TrainConfig,
                 batch: Callable[[int], Any], tokens_per_step: int, console: Console,
                 writer: MetricsWriter, hooks: Sequence[Hook], workdir_arg: str) -> None:
        self.engine, self.state, self.cfg, self.batch = engine, state, cfg, batch
        self.start = self.step = start
        self.steps = cfg.steps
        self.tokens_per_step = tokens_per_step
        self.console, self.writer, self.hooks = console, writer, list(hooks)
        self.workdir_arg = workdir_arg
        self.stop_reason: str | None = None
        self.pending: list[tuple[int, dict]] = []
        self.t_first: float | None = None  # wall time after the first (compiling) step
        self.t_start = self.t_end = time.perf_counter()
        self._window_t, self._window_steps = self.t_start, 0
        self._train_time, self._train_steps = 0.0, 0  # steady-state training only
        console.start_step = start

    def due(self, interval: int) -> bool:
        """``interval`` divides the updates done, or the run is at its last step."""
        return self.step % interval == 0 or self.step == self.steps

    def stop(self, reason: str) -> None:
        """End the loop after this step (the checkpointer saves it first)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def reset_window(self) -> None:
        """After an evaluation or a save: the next window times training steps only."""
        self._window_t, self._window_steps = time.perf_counter(), 0

    def tokens_per_s(self) -> float:
        """Steady-state training throughput of the whole run (NaN: no timed step)."""
        if self._train_time <= 0:
            return float("nan")
        return self.tokens_per_step * self._train_steps / self._train_time

    def flush(self) -> None:
        """Fetch the pending metrics and hand them to the hooks (``on_metrics``)."""
        if not self.pending:
            return
        fetched = jax.device_get([m for _, m in self.pending])
        now = time.perf_counter()
        tps = None
        if self._window_steps > 0:  # timed steady-state steps in this window
            tps = self.tokens_per_step * self._window_steps / max(now - self._window_t, 1e-9)
            self._train_time += now - self._window_t
            self._train_steps += self._window_steps
        self._window_t, self._window_steps = now, 0
        rows = [(t, m) for (t, _), m in zip(self.pending, fetched)]
        self.pending.clear()
        t_last = rows[-1][0]
        log = (t_last + 1) % self.cfg.log_interval == 0 or t_last + 1 == self.steps
        for h in self.hooks:
            h.on_metrics(self, rows, tps, log)

    def run(self) -> Loop:
        """Train from ``start`` to ``steps`` (or a stop); returns ``self``."""
        self.t_start = time.perf_counter()
        # the next batches are built in a thread while the devices run this step (the batch of
        # a step is a pure function of the step: only the timing changes)
        with _SigintFlag() as sigint, Prefetcher(self.batch, start=self.step,
                                                 depth=PREFETCH_DEPTH) as batches:
            while self.step < self.steps:
                for h in self.hooks:
                    h.before_step(self)
                self.state, m = self.engine.train(self.state, batches.get(self.step))
                self.pending.append((self.step, m))
                self.step += 1
                self._window_steps += 1
                if self.t_first is None:
                    jax.block_until_ready(m["loss"])
                    self.t_first = time.perf_counter()
                    self._window_t, self._window_steps = self.t_first, 0
                    self.console.steady(self.step, self.t_first)
                    self.flush()  # first step: compile time excluded from tokens/s, the ETA
                elif self.due(self.cfg.log_interval):
                    self.flush()
                for h in self.hooks:
                    h.after_step(self)
                if self.stop_reason is not None:
                    self.console.print(self.stop_reason)
                    break
                if sigint.hit:
                    self._interrupt()
        self.flush()
        self.t_end = time.perf_counter()
        self.console.close()
        for h in self.hooks:
            h.on_end(self)
        return self

    @property
    def wall_s(self) -> float:
        return self.t_end - self.t_start

    def _interrupt(self) -> None:
        """Ctrl-C: log, let the checkpointer save the state after ``step`` if finite, say how
        to resume, raise :class:`TrainingInterrupted`."""
        self.flush()  # raises NonFiniteLossError (nothing saved) if a loss is not finite
        saved = None
        for h in self.hooks:
            saved = h.on_interrupt(self) or saved
        self.console.close()
        self.writer.close()
        if saved is None:
            ck = next((h for h in self.hooks if isinstance(h, Checkpointing)), None)
            last = ck.ckpt.path(ck.last_saved) if ck and ck.last_saved is not None else "none"
            msg = (f"interrupted after step {self.step}: the state is not finite, nothing "
                   f"saved (last checkpoint: {last})")
        else:
            msg = f"interrupted after step {self.step}; checkpoint saved: {saved}"
        self.console.print(f"{msg}\nresume with: {resume_command(self.cfg, self.workdir_arg)}")
        raise TrainingInterrupted(msg, self.step, saved)


class Checkpointing(Hook):
    """The checkpointer as a hook: saves ``view(state)`` (what a checkpoint holds: the
    engine's ``checkpoint_view``, or a population's state and bookkeeping) with the
    effective config ``eff`` every ``interval`` updates, at the last step, at a stop and on
    Ctrl-C (then only if finite). A step already on disk (a run resumed from an earlier
    checkpoint) is not saved again: it holds the same state. ``require_finite``: refuse to
    save a non-finite tree (``FloatingPointError``) instead of trusting the run's checks."""

    def __init__(self, ckpt: Checkpointer, eff: dict, view: Callable[[Any], Any],
                 interval: int, require_finite: bool = False) -> None:
        self.ckpt, self.eff, self.view, self.interval = ckpt, eff, view, interval
        self.require_finite = require_finite
        self.existing = set(ckpt.all_steps())
        self.last_saved: int | None = max(self.existing) if self.existing else None

    def save(self, step: int, tree: Any) -> None:
        if step in self.existing:
            return
        if self.require_finite and not is_finite(tree):
            raise FloatingPointError("non-finite values in the state to save; not saved")
        self.ckpt.save(step, tree, self.eff)
        self.existing.add(step)
        self.last_saved = step

    def after_step(self, loop: Loop) -> None:
        if loop.due(self.interval) or loop.stop_reason is not None:
            loop.flush()
            self.save(loop.step, self.view(loop.state))
            loop.reset_window()

    def on_interrupt(self, loop: Loop) -> str | None:
        if loop.step not in self.existing:
            tree = self.view(loop.state)
            if not is_finite(tree):
                return None
            self.save(loop.step, tree)
            self.ckpt.wait()
        return self.ckpt.path(loop.step)

    def on_end(self, loop: Loop) -> None:
        self.ckpt.wait()


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


def mean_eval(engine: Any, params: Any, batches: Sequence[Any]) -> Any:
    """The mean of ``engine.eval`` over ``batches`` (per member for a population), float64."""
    losses = jax.device_get([engine.eval(params, b) for b in batches])
    return np.mean([np.asarray(x[0], np.float64) for x in losses], axis=0)
