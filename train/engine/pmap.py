"""The pmap engine (the default): data parallelism with ``jax.pmap`` over the local devices.

The state is replicated on every device; each device takes its rows of the global batch
(``train.data.Batcher``'s ``[devices, grad_accum, B, T + 1]``) and the gradients are averaged
with ``lax.pmean`` inside :func:`train.engine.step.update`. Multi-host: every process pmaps
over its local devices, ``pmean`` spans all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import models

from ..optim import make_optimizer
from ..schedule.build import applied_group_schedules, applied_schedule
from ..schedule.hparams import applied_hparams, build_hparams
from .base import compile_key
from .step import (
    AXIS,
    Documents,
    LossScale,
    Placed,
    checked,
    dropout_keys,
    loss_scale_rule,
    model_loss,
    update,
)

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = ["PmapEngine", "batch_placer", "make_eval_step", "make_train_step", "pmap_engine",
           "replicate", "select_devices", "unreplicate"]


def make_train_step(model_cfg: Any, tx: optax.GradientTransformation, seed: int,
                    devices: list | None = None, *, schedule: Callable[[Any], Any] | None = None,
                    loss_scale: LossScale | None = None,
                    group_schedules: Mapping[str, Callable[[Any], Any]] | None = None,
                    documents: Documents | None = None,
                    hparams: dict[str, Callable[[Any], Any]] | None = None,
                    ) -> Callable[[Any, Any], tuple[Any, dict]]:
    """A pmapped ``(state, batch) -> (state, metrics)`` over :func:`update`; ``state`` is
    donated. ``schedule`` (the one given to the optimizer) enables the ``lr`` metric;
    ``loss_scale`` is the float16 scaler's rule (its state is in ``state["loss_scale"]``);
    ``group_schedules`` the ``--group`` s' (their ``lr_<pattern>`` metrics);
    ``documents``: the document mask (``--document-mask``); ``hparams``: the scheduled
    hyperparameters ``tx`` applies (logged; a scheduled dropout rate is passed to the model)."""
    module = models.build(model_cfg)
    use_dropout = getattr(model_cfg, "dropout", 0.0) > 0 or "dropout" in (hparams or {})

    def step(state: dict, batch: jax.Array) -> tuple[dict, dict]:
        keys = dropout_keys(seed, state["step"], batch.shape[0]) if use_dropout else None
        return update(state, batch, keys, module=module, tx=tx, schedule=schedule,
                      reduce=lambda x: jax.lax.pmean(x, AXIS), loss_scale=loss_scale,
                      group_schedules=group_schedules, documents=documents, hparams=hparams)

    return jax.pmap(step, axis_name=AXIS, donate_argnums=(0,), devices=devices)


def make_eval_step(model_cfg: Any, devices: list | None = None,
                   documents: Documents | None = None) -> Callable[[Any, Any], jax.Array]:
    """A pmapped ``(params, batch) -> mean loss`` over the global batch (all micro-batches)."""
    loss = model_loss(models.build(model_cfg), documents=documents)

    def step(params: Any, batch: jax.Array) -> jax.Array:
        flat = batch.reshape((-1, batch.shape[-1]))
        return jax.lax.pmean(loss(params, flat, None), AXIS)

    return jax.pmap(step, axis_name=AXIS, devices=devices)


def select_devices(cfg: TrainConfig) -> list | None:
    """The devices a run uses (None: all): ``--devices`` per process when set."""
    local = jax.local_device_count()
    if cfg.devices is None:
        return None
    if cfg.devices > local:
        raise ValueError(f"--devices={cfg.devices} is invalid: this process has {local} local "
                         f"device(s)")
    by_proc: dict[int, list] = {}
    for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
        by_proc.setdefault(d.process_index, []).append(d)
    return [d for p in sorted(by_proc) for d in by_proc[p][: cfg.devices]]


def replicate(tree: Any, devices: list | None) -> Any:
    """Copy a host pytree onto every (local) device, laid out as the pmapped step expects.

    The identity is pmapped over the step's axis name (``AXIS``) so the copies carry the same
    sharding as the step's outputs: otherwise the train step compiles twice (first call,
    then again for its own outputs)."""
    n = jax.local_device_count() if devices is None else sum(
        d.process_index == jax.process_index() for d in devices)
    stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), tree)
    return jax.pmap(lambda x: x, axis_name=AXIS, devices=devices)(stacked)


def batch_placer(devices: list | None) -> Callable[[Any], jax.Array]:
    """Host batch ``[local devices, ...]`` -> one device array, row ``i`` on this process's
    ``i``-th device of the pmapped step: the layout ``jax.pmap`` (a ``shard_map`` over the
    devices) gives its argument, so the step takes the array as it is, without a copy. Called
    in the loop's prefetch thread, the transfer overlaps the step before."""
    me = jax.process_index()
    local = [d for d in (jax.devices() if devices is None and jax.process_count() > 1
                         else devices or jax.local_devices()) if d.process_index == me]
    cache: dict[int, NamedSharding] = {}

    def place(batch: Any) -> jax.Array:
        n = np.shape(batch)[0]
        if n not in cache:
            cache[n] = NamedSharding(Mesh(np.array(local[:n]), (AXIS,)), PartitionSpec(AXIS))
        return jax.device_put(np.asarray(batch), cache[n])

    return place


