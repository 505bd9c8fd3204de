"""The engine interface: what the run loop needs from any engine, and the one compile-cache key.

An engine owns the layout of the train state on the devices and the compiled steps. The loop
(:class:`train.run.loop.Loop`) and its hooks (evaluation, the checkpointer) only ever call:

* ``put_state(host_state)``: host (NumPy) per-layer state -> the engine's device state;
* ``place_batch(host_batch)``: the host batch on the devices in the layout ``train`` takes
  (:class:`train.engine.step.Placed`); the loop calls it in its prefetch thread, so the
  transfer of step t + 1's batch overlaps step t;
* ``train(state, batch) -> (state, metrics)``: ``batch`` a host or placed batch; one update
  (``train.engine.step.update`` under the engine's parallelism), metrics of shape ``[1]``
  (one replica's view);
* ``eval(params, batch) -> loss [1]``: the mean loss over a global batch;
* ``get_state(state)``: full host copies (for the summary and sampling);
* ``checkpoint_view(state)`` / ``restore_target(host_state)`` / ``from_checkpoint(restored)``:
  what a checkpoint saves, the abstract target orbax restores into, and the restored tree back
  in the engine's form (each engine decides whether anything is gathered).

The population engine (:func:`train.engine.population.population_engine`) is the pmap engine's
class with the members' hyperparameters bound into ``train`` and no ``tx`` (each member builds
its optimizer inside the step). Engines are cached per process under :func:`compile_key` so
repeated runs with the same settings (tests, notebooks, benchmarks) reuse the compiled steps.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Protocol

import optax

from .step import loss_scale_rule

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = ["Engine", "compile_key"]


class Engine(Protocol):
    """The interface every engine implements (see the module docstring)."""

    tx: optax.GradientTransformation

    def put_state(self, host: Any) -> Any: ...

    def place_batch(self, host_batch: Any) -> Any: ...

    def train(self, state: Any, batch: Any) -> tuple[Any, dict]: ...

    def eval(self, params: Any, batch: Any) -> Any: ...

    def get_state(self, state: Any) -> Any: ...

    def checkpoint_view(self, state: Any) -> Any: ...

    def restore_target(self, host: Any) -> Any: ...

    def from_checkpoint(self, restored: Any) -> Any: ...


def compile_key(model_cfg: Any, cfg: TrainConfig, schedule: Any, *extra: Hashable) -> tuple:
    """The settings a compiled train step depends on: the model, the schedule, the optimizer's
    hyperparameters, the seed (dropout keys), float16 loss scaling, plus the engine's own
    ``extra`` (its devices or layout)."""
    return (model_cfg, repr(schedule), cfg.clip_norm, cfg.beta1, cfg.beta2, cfg.eps,
            cfg.weight_decay, tuple(sorted(cfg.lr_mults.items())), cfg.seed, cfg.optimizer,
            cfg.momentum, cfg.nesterov, cfg.dampening, loss_scale_rule(cfg), cfg.dropout,
            cfg.lr_cycle_momentum, cfg.lr_base_momentum, cfg.lr_max_momentum,
            tuple(getattr(cfg, "group", ())), *extra)
