"""Experiment trackers beside ``metrics.jsonl``: Weights & Biases (``--tracker=wandb``).

A tracker receives the run's full config (with the schedule spec), every logged metric per
step, the evaluation losses, the lr curve the run will apply (a table) and the final summary.
A resumed run continues the same tracker run: its id is kept in ``WORKDIR/wandb_run_id``
(written atomically). A tracker that fails never stops training: the first failure is printed
as one warning and the tracker is switched off for the rest of the run.

Only process 0 tracks. ``--wandb-mode=offline`` writes the run under ``WORKDIR/wandb/`` with no
network (``wandb sync`` uploads it later); ``disabled`` makes every call a no-op.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .config import TRACKERS, WANDB_MODES

__all__ = ["TRACKERS", "WANDB_MODES", "WandbTracker", "read_run_id", "wandb_missing",
           "write_run_id"]

_ID_FILE = "wandb_run_id"


def read_run_id(workdir: str) -> str | None:
    """The W&B run id a previous run of ``workdir`` saved (None: none yet)."""
    try:
        with open(os.path.join(workdir, _ID_FILE)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def write_run_id(workdir: str, run_id: str) -> None:
    """Save the run id (temporary file, then rename: never half-written)."""
    path = os.path.join(workdir, _ID_FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(run_id + "\n")
    os.replace(tmp, path)


_MISSING = "--tracker=wandb needs the wandb package: pip install 'schedax[wandb]'"


def wandb_missing() -> str | None:
    """The one line for a missing ``wandb`` package (None: it is installed); nothing imported."""
    import importlib.util

    try:
        found = importlib.util.find_spec("wandb") is not None
    except (ImportError, ValueError):  # a None entry in sys.modules (blocked), a broken spec
        found = False
    return None if found else _MISSING


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise ValueError(_MISSING) from None
    return wandb


class WandbTracker:
    """A W&B run for a training run in ``workdir`` (see the module docstring).

    ``warn`` receives the one-line warning of a failing tracker (default: stderr)."""

    def __init__(self, workdir: str, project: str, name: str | None = None,
                 mode: str = "offline", warn: Callable[[str], None] | None = None) -> None:
        if mode not in WANDB_MODES:
            raise ValueError(f"--wandb-mode={mode!r} is invalid: must be one of "
                             f"{', '.join(WANDB_MODES)}")
        self.wandb = _import_wandb()
        self.workdir, self.project, self.name, self.mode = workdir, project, name, mode
        self.warn = warn or (lambda m: print(f"warning: {m}", file=sys.stderr))
        self.run: Any = None
        self.failed = False

    def _guard(self, what: str, fn: Callable[[], Any]) -> Any:
        if self.failed:
            return None
        try:
            return fn()
        except Exception as e:  # a tracker never stops training
            self.failed = True
            self.warn(f"the wandb tracker failed to {what} ({type(e).__name__}: {e}); "
                      "training goes on without it")
            return None

    def start(self, config: Mapping[str, Any]) -> None:
        """Open the W&B run (resuming the workdir's previous one) with the run's config."""
        def go() -> None:
            rid = read_run_id(self.workdir)
            self.run = self.wandb.init(
                project=self.project, name=self.name, mode=self.mode, dir=self.workdir,
                id=rid, resume="allow" if rid else None, config=dict(config),
                settings=self.wandb.Settings(silent=True, console="off"))
            if self.mode != "disabled" and self.run is not None and self.run.id:
                write_run_id(self.workdir, self.run.id)

        self._guard("start", go)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """One step's metrics (``None`` values, non-finite numbers written as null, skipped)."""
        row = {k: v for k, v in metrics.items() if v is not None and k != "step"}
        if self.run is not None and row:
            self._guard("log", lambda: self.run.log(row, step=int(step)))

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
              step: int = 0) -> None:
        """A table (e.g. the lr curve: ``step``, ``lr``) in the history row of ``step``.

        The step is explicit: W&B's own counter would claim row 0 and then drop the run's
        step-0 metrics as out of order."""
        if self.run is not None:
            self._guard("log a table", lambda: self.run.log(
                {name: self.wandb.Table(columns=list(columns), data=[list(r) for r in rows])},
                step=int(step)))

    def summary(self, values: Mapping[str, Any]) -> None:
        """Final values (losses, the sample text...)."""
        if self.run is not None:
            self._guard("write the summary", lambda: self.run.summary.update(dict(values)))

    def finish(self) -> None:
        if self.run is not None:
            self._guard("finish", self.run.finish)
            self.run = None
