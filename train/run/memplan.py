"""The memory planner: ``python -m train --plan`` (with the usual model and layout flags).

Lowers and compiles the mesh engine's train step with abstract arrays
(``jax.ShapeDtypeStruct`` with their shardings: nothing is allocated) on the layout's devices,
simulated on the CPU, and reports per device: parameters, gradients and optimizer state (from
the shardings), activations and temporaries (the compiled step's ``memory_analysis``), FLOPs
per step (``cost_analysis``, checked against the analytic 6N + attention count) and a step-time
estimate at ``--plan-peak-tflops``. The gradients live inside the step, so XLA counts them among
the temporaries; the total is arguments + temporaries (outputs alias the donated state).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import models

from ..engine.mesh import build
from ..optim import make_optimizer
from ..parallel.layout import make_layout
from ..parallel.shardings import DATA, fmt_bytes, shard_bytes
from .setup import prepare_run

__all__ = ["GB", "memory_plan", "plan_run", "print_plan"]

GB = 1e9
#: per-device memory of common accelerators, for the "fits" columns
CAPACITIES = {"80 GB (A100/H100)": 80 * GB, "141 GB (H200)": 141 * GB}


def memory_plan(cfg: Any, model_cfg: Any, schedule: Any,
                n_devices: int | None = None) -> dict[str, Any]:
    """Per-device memory and FLOPs of one train step of ``cfg`` (a dict; see module doc)."""
    n = n_devices or (cfg.devices * (cfg.num_processes or 1) if cfg.devices
                      else len(jax.devices()))
    layout = make_layout(cfg, model_cfg, n)
    params = jax.eval_shape(lambda: models.init_params(model_cfg, jax.random.key(0)))
    tx = make_optimizer(cfg, schedule, params)
    eng = build(model_cfg, tx, schedule, cfg.seed, layout, params)
    opt = jax.eval_shape(tx.init, params)
    state = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params, "opt_state": opt}
    abstract = eng.abstract(state)  # the engine's form (pipeline: layers stacked over pipe)
    rows = layout.data * cfg.batch_size
    batch = jax.ShapeDtypeStruct((cfg.grad_accum, rows, cfg.seq_len + 1), jnp.int32,
                                 sharding=jax.sharding.NamedSharding(
                                     eng.mesh, jax.sharding.PartitionSpec(None, DATA, None)))
    t0 = time.perf_counter()
    with nn.logical_axis_rules(eng.rules), jax.set_mesh(eng.mesh):
        lowered = eng.train_jit.lower(abstract, batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    tokens = cfg.grad_accum * rows * cfg.seq_len
    analytic = models.flops_per_token(model_cfg, cfg.seq_len) * tokens / layout.size
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    out = {
        "layout": layout.describe(), "devices": layout.size,
        "params": shard_bytes(abstract["params"], eng.state_shardings["params"]),
        "grads": shard_bytes(abstract["params"], eng.grad_shardings),
        "opt_state": shard_bytes(abstract["opt_state"], eng.state_shardings["opt_state"]),
        "arguments": mem.argument_size_in_bytes, "temporaries": mem.temp_size_in_bytes,
        "outputs": mem.output_size_in_bytes, "aliased": mem.alias_size_in_bytes,
        "xla_flops": flops, "analytic_flops": analytic, "tokens_per_step": tokens,
        "lower_s": t1 - t0, "compile_s": t2 - t1,
    }
    out["total"] = (mem.argument_size_in_bytes + mem.temp_size_in_bytes
                    + mem.output_size_in_bytes - mem.alias_size_in_bytes)
    out["step_s"] = max(flops, analytic) / (cfg.plan_peak_tflops * 1e12)
    out["fits"] = {k: out["total"] <= v for k, v in CAPACITIES.items()}
    return out


def format_plan(p: dict[str, Any], peak_tflops: float) -> str:
    fits = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in p["fits"].items())
    return "\n".join([
        f"plan: {p['layout']} on {p['devices']} devices (compiled on the CPU in "
        f"{p['compile_s']:.0f} s; nothing allocated); per device:",
        f"  parameters      {fmt_bytes(p['params'])}",
        f"  gradients       {fmt_bytes(p['grads'])}  (inside the step: part of the temporaries)",
        f"  optimizer state {fmt_bytes(p['opt_state'])}",
        f"  step arguments  {fmt_bytes(p['arguments'])}; activations + temporaries "
        f"{fmt_bytes(p['temporaries'])}; total {fmt_bytes(p['total'])}",
        f"  FLOPs per step  {p['xla_flops']:.3e} (XLA cost analysis), {p['analytic_flops']:.3e} "
        f"(6N + attention, {p['tokens_per_step']:,} tokens / {p['devices']} devices)",
        f"  step time       {p['step_s'] * 1e3:.1f} ms at {peak_tflops:g} TFLOP/s per device "
        "(100% utilisation: a lower bound)",
        f"  fits: {fits}",
    ])


def print_plan(cfg: Any, model_cfg: Any, schedule: Any,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Plan ``cfg`` on all visible devices and print the table; returns the plan dict."""
    p = memory_plan(cfg, model_cfg, schedule)
    log(format_plan(p, cfg.plan_peak_tflops))
    return p


def plan_run(cfg: Any, workdir: str) -> dict[str, Any]:
    """``python -m train --plan``: the run's setup (:func:`train.run.setup.prepare_run`, up to
    the model configuration), then :func:`print_plan` of the size's own vocabulary (e.g.
    LLaMA-3's 128256, not the tokenizer's). With ``--init-from`` the model is the source's
    (its architecture and vocabulary, the run's dtype, context and recompute: the
    configuration the run's weights are checked against when it loads them); the plan reads
    no weights, only shapes."""
    setup = prepare_run(cfg, workdir, "plan")
    plan_cfg = setup.model_cfg if setup.init is not None else models.get_config(
        cfg.model, cfg.base_size(), **cfg.model_overrides())
    return print_plan(setup.cfg, plan_cfg, setup.schedule, setup.console.print)
