"""The run-level checks and facts below the setup: the global batch, the schedule as the run
builds it, the data paths (``train.run.setup.check_config`` puts them together)."""

from __future__ import annotations

import os

import jax

import schedules as S

from .._flag import bad
from ..config import TrainConfig
from ..data import is_mixture, parse_mixture
from ..parallel.layout import data_parallel_degree
from ..schedule.build import build_schedule

__all__ = ["check_data", "counts_samples", "global_batch", "run_schedule"]


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
    dp = data_parallel_degree(cfg, devices) if cfg.mesh_engine else devices
    return dp * cfg.grad_accum * cfg.batch_size


def run_schedule(cfg: TrainConfig) -> S.Schedule:
    """``cfg``'s learning-rate schedule as the run builds it: Megatron's sample-counting styles
    get the run's global batch (:func:`global_batch`)."""
    return build_schedule(cfg, global_batch(cfg) if counts_samples(cfg) else None)


def counts_samples(cfg: TrainConfig) -> bool:
    """A Megatron style (``--lr-decay-style``) in the run's schedule or its history: the
    schedule needs the global batch."""
    return cfg.lr_decay_style is not None or any(
        e["flags"].get("lr_decay_style") is not None for e in cfg.schedule_history)


def check_data(cfg: TrainConfig) -> None:
    """``--data`` / ``--val-data``: a path that exists, or a mixture whose every path does."""
    for k in ("data", "val_data"):
        spec = getattr(cfg, k)
        if spec is None:
            continue
        paths = ([p for _, p, _ in parse_mixture(spec)] if k == "data" and is_mixture(spec)
                 else [spec])
        for p in paths:
            if not os.path.exists(p):
                raise bad(k, spec if p == spec else p, "no such file or directory")
