"""The population engine: K members of a sweep as one program, ``jax.vmap`` over the members
(on CPUs ``lax.map``: one member after the other, :data:`MEMBER_LOOP`) inside ``jax.pmap`` over
the devices. Each member's update is :func:`train.engine.step.update`
itself (the single run's step body) with the member's optimizer, schedule, dropout keys and
rate; only the freezing of diverged or early-stopped members is the population's. What varies
across members and how it enters the program: ``train.run.sweep``'s module docstring.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import models
import schedules as S
from schedules.torch._recurrence import Recurrence

from ..metrics import settings_text
from ..optim import make_optimizer
from ..schedule.hparams import applied_hparams, build_hparams
from .pmap import PmapEngine, batch_placer, replicate
from .step import (
    AXIS,
    Documents,
    Placed,
    dropout_keys,
    loss_scale_rule,
    model_loss,
    schedule_count,
    update,
)

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = ["MEMBER_LOOP", "OPTIMIZER_FIELDS", "Population", "member_loop", "population_engine",
           "population_state", "population_steps", "schedule_mode"]

#: optimizer fields a sweep may vary (traced hyperparameters of one compiled program)
OPTIMIZER_FIELDS = ("beta1", "beta2", "eps", "weight_decay", "clip_norm")


def _has_recurrence(s: S.Schedule) -> bool:
    return isinstance(s, Recurrence) or any(_has_recurrence(c) for c in s.children())


def schedule_mode(scheds: list[S.Schedule], members: list[dict]) -> tuple[str, Any, list]:
    """("same" | "leaves" | "table", treedef, per-position constant leaves or None)."""
    if all(repr(s) == repr(scheds[0]) for s in scheds):
        return "same", None, []
    if any(_has_recurrence(s) for s in scheds):
        return "table", None, []
    defs = [jax.tree.structure(s) for s in scheds]
    for i, d in enumerate(defs):
        if d != defs[0]:
            raise ValueError(
                f"--sweep is invalid: the members' schedules differ in structure, not only in "
                f"their leaves: member 0 ({settings_text(members[0])}) is {scheds[0]!r}, "
                f"member {i} ({settings_text(members[i])}) is {scheds[i]!r}. A static field "
                "of the schedule "
                "changes, so one compiled program cannot hold both; run them separately")
    cols = list(zip(*[jax.tree.leaves(s) for s in scheds]))
    const = [c[0] if all(repr(x) == repr(c[0]) for x in c) else None for c in cols]
    return "leaves", defs[0], const


def _stack(values: Sequence[Any]) -> np.ndarray:
    a = np.asarray(values)
    return a.astype(np.int32) if a.dtype.kind in "iub" else a.astype(np.float32)


class Population:
    """The members' static plan (hashable ``key``) and their stacked hyperparameters ``h``."""

    def __init__(self, cfgs: list[TrainConfig], members: list[dict], schedules: list) -> None:
        self.k = len(cfgs)
        self.cfgs = cfgs
        self.base = cfgs[0]
        self.schedules = schedules
        self.mode, self.treedef, self.const = schedule_mode(schedules, members)
        h: dict[str, Any] = {"member": np.arange(self.k, dtype=np.int32)}  # never empty
        if self.mode == "leaves":
            cols = list(zip(*[jax.tree.leaves(s) for s in schedules]))
            h["sched"] = tuple(_stack(c) for c, k in zip(cols, self.const) if k is None)
        elif self.mode == "table":
            steps = self.base.steps
            h["lr_table"] = np.stack([
                np.asarray(jax.jit(lambda t, s=s: s(t))(jnp.arange(steps, dtype=jnp.int32)),
                           np.float32) for s in schedules])
        # issue 27: scheduled hyperparameters (a schedule's text, torch's momentum cycling) enter
        # as each member's float32 table of the single run's values, gathered at the count
        hps = [build_hparams(c) for c in cfgs]
        self.scheduled = tuple(sorted(hps[0]))
        for i, hp in enumerate(hps):
            if tuple(sorted(hp)) != self.scheduled:
                raise ValueError(
                    f"--sweep is invalid: member 0 ({settings_text(members[0])}) schedules "
                    f"{list(self.scheduled) or 'no hyperparameter'}, member {i} "
                    f"({settings_text(members[i])}) {sorted(hp) or 'none'}: a hyperparameter is "
                    "a number in some members and a schedule in others; run them separately")
        steps = self.base.steps
        for f in self.scheduled:
            h[f"hp_{f}"] = np.stack([np.asarray(S.values(applied_hparams({f: hp[f]}, steps)[f],
                                                         steps), np.float32) for hp in hps])
        self.varying = tuple(f for f in (*OPTIMIZER_FIELDS, "dropout", "seed")
                             if f not in self.scheduled and len({getattr(c, f) for c in cfgs}) > 1)
        for f in self.varying:
            vals = [getattr(c, f) for c in cfgs]
            if f == "clip_norm":
                vals = [v if v > 0 else math.inf for v in vals]
            if f == "dropout":  # the float32 rate whose 1 - rate is a single run's keep prob
                vals = [np.float32(1) - np.float32(1.0 - v) for v in vals]
            h[f] = _stack(vals)
        # dropout keys are drawn
        self.dropout = "dropout" in self.scheduled or any(c.dropout > 0 for c in cfgs)
        self.h = h
        self.clip = "clip_norm" not in self.scheduled and any(c.clip_norm > 0 for c in cfgs)
        self.key = (self.k, self.mode, self.treedef, repr(self.const), self.scheduled,
                    repr(schedules[0]) if self.mode == "same" else None, self.varying, self.clip,
                    tuple((f, getattr(self.base, f)) for f in (*OPTIMIZER_FIELDS, "dropout",
                                                               "seed")
                          if f not in self.varying),
                    tuple(sorted(self.base.lr_mults.items())))

    def schedule(self, h: Mapping[str, Any]) -> Any:
        """Member's learning-rate schedule from its (traced) slice of ``h``."""
        if self.mode == "same":
            return self.schedules[0]
        if self.mode == "table":
            table = h["lr_table"]  # a Schedule, so that lr_mults can scale it
            return S.lambda_(lambda t: table[jnp.clip(t, 0, table.shape[0] - 1).astype(jnp.int32)])
        it = iter(h["sched"])
        return jax.tree.unflatten(self.treedef, [next(it) if c is None else c
                                                 for c in self.const])

    def optimizer(self, h: Mapping[str, Any], schedule: Any,
                  params: Any) -> optax.GradientTransformation:
        """``train.optim.make_optimizer`` of the member, hyperparameters traced where they vary
        (the clipping comes first, built here because its on/off switch is structural)."""
        view = {f: h[f] if f in self.varying else getattr(self.base, f) for f in OPTIMIZER_FIELDS}
        clip = view.pop("clip_norm")
        b = self.base
        ns = _View(lr_mults=b.lr_mults, clip_norm=0.0, optimizer=b.optimizer, momentum=b.momentum,
                   nesterov=b.nesterov, dampening=b.dampening, **view)
        tx = make_optimizer(ns, schedule, params, self.hparams(h))
        return optax.chain(optax.clip_by_global_norm(clip), tx) if self.clip else tx

    def hparams(self, h: Mapping[str, Any]) -> dict[str, Any]:
        """The member's scheduled hyperparameters (``step -> value``) from its tables in ``h``."""

        def lookup(table: Any) -> Any:
            return lambda t: jnp.asarray(table)[jnp.clip(t, 0, table.shape[0] - 1)
                                                .astype(jnp.int32)]

        return {f: lookup(h[f"hp_{f}"]) for f in self.scheduled}

    def seed(self, h: Mapping[str, Any]) -> Any:
        return h["seed"] if "seed" in self.varying else self.base.seed

    def dropout_rate(self, h: Mapping[str, Any]) -> Any:
        """The member's traced dropout rate where it varies (None: the model config's)."""
        return h["dropout"] if "dropout" in self.varying else None


