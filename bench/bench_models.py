"""Forward+backward throughput of the Flax GPT-2 / LLaMA-3 vs the transformers PyTorch models.

Both frameworks run the same weights (the HF model's, imported with ``models.from_hf``) on the
same batch; one "step" is loss + gradients w.r.t. all parameters (no optimizer update). JAX
runs a jitted ``value_and_grad``; PyTorch runs eager ``loss.backward()``. Timed steps alternate
between the two frameworks; the median step time is reported.

    python bench/bench_models.py                      # tiny + small, both models
    python bench/bench_models.py --sizes small --batch 8 --seq 256 --steps 5

Needs the ``test`` extra (torch, transformers). No downloads.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import models as M


def _hf_model(cfg: M.Config, attn: str) -> Any:
    import torch
    import transformers

    d = M.hf_config(cfg)
    d.pop("architectures")
    if d.pop("model_type") == "gpt2":
        hc, cls = transformers.GPT2Config(**d), transformers.GPT2LMHeadModel
    else:
        hc, cls = transformers.LlamaConfig(**d), transformers.LlamaForCausalLM
    hc._attn_implementation = attn
    torch.manual_seed(0)
    return cls(hc).train()


def _time_interleaved(fns: list[Any], steps: int, warmup: int) -> tuple[list[float], list[float]]:
    """Median seconds per step of each function and its first-call time (incl. compilation).

    Timed steps alternate between the functions, so a change in machine load affects them alike.
    """
    first = []
    for fn in fns:
        t0 = time.perf_counter()
        fn()
        first.append(time.perf_counter() - t0)
        for _ in range(max(warmup - 1, 0)):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(steps):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [float(np.median(ts)) for ts in times], first


def bench_one(
    model: str, size: str, batch: int, seq: int, steps: int, warmup: int, attn: str
) -> dict:
    import torch

    cfg = M.get_config(model, size)
    seq = min(seq, cfg.block_size)
    hf = _hf_model(cfg, attn)
    params = M.from_hf(cfg, hf.state_dict())
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq), dtype=np.int32)

    module = M.build(cfg)
    inputs, targets = jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:])

    @jax.jit
    def step(p: dict) -> tuple[jax.Array, dict]:
        return jax.value_and_grad(
            lambda p: M.loss_fn(module.apply({"params": p}, inputs), targets)
        )(p)

    def jax_step() -> float:
        loss, grads = step(params)
        jax.block_until_ready(grads)
        return float(loss)

    t_tokens = torch.tensor(tokens, dtype=torch.long)

    def torch_step() -> float:
        hf.zero_grad(set_to_none=True)
        loss = hf(input_ids=t_tokens[:, :-1], labels=t_tokens[:, :-1]).loss
        loss.backward()
        return float(loss.detach())

    # same loss on the same weights (HF shifts labels inside: compare on inputs[:, :-1])
    ref = float(hf(input_ids=t_tokens, labels=t_tokens).loss.detach())
    ours = float(M.loss_fn(module.apply({"params": params}, tokens)[:, :-1], tokens[:, 1:]))

    (jax_s, torch_s), (jax_first, _) = _time_interleaved([jax_step, torch_step], steps, warmup)
    n_tok = batch * (seq - 1)
    flops = M.flops_per_token(cfg, seq - 1) * n_tok
    return dict(
        model=model,
        size=size,
        params=M.count_params(cfg),
        batch=batch,
        seq=seq - 1,
        jax_tok_s=n_tok / jax_s,
        torch_tok_s=n_tok / torch_s,
        ratio=torch_s / jax_s,
        jax_gflops=flops / jax_s / 1e9,
        jax_compile_s=jax_first,
        loss_diff=abs(ref - ours),
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="gpt2,llama3", help="comma list of gpt2,llama3")
    ap.add_argument("--sizes", default="tiny,small", help="comma list of config sizes")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128, help="tokens per row (cropped to block)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps (incl. compile)")
    ap.add_argument("--torch-attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    args = ap.parse_args(argv)

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    print(
        f"# jax {jax.__version__} ({jax.devices()[0].platform}, {jax.device_count()} dev), "
        f"torch {torch.__version__} ({args.threads} threads, attn={args.torch_attn}), "
        f"transformers {transformers.__version__}, {platform.processor() or platform.machine()}"
        f", {os.cpu_count()} cpus"
    )
    header = (
        "| model | size | params | batch x seq | JAX tok/s | PyTorch tok/s | JAX/PyTorch "
        "| JAX GFLOP/s | JAX compile s | loss diff |"
    )
    print(header)
    print("|---" * 10 + "|")
    for model in args.models.split(","):
        for size in args.sizes.split(","):
            r = bench_one(
                model, size, args.batch, args.seq, args.steps, args.warmup, args.torch_attn
            )
            print(
                f"| {r['model']} | {r['size']} | {r['params'] / 1e6:.2f}M "
                f"| {r['batch']} x {r['seq']} | {r['jax_tok_s']:,.0f} | {r['torch_tok_s']:,.0f} "
                f"| {r['ratio']:.2f}x | {r['jax_gflops']:.1f} | {r['jax_compile_s']:.1f} "
                f"| {r['loss_diff']:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
