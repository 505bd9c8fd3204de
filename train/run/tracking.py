"""Experiment trackers of a single run (``--tracker=jsonl,tensorboard,wandb``), as a loop hook.

``metrics.jsonl`` is always written (:class:`train.metrics.MetricsWriter`); TensorBoard is the
writer's too. :class:`Tracking` adds what a tracker shows beyond the per-step scalars, to
each tracker that is on:

* at the start: the run's full effective config (every field, the schedule's spec and
  config, the resolved model) and the lr curve the run applies (``lr_table``: a W&B table
  ``lr_curve`` with columns ``step``, ``lr``; TensorBoard scalars ``schedule/lr`` and the
  config and spec as text). On a resumed run the curve is not logged again;
* every record written to ``metrics.jsonl`` (train metrics per step, evaluation losses), as
  it is written (the writer's ``sinks``);
* at the end: the summary (final train and validation loss, throughput) and the final
  sample (W&B summary ``sample``; TensorBoard text ``sample``).

Only process 0 tracks. A resumed run continues the same W&B run (its id is saved in
``WORKDIR/wandb_run_id``). A tracker that fails warns once and the run goes on
(:class:`train.trackers.WandbTracker`). Populations (``--sweep``) refuse ``--tracker=wandb``
(``train.run.setup.check_config``): their members are in ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from ..metrics import MetricsWriter
from ..schedule.build import lr_table
from ..trackers import WandbTracker
from .loop import Hook, Loop
from .setup import RunSetup

__all__ = ["Tracking"]


class Tracking(Hook):
    """The trackers of ``setup``'s run beside ``writer`` (see the module docstring);
    ``start`` is the update the run starts from (0: a fresh run)."""

    def __init__(self, setup: RunSetup, writer: MetricsWriter, start: int,
                 warn: Callable[[str], None] | None = None) -> None:
        cfg = setup.cfg
        self.writer = writer
        self.wandb: WandbTracker | None = None
        if not setup.primary:
            return
        curve = lr_table(setup.schedule, cfg.steps) if start == 0 else None
        if "wandb" in cfg.tracker and cfg.wandb_mode != "disabled" and (
                setup.workdir is not None):
            self.wandb = WandbTracker(setup.workdir, cfg.wandb_project, cfg.wandb_run_name,
                                      cfg.wandb_mode, warn)
            self.wandb.start(setup.eff)
            if curve is not None:
                self.wandb.table("lr_curve", ["step", "lr"], [list(r) for r in curve])
            writer.sinks.append(self.wandb.log)
        if writer.tensorboard:
            writer.text("config", "```\n" + json.dumps(setup.eff, indent=1, sort_keys=True,
                                                       default=str) + "\n```", start)
            writer.text("schedule", setup.eff.get("schedule_spec", ""), start)
            if curve is not None:
                writer.curve("schedule/lr", curve)

    def on_interrupt(self, loop: Loop) -> str | None:
        self.close()  # what was logged is complete on disk before the process exits
        return None

    def finish(self, summary: Mapping[str, Any]) -> None:
        """The run's final values and sample, then close the trackers."""
        keep = ("steps", "start_step", "stop_reason", "final_loss", "val_loss",
                "tokens_per_s", "mfu", "sample")
        values = {k: summary[k] for k in keep if k in summary and not (
            isinstance(summary[k], float) and not math.isfinite(summary[k]))}
        if "sample" in summary:
            self.writer.text("sample", str(summary["sample"]), int(summary.get("steps", 0)))
        if self.wandb is not None:
            self.wandb.summary(values)
        self.close()

    def close(self) -> None:
        if self.wandb is not None:
            if self.wandb.log in self.writer.sinks:
                self.writer.sinks.remove(self.wandb.log)
            self.wandb.finish()
            self.wandb = None