@dataclasses.dataclass(frozen=True)
class _View:
    """The optimizer fields ``make_optimizer`` reads, possibly traced."""

    lr_mults: Mapping[str, float]
    clip_norm: Any
    optimizer: str
    momentum: float
    nesterov: bool
    dampening: float
    beta1: Any
    beta2: Any
    eps: Any
    weight_decay: Any


# -- the population step (vmap or lax.map over members inside pmap over devices) ------------
# Each member's update is train.engine.step.update itself (the single run's step body) under
# jax.vmap (or lax.map), with the member's optimizer, schedule, dropout keys and rate; only
# the freezing of diverged or early-stopped members is the population's.

_POP_CACHE: dict[Any, tuple[Any, Any]] = {}

#: how the members' updates run in the step: "vmap" (batched: K small matrix products become
#: one), "scan" (``lax.map``: one member after the other, each exactly the single run's
#: operations, its working set the single run's), "auto": "scan" on CPUs, "vmap" on
#: accelerators. See docs/benchmarks.md, "Population sweeps".
MEMBER_LOOP = "auto"
MEMBER_LOOPS = ("auto", "vmap", "scan")


def member_loop(devices: list | None) -> str:
    """:data:`MEMBER_LOOP` resolved for the devices (``auto`` -> ``scan`` on CPU)."""
    if MEMBER_LOOP not in MEMBER_LOOPS:
        raise ValueError(f"MEMBER_LOOP={MEMBER_LOOP!r} is invalid: must be one of "
                         f"{', '.join(MEMBER_LOOPS)}")
    if MEMBER_LOOP != "auto":
        return MEMBER_LOOP
    platform = (devices[0] if devices else jax.devices()[0]).platform
    return "scan" if platform == "cpu" else "vmap"


