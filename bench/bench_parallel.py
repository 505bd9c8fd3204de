"""Every mesh layout side by side with pmap on 8 simulated CPU devices: tokens/s and bytes.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python bench/bench_parallel.py

The 8 "devices" share the machine's cores, so the numbers measure the overhead of each
layout's collectives and partitioning on one host, not scaling: on real accelerators TP and
ZeRO trade communication for memory very differently. Same model, same global batch (8 rows of
``--seq`` tokens per step), float32. The per-device bytes are measured from the arrays'
``addressable_shards``. Then the planner's table (``python -m train --plan``) for the same
model. Options: ``--model gpt2|llama3``, ``--steps``, ``--n-embd``, ``--seq``.

``--pipeline``: instead, the pipeline rows (train/parallel/pipeline.py): step time vs the number of
micro-batches m for PP=4 and PP=4 x vPP=2 (8 layers), against the bubble formula
(N-1)/(mV+N-1), and the activations kept for the backward pass per stage with and without
``--recompute``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # read when JAX is imported (chex imports it)
    import chex

    chex.set_n_cpu_devices(8)  # XLA_FLAGS, read when the backend starts (after this)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

import models
from train import TrainConfig, build_schedule
from train.data import Batcher, TokenData
from train.engine.mesh import build
from train.engine.pmap import make_train_step, replicate
from train.optim import make_optimizer
from train.parallel.layout import make_layout
from train.parallel.shardings import fmt_bytes, shard_bytes
from train.run.memplan import memory_plan

LAYOUTS = {
    "pmap DP=8": {},
    "mesh DP=8": dict(engine="mesh"),
    "ZeRO-1 x 8": dict(zero_stage=1),
    "ZeRO-2 x 8": dict(zero_stage=2),
    "ZeRO-3 x 8": dict(zero_stage=3),
    "TP=4 x DP=2": dict(tensor_parallel=4),
    "TP=4+SP x DP=2": dict(tensor_parallel=4, sequence_parallel=True),
    "TP=2 x ZeRO-1 x DP=4": dict(tensor_parallel=2, zero_stage=1),
    "TP=2+SP x ZeRO-3 x 4": dict(tensor_parallel=2, sequence_parallel=True, zero_stage=3),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2", choices=("gpt2", "llama3"))
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    extra = dict(n_kv_head=4) if args.model == "llama3" else {}
    data = TokenData([np.random.default_rng(0).integers(0, 256, 200_000).astype(np.uint16)], "b")
    print(f"{args.model} 4 x {args.n_embd} (8 heads), seq {args.seq}, global batch 8 rows, "
          f"float32, {jax.device_count()} simulated {jax.devices()[0].platform} devices on "
          f"{os.cpu_count()} cores (overhead, not scaling)")
    print(f"{'layout':<22} {'tokens/s':>10} {'vs pmap':>8} {'params/dev':>11} "
          f"{'grads/dev':>10} {'opt/dev':>10}")
    base_tps = None
    for name, lay in LAYOUTS.items():
        tp = lay.get("tensor_parallel", 1)
        cfg = TrainConfig.from_dict(dict(
            model=args.model, model_size="tiny", n_layer=4, n_head=8, n_embd=args.n_embd,
            seq_len=args.seq, batch_size=tp, steps=args.steps, lr_scheduler="cosine",
            sample_tokens=0, **extra, **lay))
        model_cfg = models.get_config(cfg.model, "tiny", vocab_size=256, **cfg.model_overrides())
        sched = build_schedule(cfg)
        params = jax.device_get(models.init_params(model_cfg, jax.random.key(0)))
        tx = make_optimizer(cfg, sched, params)
        host = {"step": np.zeros((), np.int32), "params": params,
                "opt_state": jax.device_get(tx.init(params))}
        if cfg.mesh_engine:
            layout = make_layout(cfg, model_cfg, jax.device_count())
            eng = build(model_cfg, tx, sched, 0, layout, params)
            state, step, reps = eng.put_state(host), eng.train, layout.data
            b = eng.bytes_per_device(state)
        else:
            step, reps = make_train_step(model_cfg, tx, 0), jax.device_count()
            state = replicate(host, None)
            pb = shard_bytes(state["params"])
            b = {"params": pb, "grads": pb, "opt_state": shard_bytes(state["opt_state"])}
        batcher = Batcher(data, seq_len=cfg.seq_len, batch_size=cfg.batch_size, grad_accum=1,
                          local_devices=reps)
        batches = [batcher.batch(t) for t in range(args.steps + 2)]
        for t in range(2):  # compile + warm up
            state, m = step(state, batches[t])
        jax.block_until_ready(m)
        t0 = time.perf_counter()
        for t in range(2, args.steps + 2):
            state, m = step(state, batches[t])
        jax.block_until_ready(m)
        tps = 8 * cfg.seq_len * args.steps / (time.perf_counter() - t0)
        base_tps = base_tps or tps
        print(f"{name:<22} {tps:>10,.0f} {tps / base_tps:>7.2f}x {fmt_bytes(b['params']):>11} "
              f"{fmt_bytes(b['grads']):>10} {fmt_bytes(b['opt_state']):>10}", flush=True)

    print("\nplanner (python -m train --plan), same model and batch, per device:")
    print(f"{'layout':<22} {'params':>10} {'grads':>10} {'opt':>10} {'temps':>10} "
          f"{'total':>10} {'GFLOP/step':>11}")
    for name, lay in list(LAYOUTS.items())[1:]:
        tp = lay.get("tensor_parallel", 1)
        cfg = TrainConfig.from_dict(dict(
            model=args.model, model_size="tiny", n_layer=4, n_head=8, n_embd=args.n_embd,
            seq_len=args.seq, batch_size=tp, sample_tokens=0, **extra, **lay))
        model_cfg = models.get_config(cfg.model, "tiny", vocab_size=256, **cfg.model_overrides())
        p = memory_plan(cfg, model_cfg, build_schedule(cfg))
        print(f"{name:<22} {fmt_bytes(p['params']):>10} {fmt_bytes(p['grads']):>10} "
              f"{fmt_bytes(p['opt_state']):>10} {fmt_bytes(p['temporaries']):>10} "
              f"{fmt_bytes(p['total']):>10} {p['xla_flops'] / 1e9:>11.3f}", flush=True)


def mesh_engine(cfg: TrainConfig, vocab: int) -> tuple:
    """The mesh engine for ``cfg`` (a tiny model of ``vocab`` tokens, fresh parameters): the
    engine, its device state and the layout."""
    model_cfg = models.get_config(cfg.model, "tiny", vocab_size=vocab, **cfg.model_overrides())
    sched = build_schedule(cfg)
    params = jax.device_get(models.init_params(model_cfg, jax.random.key(0)))
    tx = make_optimizer(cfg, sched, params)
    host = {"step": np.zeros((), np.int32), "params": params,
            "opt_state": jax.device_get(tx.init(params))}
    layout = make_layout(cfg, model_cfg, jax.device_count())
    eng = build(model_cfg, tx, sched, 0, layout, params)
    return eng, eng.put_state(host), layout


def pipeline_rows(args: argparse.Namespace) -> None:
    """Step time vs micro-batches against the bubble formula; activation bytes vs recompute.

    In this compiler-visible formulation an idle stage computes on a dummy slot, so on shared
    CPU cores the bubble shows as extra compute: time per step ~ (m V + N - 1) chunk steps.
    The measured bubble is ``1 - (m V / (m_max V)) * t(m_max) / t(m)`` scaled by the formula's
    value at ``m_max`` (i.e. the idle share relative to the largest m)."""
    from train.parallel.pipeline import bubble_fraction, pipeline_loss

    data = TokenData([np.random.default_rng(0).integers(0, 256, 200_000).astype(np.uint16)], "b")
    ms = (4, 8, 16)
    print(f"{args.model} 8 x {args.n_embd}, seq {args.seq}, 1 row per micro-batch, float32")
    print(f"{'layout':<16} {'m':>3} {'ms/step':>9} {'ms/micro':>9} {'bubble':>8} "
          f"{'formula':>8}")
    for name, lay in {"PP=4": dict(pipeline_parallel=4),
                      "PP=4 x vPP=2": dict(pipeline_parallel=4,
                                           virtual_pipeline_parallel=2)}.items():
        times = {}
        for m in ms:
            cfg = TrainConfig.from_dict(dict(
                model=args.model, model_size="tiny", n_layer=8, n_head=8, n_embd=args.n_embd,
                seq_len=args.seq, batch_size=1, grad_accum=m, steps=args.steps,
                data_parallel=2, sample_tokens=0, **lay))
            eng, state, layout = mesh_engine(cfg, 256)
            batcher = Batcher(data, seq_len=cfg.seq_len, batch_size=1, grad_accum=m,
                              local_devices=layout.data)
            for t in range(2):
                state, met = eng.train(state, batcher.batch(t))
            jax.block_until_ready(met)
            t0 = time.perf_counter()
            for t in range(args.steps):
                state, met = eng.train(state, batcher.batch(t + 2))
            jax.block_until_ready(met)
            times[m] = (time.perf_counter() - t0) / args.steps
        v = lay.get("virtual_pipeline_parallel", 1)
        top = ms[-1]
        per_micro_ideal = times[top] * (1 - bubble_fraction(top, 4, v)) / top
        for m in ms:
            measured = 1 - per_micro_ideal * m / times[m]
            print(f"{name:<16} {m:>3} {times[m] * 1e3:>9.1f} {times[m] / m * 1e3:>9.1f} "
                  f"{measured:>8.2f} {bubble_fraction(m, 4, v):>8.2f}", flush=True)

    print("\nactivations kept for the backward pass (jax.vjp residuals), whole model / stage:")
    from jax.sharding import Mesh

    mesh = Mesh(np.array(jax.devices()[:4]).reshape(1, 4), ("data", "pipe"))
    for rc in ({}, dict(remat="selective"), dict(remat="full", remat_method="block",
                                                   remat_num_layers=1),
               dict(remat="full")):
        mc = models.get_config(args.model, "tiny", vocab_size=256, n_layer=8, n_head=8,
                               n_embd=args.n_embd, block_size=args.seq, **rc)
        params = models.init_params(mc, jax.random.key(0))
        batch = jax.numpy.zeros((8, 2, args.seq + 1), jax.numpy.int32)
        with jax.set_mesh(mesh):
            _, vjp = jax.vjp(lambda p, mc=mc, b=batch: pipeline_loss(mc, p, b, 4, 2), params)
        ids = {id(x) for x in jax.tree.leaves(params)}
        nb = sum(x.nbytes for x in jax.tree.leaves(vjp) if id(x) not in ids)
        label = rc.get("remat", "none") + (f" {rc['remat_method']} {rc['remat_num_layers']}"
                                           if "remat_method" in rc else "")
        print(f"  PP=4 x vPP=2, m=8, recompute {label:<16} {fmt_bytes(nb):>10} total, "
              f"{fmt_bytes(nb / 4):>10} per stage", flush=True)


if __name__ == "__main__":
    if "--pipeline" in sys.argv:
        sys.argv.remove("--pipeline")
        ap = argparse.ArgumentParser()
        ap.add_argument("--model", default="gpt2", choices=("gpt2", "llama3"))
        ap.add_argument("--n-embd", type=int, default=64)
        ap.add_argument("--seq", type=int, default=32)
        ap.add_argument("--steps", type=int, default=5)
        pipeline_rows(ap.parse_args())
    else:
        main()
