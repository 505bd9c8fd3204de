"""train: the data-parallel GPT-2/LLaMA-3 trainer (optax + pmap + orbax, exact resume).

``python -m train`` (see ``python -m train --help`` and docs/training.md) or, from Python::

    from train import TrainConfig, train_and_evaluate
    summary = train_and_evaluate(TrainConfig(steps=100, lr_scheduler="hf:wsd",
                                             lr_num_decay_steps=20), "runs/wsd")

Layers, imports pointing down only (docs/architecture.md): :mod:`train.config` (the frozen,
validated config) over the leaves; :mod:`train.schedule` (flags -> schedules); the data,
tokenizer, metrics and plot modules; :mod:`train.checkpoint` (orbax), :mod:`train.resume`,
:mod:`train.optim`; :mod:`train.parallel` (layout, shardings, pipeline); :mod:`train.engine`
(one step body, pmap, mesh, population engines); :mod:`train.run` (setup, the loop,
``train_and_evaluate``, ``sweep``, the LR range test, ``--plan``); the CLIs on top.

The names below are imported on first use (PEP 562), so that ``import train.corpus`` (the
``train.prepare`` CLI and its tokenizing worker processes) does not import JAX: each worker
would otherwise spend seconds importing it (issue 25).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .checkpoint import CheckpointError as CheckpointError
    from .config import TrainConfig as TrainConfig
    from .run.loop import NonFiniteLossError as NonFiniteLossError
    from .run.sweep import sweep as sweep
    from .run.train import train_and_evaluate as train_and_evaluate
    from .schedule.build import build_schedule as build_schedule

_LAZY = {"CheckpointError": ".checkpoint", "TrainConfig": ".config",
         "NonFiniteLossError": ".run.loop", "sweep": ".run.sweep",
         "train_and_evaluate": ".run.train", "build_schedule": ".schedule.build"}

__all__ = ["CheckpointError", "NonFiniteLossError", "TrainConfig", "build_schedule",
           "sweep", "train_and_evaluate"]


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