def unreplicate(tree: Any) -> Any:
    """Host NumPy copy of device 0's replica."""
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x.addressable_data(0)))[0], tree)


@dataclass
class PmapEngine:
    """The pmap engine (:class:`train.engine.base.Engine`): replicated state, host
    checkpoints (device 0's replica, gathered to the host)."""

    tx: optax.GradientTransformation
    train: Callable[[Any, Any], tuple[Any, dict]]
    eval: Callable[[Any, Any], jax.Array]
    devices: list | None = None
    #: host batch -> :class:`~train.engine.step.Placed` (``train`` and ``eval`` take either)
    place_batch: Callable[[Any], Placed] | None = None

    def put_state(self, host: Any) -> Any:
        return replicate(host, self.devices)

    def get_state(self, state: Any) -> Any:
        return unreplicate(state)

    def checkpoint_view(self, state: Any) -> Any:
        return unreplicate(state)

    def restore_target(self, host: Any) -> Any:
        return host

    def from_checkpoint(self, restored: Any) -> Any:
        return restored


_CACHE: dict[Any, PmapEngine] = {}


def pmap_engine(model_cfg: Any, cfg: TrainConfig, schedule: Any, params: Any,
                devices: list | None, documents: Documents | None = None) -> PmapEngine:
    """The pmap engine of a run (optimizer and compiled steps), cached per process under
    :func:`train.engine.base.compile_key`; ``documents``: ``--document-mask``'s delimiters."""
    horizon = max(cfg.steps, cfg.schedule_steps)
    key = compile_key(model_cfg, cfg, schedule, horizon,
                      None if devices is None else tuple(d.id for d in devices), documents)
    if key not in _CACHE:
        schedule = applied_schedule(schedule, horizon)  # the same bits on every engine
        hp = applied_hparams(build_hparams(cfg), horizon)
        tx = make_optimizer(cfg, schedule, params, hp)
        n = jax.local_device_count() if devices is None else sum(
            d.process_index == jax.process_index() for d in devices)
        train, evaluate, place = checked(
            make_train_step(model_cfg, tx, cfg.seed, devices, schedule=schedule,
                            loss_scale=loss_scale_rule(cfg),
                            group_schedules=applied_group_schedules(cfg),
                            documents=documents, hparams=hp),
            make_eval_step(model_cfg, devices, documents), place=batch_placer(devices),
            replicas=n, max_len=model_cfg.block_size, step_shape=(n,))
        _CACHE[key] = PmapEngine(tx, train, evaluate, devices, place)
    return _CACHE[key]
