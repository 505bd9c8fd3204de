"""Pipeline step time with a real-sized vocabulary: where the LM head's placement shows.

    python bench/bench_pipeline_head.py --vocab 8192

GPT-2 8 x 64, sequence 32, ``--grad-accum=8`` micro-batches of 1 row, DP x PP = 8 simulated CPU
devices (PP=4 and PP=8), float32: best of 3 x 3 steps of the mesh engine's compiled step. The
pipeline's final norm, head and loss split the micro-batches over the stages; run the script on
a commit before that change (83301d4) and after to compare (docs/parallelism.md, "Schedule";
the numbers are in docs/benchmarks.md). The 8 devices share the machine's cores, so redundant
work on any device costs wall time.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

# first: bench/ is the script's directory; it asks for 8 CPU devices before jax starts
from bench_parallel import mesh_engine

from train import TrainConfig
from train.data import Batcher, TokenData


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--n-embd", type=int, default=64)
    args = ap.parse_args()
    V = args.vocab
    data = TokenData([np.random.default_rng(0).integers(0, V, 200_000).astype(np.uint16)], "b")
    for pp in (4, 8):
        cfg = TrainConfig.from_dict(dict(
            model="gpt2", model_size="tiny", n_layer=8, n_head=4, n_embd=args.n_embd,
            seq_len=32, batch_size=1, grad_accum=8, steps=5, data_parallel=8 // pp,
            sample_tokens=0, pipeline_parallel=pp))
        eng, state, lay = mesh_engine(cfg, V)
        batcher = Batcher(data, seq_len=32, batch_size=1, grad_accum=8, local_devices=lay.data)
        for t in range(2):  # compile and warm up
            state, met = eng.train(state, batcher.batch(t))
        jax.block_until_ready(met)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for t in range(3):
                state, met = eng.train(state, batcher.batch(t))
            jax.block_until_ready(met)
            best = min(best, (time.perf_counter() - t0) / 3)
        print(f"PP={pp} x DP={8 // pp}, vocabulary {V}: {best * 1e3:.1f} ms/step", flush=True)


if __name__ == "__main__":
    main()
