"""GPT-2 124M training throughput and MFU on one accelerator, beside published reference points.

    python bench/bench_gpu.py                    # GPT-2 124M, bfloat16, batch 16 x 1024
    python bench/bench_gpu.py --batch 32 --steps 50
    python bench/bench_gpu.py --tiny             # a tiny model on the CPU (the test runs this)

One training step is forward + backward + global-norm clipping + AdamW on float32 master weights
with the model computing in bfloat16 (``models.GPT2Config(dtype="bfloat16")``), attention
through ``attn_implementation="cudnn"`` on a GPU (``jax.nn.dot_product_attention``'s fused
kernel), the train state donated to the jitted step, and no host synchronisation inside the
timed loop (the loss is fetched once, after it). Prints tokens/s and the model FLOPs utilisation
(``models.flops_per_token`` x tokens/s / the device's dense bf16 peak) next to the published
figures: nanoGPT's GPT-2 124M on one A100 reaches about 37% MFU (Karpathy, nanoGPT README,
bench.py) and llm.c's GPT-2 124M on one H100 about 38% (llm.c discussion #481).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: dense bfloat16 peak TFLOP/s by ``device_kind`` substring (vendor data sheets, no sparsity)
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,  # SXM; PCIe is 756
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 70.0,
    "V100": 125.0,  # fp16 tensor cores
    "TPU v5e": 197.0,
    "TPU v4": 275.0,
}
REFERENCES = (
    ("nanoGPT GPT-2 124M, 1x A100 (bf16, torch.compile)", 0.37),
    ("llm.c GPT-2 124M, 1x H100 (bf16)", 0.38),
)


def peak_tflops(device_kind: str) -> float | None:
    """The dense bf16 peak of a device kind, or None when unknown."""
    for key, value in PEAK_BF16_TFLOPS.items():
        if key.lower() in device_kind.lower():
            return value
    return None


def run(tiny: bool = False, batch: int = 16, seq: int = 1024, steps: int = 20, warmup: int = 3,
        peak: float | None = None) -> dict:
    """Train for ``warmup + steps`` steps; return the measurements as a dict."""
    import jax
    import numpy as np
    import optax

    import models as M

    dev = jax.devices()[0]
    attn = "cudnn" if dev.platform == "gpu" else None
    if tiny:
        cfg = M.get_config("gpt2", "tiny", dtype="bfloat16", attn_implementation=attn)
        seq = min(seq, cfg.block_size)
    else:
        cfg = M.get_config("gpt2", "124m", dtype="bfloat16", attn_implementation=attn)
    module = M.build(cfg)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(6e-4, b1=0.9, b2=0.95, weight_decay=0.1,
                                 mask=M.decay_mask))
    params = M.init_params(cfg, jax.random.key(0))
    state = (params, tx.init(params))
    rng = np.random.default_rng(0)
    batches = [jax.device_put(rng.integers(0, cfg.vocab_size, (batch, seq + 1), dtype=np.int32))
               for _ in range(2)]

    def loss_of(p: dict, tokens: jax.Array) -> jax.Array:
        return M.loss_fn(module.apply({"params": p}, tokens[:, :-1]), tokens[:, 1:])

    def step(state: tuple, tokens: jax.Array) -> tuple[tuple, jax.Array]:
        p, o = state
        loss, g = jax.value_and_grad(loss_of)(p, tokens)
        u, o = tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), loss

    train_step = jax.jit(step, donate_argnums=(0,))
    t0 = time.perf_counter()
    state, loss = train_step(state, batches[0])
    first_loss = float(loss)
    compile_s = time.perf_counter() - t0
    for i in range(warmup - 1):
        state, loss = train_step(state, batches[i % 2])
    jax.block_until_ready(state)
    losses = []
    t0 = time.perf_counter()
    for i in range(steps):  # no host sync inside: losses stay on the device
        state, loss = train_step(state, batches[i % 2])
        losses.append(loss)
    jax.block_until_ready(state)
    dt = time.perf_counter() - t0
    losses = [float(x) for x in jax.device_get(losses)]
    tokens_per_s = batch * seq * steps / dt
    flops = M.flops_per_token(cfg, seq) * tokens_per_s
    if peak is None:
        peak = peak_tflops(dev.device_kind)
    return {
        "device": dev.device_kind,
        "platform": dev.platform,
        "model": "gpt2-tiny" if tiny else "gpt2-124m",
        "params": M.count_params(cfg),
        "dtype": cfg.dtype,
        "attn_implementation": attn,
        "batch": batch,
        "seq": seq,
        "steps": steps,
        "compile_s": compile_s,
        "step_s": dt / steps,
        "tokens_per_s": tokens_per_s,
        "model_tflops": flops / 1e12,
        "peak_tflops": peak,
        "mfu": flops / (peak * 1e12) if peak else None,
        "first_loss": first_loss,
        "last_loss": losses[-1],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="GPT-2 'tiny' (CPU smoke run)")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (16; tiny 4)")
    ap.add_argument("--seq", type=int, default=1024, help="tokens per sequence")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (incl. compilation)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense bf16 peak (default: from the device kind)")
    a = ap.parse_args(argv)
    batch = a.batch or (4 if a.tiny else 16)
    r = run(a.tiny, batch, a.seq, a.steps, max(a.warmup, 1), a.peak_tflops)
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (unknown peak; --peak-tflops)"
    print(f"{r['model']} ({r['params'] / 1e6:.1f}M params, {r['dtype']}, attention "
          f"{r['attn_implementation'] or 'xla'}) on {r['device']}: batch {r['batch']} x "
          f"{r['seq']}, {r['step_s'] * 1e3:.1f} ms/step, {r['tokens_per_s']:,.0f} tokens/s, "
          f"{r['model_tflops']:.1f} model TFLOP/s, MFU {mfu}; compile {r['compile_s']:.1f} s; "
          f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}")
    for name, ref in REFERENCES:
        print(f"  reference: {name}: ~{ref:.0%} MFU")
    print(json.dumps(r))
    return r


if __name__ == "__main__":
    main()
