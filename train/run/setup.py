"""The run's setup, written once for every entry point (``train_and_evaluate``, ``sweep``, the
LR range test, ``--plan``, the CLI's check): everything checked before anything compiles.

:func:`check_config` is the whole validation of a config: its fields
(:meth:`~train.config.TrainConfig.validate`), the layout flags
(:func:`train.parallel.layout.check_flags`), the learning-rate schedule (built, and its whole
curve checked: :func:`train.schedule.build.check_lr_curve`) and a sweep's members.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

import schedules as S

from ..config import TrainConfig
from ..parallel.layout import check_flags
from ..schedule.build import build_schedule, check_lr_curve

__all__ = ["check_config", "effective_config", "finished_message", "global_batch",
           "init_distributed"]


def global_batch(cfg: TrainConfig) -> int:
    """Sequences per update: the data-parallel replicas of all processes x ``--grad-accum`` x
    ``--batch-size`` (Megatron's ``global_batch_size``). The device count is JAX's when
    ``--devices`` is unset: call after ``--simulate-devices`` took effect."""
    if cfg.devices is not None:
        per_process = cfg.devices
    elif cfg.coordinator_address is None:
        per_process = jax.local_device_count()
    else:
        raise ValueError(f"--lr-decay-style={cfg.lr_decay_style} counts samples as Megatron "
                         f"does (the global batch size): give --devices with "
                         f"--coordinator-address")
    devices = per_process * (cfg.num_processes or 1)
    if cfg.data_parallel is not None:
        dp = cfg.data_parallel
    elif cfg.mesh_engine:
        dp = max(1, devices // ((cfg.tensor_parallel or 1) * (cfg.pipeline_parallel or 1)))
    else:
        dp = devices
    return dp * cfg.grad_accum * cfg.batch_size


def check_config(cfg: TrainConfig) -> S.Schedule:
    """Validate ``cfg`` entirely (see the module docstring) and return its learning-rate
    schedule; ``ValueError`` naming the flag, the value and the rule otherwise."""
    cfg = cfg.normalized().validate()
    check_flags(cfg)
    g = global_batch(cfg) if cfg.lr_decay_style is not None else None
    schedule = build_schedule(cfg, g)
    check_lr_curve(schedule, cfg.steps)
    if cfg.sweep or cfg.sweep_seeds:
        from .sweep import member_configs

        member_configs(cfg)  # every member's config is valid, the swept fields sweepable
    return schedule


def init_distributed(cfg: TrainConfig) -> None:
    if cfg.coordinator_address is None:
        return
    from jax._src import distributed as _dist

    if getattr(_dist.global_state, "client", None) is not None:
        return  # already initialized in this process
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                               num_processes=cfg.num_processes, process_id=cfg.process_id)


def effective_config(cfg: TrainConfig, schedule: S.Schedule, model_cfg: Any,
                     extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config as saved with every checkpoint: all keys, the schedule's ``to_config`` and
    spec, and the resolved model configuration."""
    out = cfg.to_dict()
    try:
        out["schedule_config"] = schedule.to_config()
    except ValueError:
        out["schedule_config"] = None
    out["schedule_spec"] = repr(schedule)
    out["model_config"] = dataclasses.asdict(model_cfg)
    out.update(extra or {})
    return out


def finished_message(step: int, where: str) -> str:
    """The one line of a run (or population) resumed at its ``--steps``: nothing to do."""
    return (f"run already finished at step {step}; nothing to do (checkpoint {where}; pass a "
            "larger --steps to train on)")


