"""The run-level checks and facts below the setup: the global batch (and, from
``--global-batch-size``, the per-device batch and accumulation: :func:`resolve_batch`), the
schedule as the run builds it, the data paths (``train.run.setup.check_config`` puts them
together)."""

from __future__ import annotations

import dataclasses
import os

import jax

import schedules as S

from .._flag import bad
from ..config import TrainConfig
from ..data import is_mixture, parse_mixture
from ..parallel.layout import data_parallel_degree
from ..schedule.build import build_schedule

__all__ = ["batch_split", "check_data", "counts_samples", "global_batch", "resolve_batch",
           "run_schedule"]


def batch_split(cfg: TrainConfig, dp: int) -> tuple[int, int]:
    """``(per-device micro-batch, micro-batches per update)`` of ``--global-batch-size=G`` on
    ``dp`` data-parallel replicas (all processes'): each replica takes ``R = G / dp`` sequences
    per update, in micro-batches of ``min(--batch-size, R)`` (``--batch-size`` is then the most
    a device runs at once), so the accumulation is ``R / micro-batch`` (Megatron's rule:
    ``global_batch_size = micro_batch_size x DP x num_micro_batches``). ``ValueError`` naming
    the numbers when the layout cannot express G; ``--grad-accum``, derived here, may only be
    left at 1 or given as what this derives.

    Without ``--global-batch-size``: ``(--batch-size, --grad-accum)`` as given.

    >>> from train.config import TrainConfig
    >>> batch_split(TrainConfig(global_batch_size=32, batch_size=4), 8)
    (4, 1)
    >>> batch_split(TrainConfig(global_batch_size=32, batch_size=4), 4)
    (4, 2)
    """
    g = cfg.global_batch_size
    if g is None:
        return cfg.batch_size, cfg.grad_accum
    if g % dp:
        raise ValueError(f"--global-batch-size={g} is invalid on {dp} data-parallel "
                         f"replicas: it must be a multiple of the data-parallel degree {dp} "
                         "(every replica takes the same number of sequences)")
    rows = g // dp
    micro = min(cfg.batch_size, rows)
    if rows % micro:
        raise ValueError(f"--global-batch-size={g} is invalid with --batch-size={micro} on "
                         f"{dp} data-parallel replicas: each replica's {rows} sequences per "
                         f"update are not a whole number of micro-batches of {micro} (give a "
                         f"--batch-size that divides {rows})")
    accum = rows // micro
    if cfg.grad_accum not in (1, accum):
        raise ValueError(f"--grad-accum={cfg.grad_accum} is invalid with --global-batch-size="
                         f"{g}: on {dp} data-parallel replicas with --batch-size={micro} the "
                         f"accumulation is {g} / ({dp} x {micro}) = {accum} (set the "
                         "micro-batch with --batch-size instead)")
    return micro, accum


def resolve_batch(cfg: TrainConfig, dp: int) -> TrainConfig:
    """``cfg`` with ``batch_size`` and ``grad_accum`` as :func:`batch_split` derives them on
    ``dp`` data-parallel replicas (``cfg`` itself without ``--global-batch-size``)."""
    if cfg.global_batch_size is None:
        return cfg
    micro, accum = batch_split(cfg, dp)
    if (micro, accum) == (cfg.batch_size, cfg.grad_accum):
        return cfg
    return dataclasses.replace(cfg, batch_size=micro, grad_accum=accum).validate()


def data_parallel_replicas(cfg: TrainConfig, n_devices: int) -> int:
    """The data-parallel degree of ``cfg`` on ``n_devices`` (all processes'): the layout's
    (mesh engine) or the device count (pmap)."""
    return data_parallel_degree(cfg, n_devices) if cfg.mesh_engine else n_devices


def global_batch(cfg: TrainConfig) -> int:
    """Sequences per update: ``--global-batch-size``, or the data-parallel replicas of all
    processes x ``--grad-accum`` x ``--batch-size`` (Megatron's ``global_batch_size``). The
    device count is JAX's when ``--devices`` is unset: call after ``--simulate-devices`` took
    effect."""
    if cfg.global_batch_size is not None:
        return cfg.global_batch_size
    if cfg.devices is not None:
        per_process = cfg.devices
    elif cfg.coordinator_address is None:
        per_process = jax.local_device_count()
    else:
        raise ValueError(f"--lr-decay-style={cfg.lr_decay_style} counts samples as Megatron "
                         f"does (the global batch size): give --devices with "
                         f"--coordinator-address")
    devices = per_process * (cfg.num_processes or 1)
    return data_parallel_replicas(cfg, devices) * cfg.grad_accum * cfg.batch_size


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