def population_steps(model_cfg: Any, pop: Population, per_member_data: bool,
                     devices: list | None, documents: Documents | None = None
                     ) -> tuple[Any, Any]:
    """The population's pmapped train and eval steps (cached); ``documents``: the document
    mask (``--document-mask``'s delimiters), every member's loss the single run's."""
    rule = loss_scale_rule(pop.base)  # float16: each member has its own dynamic loss scale
    loop = member_loop(devices)
    key = (model_cfg, pop.key, per_member_data,
           None if devices is None else tuple(d.id for d in devices), rule, loop, documents)
    if key in _POP_CACHE:
        return _POP_CACHE[key]
    module = models.build(model_cfg)
    data_axis = 0 if per_member_data else None
    scaled = ("loss_scale",) if rule is not None else ()

    def member(state: dict, h: dict, batch: jax.Array, step: jax.Array) -> tuple[dict, dict]:
        params = state["params"]
        sched = pop.schedule(h)
        keys = dropout_keys(pop.seed(h), step, batch.shape[0]) if pop.dropout else None
        hp = pop.hparams(h)
        rate = (hp["dropout"](schedule_count(state["opt_state"])) if "dropout" in hp
                else pop.dropout_rate(h))
        new, m = update({"step": step, "params": params, "opt_state": state["opt_state"],
                         **{k: state[k] for k in scaled}},
                        batch, keys, tx=pop.optimizer(h, sched, params), schedule=sched,
                        loss_fn=model_loss(module, rate, documents=documents), hparams=hp,
                        reduce=lambda x: jax.lax.pmean(x, AXIS), loss_scale=rule)
        if rule is None:
            ok = jnp.isfinite(m["loss"]) & jnp.isfinite(m["grad_norm"]) & m["finite"]
        else:  # a skipped (overflowing) float16 step is no divergence: as in a single run
            ok = m["finite"] & (jnp.isfinite(m["loss"]) | m["skipped"])
        keep = state["active"] & ok

        def sel(new: jax.Array, old: jax.Array) -> jax.Array:
            return jnp.where(keep, new, old)

        out = {k: jax.tree.map(sel, new[k], state[k]) for k in ("params", "opt_state",
                                                                 *scaled)}
        out["active"] = keep
        extra = {k: m[k] for k in ("loss_scale", "skipped")} if scaled else {}
        extra.update({k: m[k] for k in hp})
        return out, {"loss": m["loss"], "grad_norm": m["grad_norm"], "lr": m["lr"], "ok": ok,
                     **extra}

    def step(state: dict, batch: jax.Array, h: dict) -> tuple[dict, dict]:
        mem = {k: state[k] for k in ("params", "opt_state", "active", *scaled)}
        if loop == "vmap":
            new, m = jax.vmap(member, in_axes=(0, 0, data_axis, None))(mem, h, batch,
                                                                        state["step"])
        elif per_member_data:  # "scan": one member after the other, each the single run's
            new, m = jax.lax.map(lambda xs: member(*xs, state["step"]), (mem, h, batch))
        else:
            new, m = jax.lax.map(lambda xs: member(*xs, batch, state["step"]), (mem, h))
        return {"step": state["step"] + 1, **new}, m

    def evaluate(params: Any, batch: jax.Array) -> jax.Array:
        def one(p: Any, b: jax.Array) -> jax.Array:
            loss = model_loss(module, documents=documents)
            return jax.lax.pmean(loss(p, b.reshape((-1, b.shape[-1])), None), AXIS)

        return jax.vmap(one, in_axes=(0, data_axis))(params, batch)

    out = (jax.pmap(step, axis_name=AXIS, donate_argnums=(0,), devices=devices),
           jax.pmap(evaluate, axis_name=AXIS, devices=devices))
    _POP_CACHE[key] = out
    return out




