"""The run-level checks and facts below the setup: the global batch (and, from
``--global-batch-size``, the per-device batch and accumulation: :func:`resolve_batch`), the
schedule as the run builds it, the data paths (``train.run.setup.check_config`` puts them
together)."""

from __future__ import annotations

import dataclasses
import os

import jax

import schedules as S
from schedules.megatron import OptimizerParamScheduler

from .._flag import bad
from ..config import TrainConfig
from ..data import is_mixture, parse_mixture
from ..parallel.layout import data_parallel_degree
from ..schedule.batch import BatchRamp, SampleClock, megatron_ramp, spec_ramp
from ..schedule.build import build_schedule
from ..schedule.plan import plan

__all__ = ["batch_split", "check_data", "counts_samples", "global_batch", "resolve_batch",
           "run_ramp", "run_schedule"]


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
    get the run's global batch (:func:`global_batch`). With a batch-size ramp
    (:func:`run_ramp`) they count the samples actually consumed before each step (lengths in
    samples: iterations x ``--global-batch-size``, as Megatron), and ``--lr-batch-scaling``
    scales the lr by each step's batch relative to ``--global-batch-size``
    (``schedules.scale_batch``); the other families count steps."""
    samples = counts_samples(cfg)
    s = build_schedule(cfg, global_batch(cfg) if samples else None)
    ramp = run_ramp(cfg)
    if ramp is None:
        return s
    if samples:
        if cfg.schedule_history:
            raise ValueError(f"{_ramp_flag(cfg)} is invalid with a schedule history "
                             "(--change-schedule, --branch-from) and --lr-decay-style: the "
                             "samples of a changed Megatron schedule under a ramp are not "
                             "supported")
        kw = dict(plan(cfg, global_batch(cfg)).kwargs, increment=1)
        s = S.lambda_(SampleClock(OptimizerParamScheduler(**kw), ramp))
    if cfg.lr_batch_scaling is not None:
        s = S.scale_batch(s, ramp.batch_schedule(), cfg.global_batch_size,
                          rule=cfg.lr_batch_scaling)
    return s


def _ramp_flag(cfg: TrainConfig) -> str:
    if cfg.rampup_batch_size is not None:
        return f"--rampup-batch-size {' '.join(map(str, cfg.rampup_batch_size))}"
    return f"--batch-size-schedule={cfg.batch_size_schedule!r}"


def run_dp(cfg: TrainConfig) -> int | None:
    """The run's data-parallel degree from its flags and JAX's local devices (None: unknown
    before the distributed runtime starts: several processes without ``--devices``)."""
    if cfg.devices is not None:
        per_process = cfg.devices
    elif cfg.coordinator_address is None:
        per_process = jax.local_device_count()
    else:
        return None
    return data_parallel_replicas(cfg, per_process * (cfg.num_processes or 1))


def run_ramp(cfg: TrainConfig, dp: int | None = None) -> BatchRamp | None:
    """The run's batch-size ramp (None: a constant global batch), checked on ``dp``
    data-parallel replicas (default :func:`run_dp`): every global batch the run reaches is a
    whole number of micro-batches on every replica (Megatron's rule: START and INCREMENT
    multiples of micro-batch x data-parallel). ``ValueError`` naming the flag, the value and
    the rule; where the ramp is not supported (pipeline parallelism, populations,
    ``--sampling=epoch``) too."""
    if cfg.rampup_batch_size is None and cfg.batch_size_schedule is None:
        return None
    what = _ramp_flag(cfg)
    pipelined = (cfg.pipeline_parallel or 1) * (cfg.virtual_pipeline_parallel or 1) > 1
    for unsupported, why in ((pipelined, "pipeline parallelism (its micro-batches are the "
                              "pipeline's schedule: use data/tensor parallelism or ZeRO)"),
                             (bool(cfg.sweep or cfg.sweep_seeds), "a population (--sweep, "
                              "--sweep-seeds)"),
                             (cfg.sampling == "epoch", "--sampling=epoch (its epoch positions "
                              "count steps of one batch size)")):
        if unsupported:
            raise ValueError(f"{what} is not supported with {why}")
    g = cfg.global_batch_size
    assert g is not None  # TrainConfig.validate: a ramp needs --global-batch-size
    if cfg.rampup_batch_size is not None:
        start, inc, n = cfg.rampup_batch_size
        ramp = megatron_ramp(start, inc, n, g)
    else:
        ramp = spec_ramp(cfg.batch_size_schedule, max(cfg.steps, cfg.schedule_steps))
    dp = run_dp(cfg) if dp is None else dp
    if dp is None:
        return ramp
    micro, _ = batch_split(cfg, dp)
    unit = micro * dp
    if cfg.rampup_batch_size is not None:
        for name, v in zip(("START", "INCREMENT"), (start, inc)):
            if v % unit:
                raise ValueError(f"{what} is invalid: {name}={v} must be a multiple of "
                                 f"micro-batch x data-parallel = {micro} x {dp} = {unit} "
                                 "(Megatron's rule; lower --batch-size, the micro-batch)")
    else:
        for b in ramp.distinct(cfg.steps):
            if b % unit:
                raise ValueError(f"{what} is invalid: its global batch {b} is not a multiple "
                                 f"of micro-batch x data-parallel = {micro} x {dp} = {unit} "
                                 "(lower --batch-size, the micro-batch)")
    return ramp


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
