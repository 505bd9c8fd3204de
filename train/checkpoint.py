"""Checkpoints with orbax: asynchronous, atomic, the last N kept.

A checkpoint ``<dir>/<step>/`` holds two items: ``state`` (``step``, ``params``,
``opt_state`` as NumPy arrays, float32) and ``config`` (the effective :class:`TrainConfig` as
JSON, with the schedule's ``to_config``). The schedule has no state of its own: its step is the
optimizer's ``count`` inside ``opt_state``.

orbax writes each checkpoint into a temporary directory and renames it when complete, so a
save killed half-way never looks like a checkpoint (its leftovers are ignored and cleaned up).
Restoring checks the saved model configuration against the run's before touching any array and
raises :class:`CheckpointError` with a clear message; nothing is deleted on a failed restore.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["CheckpointError", "Checkpointer"]

#: config keys that define the parameter shapes: a resumed run must match them.
SHAPE_KEYS = ("model", "model_size", "n_layer", "n_head", "n_embd", "n_kv_head", "seq_len",
              "tokenizer")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (incompatible with this run, or unreadable)."""


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` (one per run, on every process)."""

    def __init__(self, directory: str, keep: int, async_save: bool = True) -> None:
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "config"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(self, step: int, state: dict, config: dict[str, Any]) -> None:
        """Start saving ``state`` (host NumPy arrays) and ``config`` at ``step`` (asynchronous)."""
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    config=ocp.args.JsonSave(config)),
            force=True,
        )

    def read_config(self, step: int) -> dict[str, Any]:
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
            cfg = out["config"]
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {self.path(step)} is unreadable or corrupted (its config): "
                f"{type(e).__name__}: {e}") from e
        if not isinstance(cfg, dict):
            raise CheckpointError(f"checkpoint {self.path(step)}: config is not a mapping")
        return cfg

    def restore(self, step: int, target: dict, run_config: dict[str, Any]) -> dict:
        """Restore the state saved at ``step`` into the structure of ``target`` (NumPy arrays).

        Raises :class:`CheckpointError` if the saved config defines different shapes or the
        arrays cannot be read (corrupted, or a different optimizer structure)."""
        saved = self.read_config(step)
        diffs = [f"{k}: checkpoint {saved.get(k)!r}, this run {run_config.get(k)!r}"
                 for k in SHAPE_KEYS if saved.get(k) != run_config.get(k)]
        if diffs:
            raise CheckpointError(
                f"cannot resume from {self.path(step)}: the model differs from the one saved "
                f"there ({'; '.join(diffs)}). Use the saved settings or another --checkpoint-dir."
            )
        abstract = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), target)
        try:
            out = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
            state = out["state"]
        except Exception as e:
            raise CheckpointError(
                f"cannot restore {self.path(step)}: the checkpoint is corrupted or its arrays do "
                f"not match this run (e.g. a changed --lr-mults); {type(e).__name__}: {e}"
            ) from e
        ok = jax.tree.structure(state) == jax.tree.structure(abstract) and all(
            np.shape(a) == np.shape(b)
            for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(abstract)))
        if not ok:
            raise CheckpointError(f"cannot restore {self.path(step)}: saved arrays have different "
                                  "shapes or structure than this run's")
        return state

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