def population_state(model_cfg: Any, pop: Population) -> dict:
    """The population's initial host state: each member's init is its single run's (its init
    seed), stacked on a leading member axis, with its optimizer state, all members active and,
    with float16, one dynamic loss scaler per member (as each single run's)."""
    k = pop.k
    inits = {s: jax.device_get(models.init_params(model_cfg, jax.random.key(s)))
             for s in {c.seed for c in pop.cfgs}}
    params = jax.tree.map(lambda *xs: np.stack(xs), *[inits[c.seed] for c in pop.cfgs])
    opt_state = jax.vmap(lambda p, h: pop.optimizer(h, pop.schedule(h), p).init(p))(
        params, pop.h)
    state = {"step": np.zeros((), np.int32), "params": params,
             "opt_state": jax.device_get(opt_state), "active": np.ones(k, bool)}
    rule = loss_scale_rule(pop.base)
    if rule is not None:
        state["loss_scale"] = jax.tree.map(lambda x: np.stack([x] * k), rule.init_state())
    return state


def population_engine(model_cfg: Any, pop: Population, per_member_data: bool,
                      devices: list | None, documents: Documents | None = None) -> PmapEngine:
    """The population as an engine (:class:`train.engine.base.Engine`, as the pmap engine's
    replicated state): :func:`population_steps` with the members' hyperparameters bound
    (``tx`` is None: each member builds its optimizer inside the step); ``documents``:
    ``--document-mask``'s delimiters."""
    p_train, p_eval = population_steps(model_cfg, pop, per_member_data, devices, documents)
    h = replicate(pop.h, devices)
    put = batch_placer(devices)

    def place(batch: Any) -> Placed:
        return batch if isinstance(batch, Placed) else Placed(put(batch), np.shape(batch))

    return PmapEngine(None, lambda state, batch: p_train(state, place(batch).array, h),  # type: ignore[arg-type]
                      lambda params, batch: p_eval(params, place(batch).array), devices, place)
