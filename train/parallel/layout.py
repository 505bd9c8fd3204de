"""The parallel layout: :class:`Layout`, the one object every engine and table reads, and
every check of the layout flags, against the model and the devices, in one place (cf.
torchtitan's ``ParallelDims``).

One device-count vocabulary for every engine: ``--devices=N`` is the number of devices a
process uses; on the mesh engine it must equal DP x TP x PP, and ``--data-parallel`` is
derived from it when unset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax

import models

from .._flag import bad as _bad
from .._flag import check_choice as _choice
from .._flag import check_float as _float
from .._flag import check_pos_int as _pos_int
from .._paths import layer_prefix, path_str

if TYPE_CHECKING:
    from ..config import TrainConfig

__all__ = ["Layout", "check_flags", "check_pipeline", "data_parallel_degree", "make_layout"]


@dataclass(frozen=True)
class Layout:
    """A mesh layout: ``data`` x ``tensor`` devices, sequence parallelism, ZeRO stage."""

    data: int = 1
    tensor: int = 1
    sequence_parallel: bool = False
    zero_stage: int = 0
    pipe: int = 1  # pipeline stages (train/parallel/pipeline.py)
    virtual: int = 1  # virtual pipeline chunks per stage

    @property
    def size(self) -> int:
        return self.data * self.tensor * self.pipe

    def describe(self) -> str:
        parts = [f"DP={self.data}"]
        if self.tensor > 1:
            parts.append(f"TP={self.tensor}" + ("+SP" if self.sequence_parallel else ""))
        if self.zero_stage:
            parts.append(f"ZeRO-{self.zero_stage}")
        if self.pipe > 1:
            parts.append(f"PP={self.pipe}" + (f"+vPP={self.virtual}" if self.virtual > 1 else ""))
        return " x ".join(parts)


def check_flags(c: TrainConfig) -> None:
    """The layout flags on their own (no model, no devices): types, ranges and the
    combinations the flags alone rule out. :func:`make_layout` checks them against the model
    and the devices."""
    _choice("engine", c.engine, ("pmap", "mesh"))
    for k in ("data_parallel", "tensor_parallel", "n_kv_head", "pipeline_parallel",
              "virtual_pipeline_parallel"):
        if getattr(c, k) is not None:
            _pos_int(k, getattr(c, k))
    if c.virtual_pipeline_parallel not in (None, 1) and not c.pipeline_parallel:
        raise _bad("virtual_pipeline_parallel", c.virtual_pipeline_parallel,
                   "needs --pipeline-parallel")
    if c.zero_stage is not None and c.zero_stage not in (0, 1, 2, 3):
        raise _bad("zero_stage", c.zero_stage, "must be 0, 1, 2 or 3 (3 = FSDP)")
    for k in ("sequence_parallel", "plan"):
        if not isinstance(getattr(c, k), bool):
            raise _bad(k, getattr(c, k), "must be true or false")
    if c.sequence_parallel and (c.tensor_parallel or 1) < 2:
        raise _bad("sequence_parallel", True,
                   f"needs --tensor-parallel >= 2 (got {c.tensor_parallel})")
    _float("plan_peak_tflops", c.plan_peak_tflops, lo=0.0, lo_open=True)
    if c.mesh_engine and c.devices is not None and (
            c.coordinator_address is None or c.num_processes is not None):
        # the device count is known from the flags: the layout must use exactly those devices
        data_parallel_degree(c, c.devices * (c.num_processes or 1))


def data_parallel_degree(c: TrainConfig, n_devices: int, dp: int | None = None) -> int:
    """The data-parallel degree of ``c`` on ``n_devices`` (all processes'): ``dp`` (default
    ``--data-parallel``) or, unset, n_devices / (TP x PP); ``ValueError`` naming the flags and
    the numbers unless DP x TP x PP equals the device count."""
    dp = c.data_parallel if dp is None else dp
    tp, pp = c.tensor_parallel or 1, c.pipeline_parallel or 1
    if dp is None:
        if n_devices % (tp * pp) == 0:
            return n_devices // (tp * pp)
        dp = max(1, n_devices // (tp * pp))  # the message below names the mismatch
    if dp * tp * pp == n_devices:
        return dp
    what = f"--data-parallel={dp}" + ("" if c.data_parallel is not None else " (derived)")
    prod = f"{what} x --tensor-parallel={tp}" + (f" x --pipeline-parallel={pp}" if pp > 1
                                                  else "")
    src = "" if c.devices is None else (
        f" (--devices={c.devices}" + (f" x {c.num_processes} processes" if (
            c.num_processes or 1) > 1 else "") + ")")
    raise ValueError(f"{prod} = {dp * tp * pp} is invalid: the product must equal the "
                     f"device count {n_devices}{src}")



def make_layout(cfg: TrainConfig, model_cfg: Any, n_devices: int, process_count: int = 1,
                local_devices: int | None = None) -> Layout:
    """The layout of ``cfg``'s flags on ``n_devices``; ``ValueError`` (naming the flag and the
    numbers) for an impossible one: the flags alone (:func:`check_flags`), then against the
    model and the devices. Runs before anything compiles."""
    check_flags(cfg)
    tp = cfg.tensor_parallel or 1
    if n_devices % tp:
        raise ValueError(f"--tensor-parallel={tp} is invalid: it must divide the device count "
                         f"{n_devices}")
    pp, vpp = cfg.pipeline_parallel or 1, cfg.virtual_pipeline_parallel or 1
    if pp > 1 or vpp > 1:  # pipeline parallelism (train/parallel/pipeline.py)
        if n_devices % (tp * pp):
            raise ValueError(f"--pipeline-parallel={pp} x --tensor-parallel={tp} = {pp * tp} "
                             f"is invalid: it must divide the device count {n_devices}")
        check_pipeline(cfg, model_cfg)
    dp = data_parallel_degree(cfg, n_devices)
    checks = [("n_head", model_cfg.n_head)]
    if hasattr(model_cfg, "n_kv_head"):
        checks.append(("n_kv_head", model_cfg.n_kv_head))
    hidden = getattr(model_cfg, "intermediate_size", 4 * model_cfg.n_embd)
    # the embedding/head rows: the padded vocabulary (--vocab-pad-to) is what is sharded
    checks += [("padded vocabulary", model_cfg.padded_vocab_size), ("MLP width", hidden)]
    for what, n in checks:
        if n % tp:
            raise ValueError(f"--tensor-parallel={tp} is invalid: it must divide the model's "
                             f"{what} ({n})")
    if cfg.sequence_parallel and cfg.seq_len % tp:
        raise ValueError(f"--sequence-parallel with --tensor-parallel={tp} is invalid: "
                         f"--seq-len={cfg.seq_len} is not divisible by {tp}")
    if dp % process_count:
        raise ValueError(f"--data-parallel={dp} is invalid: it must be a multiple of the "
                         f"process count {process_count} (tensor parallelism stays within a "
                         "process)")
    if local_devices is not None and local_devices % tp:
        raise ValueError(f"--tensor-parallel={tp} is invalid: it must divide the devices of "
                         f"one process ({local_devices})")
    return Layout(data=dp, tensor=tp, sequence_parallel=bool(cfg.sequence_parallel),
                  zero_stage=cfg.zero_stage or 0, pipe=pp, virtual=vpp)


def check_pipeline(cfg: TrainConfig, model_cfg: Any) -> None:
    """``ValueError`` (naming the flags and the numbers) for an impossible pipeline layout;
    runs before anything compiles."""
    pp, vpp = cfg.pipeline_parallel or 1, cfg.virtual_pipeline_parallel or 1
    if pp == 1 and vpp == 1:
        return
    L = model_cfg.n_layer
    if L % (pp * vpp):
        raise ValueError(f"--pipeline-parallel={pp} x --virtual-pipeline-parallel={vpp} = "
                         f"{pp * vpp} is invalid: it must divide the model's layers "
                         f"(n_layer={L})")
    if cfg.grad_accum < pp:
        raise ValueError(f"--grad-accum={cfg.grad_accum} is invalid with --pipeline-parallel="
                         f"{pp}: the pipeline needs at least {pp} micro-batches")
    lr_mults = getattr(cfg, "lr_mults", None) or {}
    if lr_mults:  # the engine stacks the layers: a group must take all of them or none
        params = jax.eval_shape(lambda: models.init_params(model_cfg, jax.random.key(0)))
        prefix = layer_prefix(params)
        rel = [path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params[prefix + "0"])]
        for pat in lr_mults:
            for r in rel:
                hits = {pat in f"{prefix}{i}/{r}" for i in range(L)} | {pat in f"{prefix}*/{r}"}
                if len(hits) > 1:
                    raise ValueError(
                        f"--lr-mults pattern {pat!r} is invalid with --pipeline-parallel={pp}: "
                        f"it selects some layers' {r} and not others (the pipeline stores the "
                        f"layers stacked as {prefix}*); use a pattern that selects all layers "
                        "or none")
    if getattr(model_cfg, "dropout", 0.0) > 0:
        raise ValueError(f"--dropout={model_cfg.dropout} is invalid with --pipeline-parallel="
                         f"{pp}: pipelined training is deterministic (dropout 0)")
