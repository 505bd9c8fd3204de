"""train: the data-parallel GPT-2/LLaMA-3 trainer (optax + pmap + orbax, exact resume).

``python -m train`` (see ``python -m train --help`` and docs/training.md) or, from Python::

    from train import TrainConfig, train_and_evaluate
    summary = train_and_evaluate(TrainConfig(steps=100, lr_scheduler="hf:wsd",
                                             lr_num_decay_steps=20), "runs/wsd")

Modules: :mod:`train.config` (the frozen, validated config), :mod:`train.lr` (scheduler names
-> schedules), :mod:`train.tokenizer`, :mod:`train.data` (token files, batches),
:mod:`train.optim` (AdamW, groups), :mod:`train.step` (pmapped steps), :mod:`train.checkpoint`
(orbax), :mod:`train.metrics`, :mod:`train.loop` (``train_and_evaluate``), :mod:`train.plot`,
:mod:`train.sweep` (``sweep``: a population of runs in one program).
"""

from .checkpoint import CheckpointError as CheckpointError
from .config import TrainConfig as TrainConfig
from .loop import NonFiniteLossError as NonFiniteLossError
from .loop import train_and_evaluate as train_and_evaluate
from .lr import build_schedule as build_schedule
from .sweep import sweep as sweep

__all__ = ["CheckpointError", "NonFiniteLossError", "TrainConfig", "build_schedule",
           "sweep", "train_and_evaluate"]
