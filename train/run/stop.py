"""Stopping a run from outside, one mechanism for every cause: Ctrl-C (SIGINT), the
``--save-on-signal`` signals a cluster sends before it stops a job (SIGTERM, SIGUSR1, ...), and
the decisions the wall clock makes (``--exit-after-minutes``, ``--save-every-minutes``).

:class:`StopSignals` is installed once per run (by ``python -m train`` before the run starts,
else by the loop) and has two modes:

* before the loop's first step has completed (setup, data, restore, compile) a signal raises
  :class:`TrainingInterrupted` at once: nothing is half-written (every file the setup writes
  is written atomically) and no checkpoint is saved; except in a run of several processes,
  where it is recorded from the start (``together``): the others would wait in a collective
  for a process that stopped alone;
* from then on (:meth:`StopSignals.defer`) it only records the signal; the loop finishes the
  current step, saves a checkpoint (if finite), flushes the metrics and raises
  :class:`TrainingInterrupted` (``python -m train`` exits with :attr:`~TrainingInterrupted.status`,
  ``128 + the signal's number``: 130 for Ctrl-C, 143 for SIGTERM, 138 for SIGUSR1).

A second Ctrl-C interrupts at once (Python's default); a second signal of the others is
reported and ignored, so the checkpoint being saved is completed (a scheduler's SIGKILL after
its grace period still stops the process: orbax's atomic rename then leaves the previous
checkpoint the last good one).

Processes of a multi-process run decide together (:func:`agree`, the element-wise maximum of a
few integers over the processes), so a signal reaching one process, or one process's clock,
stops or saves all of them at the same step.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["TIME_LIMIT_STATUS", "StopSignals", "TrainingInterrupted", "agree", "exit_status",
           "signal_name", "stop_signals"]

#: the exit status of ``python -m train`` stopped by ``--exit-after-minutes`` (a checkpoint
#: saved, the run not finished): sysexits.h's EX_TEMPFAIL, "a temporary failure; the user is
#: invited to retry", so that a job script can tell "resume me" from "finished" (0)
TIME_LIMIT_STATUS = 75


def exit_status(signum: int) -> int:
    """The exit status of a run stopped by signal ``signum``: ``128 + signum``, as a shell
    reports a process the signal killed (SIGINT 130, SIGTERM 143, SIGUSR1 138 on Linux)."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class TrainingInterrupted(KeyboardInterrupt):
    """A signal (Ctrl-C, or one of ``--save-on-signal``) stopped training. ``step``: the
    updates done (None: before the first step completed), ``checkpoint``: where the state was
    saved (None: not saved, e.g. not finite, or before the first step), ``signum`` the signal,
    ``status`` the exit status ``python -m train`` returns (``128 + signum``)."""

    def __init__(self, msg: str, step: int | None, checkpoint: str | None,
                 signum: int = signal.SIGINT, printed: bool = True) -> None:
        super().__init__(msg)
        self.step = step
        self.checkpoint = checkpoint
        self.signum = int(signum)
        self.status = exit_status(signum)
        self.printed = printed  # the run already printed the message and the resume command


_ACTIVE: list[StopSignals] = []


class StopSignals:
    """The run's signal handlers (see the module docstring); ``received`` is the first
    signal's number (None: none yet). Installed only in the main thread (a no-op elsewhere)."""

    def __init__(self, names: str = "SIGTERM,SIGUSR1", keep_after_signal: bool = False,
                 together: bool = False) -> None:
        self.signals = [signal.SIGINT] + [getattr(signal, n) for n in names.split(",") if n]
        self.received: int | None = None
        #: one of several processes: a signal is only recorded, even before the first step,
        #: and the processes stop together at their first agreement after it (one process
        #: stopping alone would leave the others waiting for it in a collective)
        self.together = together
        #: once a signal arrived, leave the handlers installed after the ``with`` block: a
        #: process about to exit (``python -m train``) reports a second signal instead of
        #: dying of it with status -15 after its checkpoint is complete
        self.keep_after_signal = keep_after_signal
        self.deferred = False
        self._old: dict[int, Any] = {}

    def defer(self) -> None:
        """From now on a signal stops the loop after a step (a checkpoint is saved)."""
        self.deferred = True

    def _handler(self, signum: int, frame: Any) -> None:
        del frame
        if self.received is None:
            self.received = signum
            if not (self.deferred or self.together):
                raise TrainingInterrupted(
                    f"{signal_name(signum)} before the first training step completed (setup "
                    "or compile): stopped, no checkpoint saved; run the same command again",
                    None, None, signum, printed=False)
            return
        if signum == signal.SIGINT:  # a second Ctrl-C: at once
            raise KeyboardInterrupt
        print(f"{signal_name(signum)} again: already stopping after {signal_name(self.received)}"
              "; the checkpoint save completes first (SIGKILL stops at once)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.getsignal(s)
                signal.signal(s, self._handler)
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.remove(self)
        if self.keep_after_signal and self.received is not None:
            self.deferred = True  # a later signal is reported, not raised
            self._old.clear()
            return
        for s, old in self._old.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        self._old.clear()


class _Reuse:
    """The active :class:`StopSignals` as a context manager that leaves it installed."""

    def __init__(self, active: StopSignals) -> None:
        self.active = active

    def __enter__(self) -> StopSignals:
        return self.active

    def __exit__(self, *exc: Any) -> None:
        return None


def stop_signals(names: str, together: bool = False) -> StopSignals | _Reuse:
    """The run's :class:`StopSignals`: the one already installed (by ``python -m train``), or a
    new one for ``names`` (``--save-on-signal``; ``together``: one of several processes),
    installed for the ``with`` block."""
    return _Reuse(_ACTIVE[-1]) if _ACTIVE else StopSignals(names, together=together)


def agree(flags: Sequence[int]) -> np.ndarray:
    """The element-wise maximum over the processes of a few non-negative integers (a signal's
    number, a clock's decision), so that every process takes the same decision at the same
    step; with one process, ``flags`` themselves. Every process must call it at the same
    step (a collective)."""
    a = np.asarray(flags, np.int32)
    if jax.process_count() == 1:
        return a
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(a)).reshape(-1, a.size).max(axis=0)
