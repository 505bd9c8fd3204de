"""Generation throughput: ``models.generate`` with the KV cache vs the cache-free loop.

Greedy decoding, batch 1, a 16-token prompt, random weights, on the trainer's default model
(GPT-2 2 layers x 128, byte vocabulary) and on GPT-2 124M's shape. Tokens/s counts the new
tokens; the best of ``--reps`` timed runs of the executable (compiled ahead of time). The two
paths must give the same tokens (checked).

    python bench/bench_generate.py                 # both models, 64 and 256 new tokens
    python bench/bench_generate.py --models default --reps 5

The cache-free loop re-runs the whole window for every token, so on GPT-2 124M at 256 tokens
one run takes minutes on 2 CPU cores: it is timed once (``--reps-slow``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import models as M
from models import decode

MODELS = {
    # the trainer's default: --model gpt2 --model-size micro, byte tokenizer
    "default": lambda block: M.get_config("gpt2", "tiny", n_layer=2, n_head=4, n_embd=128,
                                          block_size=block),
    "gpt2-124m": lambda block: M.get_config("gpt2", "124m", block_size=block),
}


def tokens_per_s(cfg: M.Config, params: dict, prompt: np.ndarray, n: int, use_cache: bool,
                 reps: int) -> tuple[float, float, np.ndarray]:
    """(new tokens/s, compile seconds, tokens) of the executable ``models.generate`` runs, compiled
    ahead of time so that every timed run is a run (the slow path is too slow to run twice)."""
    knobs = (jnp.float32(0.0), jnp.int32(cfg.vocab_size), jnp.float32(1.0))
    key = jax.random.key(0)
    t0 = time.perf_counter()
    if use_cache:
        tb = decode.prompt_bucket(prompt.shape[1], cfg.block_size)
        padded = jnp.pad(jnp.asarray(prompt), ((0, 0), (0, tb - prompt.shape[1])))
        args = (params, padded, jnp.int32(prompt.shape[1]))
        exe = decode.generate_cached.lower(cfg, *args, n, key, *knobs).compile()
        run = lambda: np.asarray(exe(*args, key, *knobs))  # noqa: E731
    else:
        args = (params, jnp.asarray(prompt))
        exe = decode.generate_windowed.lower(cfg, *args, n, key, *knobs).compile()
        run = lambda: np.asarray(exe(*args, key, *knobs))[:, prompt.shape[1]:]  # noqa: E731
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(max(reps, 1)):  # the first run is timed too: the executable is compiled
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return n / best, compile_s, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--new-tokens", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--reps-slow", type=int, default=1,
                    help="reps of the cache-free loop on gpt2-124m")
    a = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()} ({platform.processor() or '?'}, "
          f"{os.cpu_count()} cpus); batch 1, prompt {a.prompt_len} tokens, greedy")
    print("| model | params | new tokens | cached tok/s | cache-free tok/s | ratio "
          "| compile s (cached / free) |")
    print("|---|---|---|---|---|---|---|")
    block = max(512, a.prompt_len + max(a.new_tokens))
    for name in a.models:
        cfg = MODELS[name](block if name == "default" else max(1024, block))
        params = M.init_params(cfg, jax.random.key(0))
        prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, a.prompt_len),
                                                   dtype=np.int32)
        for n in a.new_tokens:
            fast, fast_first, out_c = tokens_per_s(cfg, params, prompt, n, True, a.reps)
            reps = a.reps_slow if name == "gpt2-124m" else a.reps
            slow, slow_first, out_p = tokens_per_s(cfg, params, prompt, n, False, reps)
            same = "" if np.array_equal(out_c, out_p) else " (tokens differ!)"
            print(f"| {name} | {M.num_params(cfg) / 1e6:.2f}M | {n} | {fast:,.0f} | {slow:,.1f} "
                  f"| {fast / slow:.1f}x{same} | {fast_first:.1f} / {slow_first:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
