"""The train step fed from a real token shard against the same step fed from memory (issue 25).

    python bench/bench_data.py                      # markdown on stdout
    python bench/bench_data.py --tokens 50000000 --blocks 7 --steps 20

A ``.bin`` token shard (``train.shards.write_bin``, the llm.c layout ``train.prepare`` writes)
of ``--tokens`` random byte-vocabulary tokens is memory-mapped as the trainer reads it
(``train.shards.read_bin``); the same tokens as an in-memory array feed a second
:class:`train.data.Batcher` with the same seed, so both give the same batch at every step
(checked). One process compiles the run's step (``train.engine.pmap.pmap_engine``, the
default engine) once and times alternating blocks of ``--steps`` steps of each source, fed as
the run's loop feeds them: :class:`train.data.Prefetcher` builds each step's batch in its
thread ``PREFETCH_DEPTH`` steps ahead and places it on the device there
(``engine.place_batch``). A third row feeds the same steps without prefetching (the batch
built and transferred by the step's caller), to show what the thread takes off the step.
Per-step wall time and the process's CPU time per step (the prefetch thread's reading
included), median block; the per-block ratios show the machine's noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=20_000_000, help="tokens in the shard")
    ap.add_argument("--model-size", default="tiny")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
    ap.add_argument("--blocks", type=int, default=5, help="alternating timed blocks")
    a = ap.parse_args()
    sys.path.insert(0, ROOT)
    import jax
    import numpy as np

    import models
    from train import TrainConfig, build_schedule
    from train.data import Batcher, Prefetcher
    from train.engine.pmap import pmap_engine, replicate
    from train.run.loop import PREFETCH_DEPTH
    from train.shards import TokenData, read_bin, write_bin

    tmp = tempfile.mkdtemp(prefix="bench-data-")
    path = os.path.join(tmp, "train.bin")
    tokens = np.random.default_rng(0).integers(0, 256, size=a.tokens).astype(np.uint16)
    write_bin(path, tokens)
    shard = read_bin(path)  # a memory map, as the trainer reads prepared data
    assert isinstance(shard, np.memmap)
    devices = jax.local_devices()[:1]
    cfg = TrainConfig(model="gpt2", model_size=a.model_size, devices=1, steps=100_000,
                      batch_size=a.batch_size, seq_len=a.seq_len, tensorboard=False)
    mcfg = models.get_config("gpt2", cfg.base_size(), vocab_size=256, **cfg.model_overrides())
    params = jax.device_get(models.init_params(mcfg, jax.random.key(0)))
    eng = pmap_engine(mcfg, cfg, build_schedule(cfg), params, devices)

    def batcher(data: np.ndarray) -> Batcher:
        return Batcher(TokenData([data], "train"), a.seq_len, a.batch_size, 1, 1, seed=0)

    sources = {"token shard (.bin, memory-mapped)": batcher(shard),
               "in-memory array": batcher(np.array(tokens))}
    b_shard, b_mem = sources.values()
    for t in (0, 1, 1000, 77_777):  # the same batch from both: only the storage differs
        assert np.array_equal(b_shard.batch(t), b_mem.batch(t)), t
    state = replicate({"step": np.zeros((), np.int32), "params": params,
                       "opt_state": jax.device_get(eng.tx.init(params))}, devices)

    step = 0

    cpu: dict[str, list[float]] = {}

    def block(b: Batcher, prefetch: bool, n: int, name: str = "") -> float:
        nonlocal state, step
        t0, c0 = time.perf_counter(), time.process_time()
        if prefetch:
            with Prefetcher(b.batch, start=step, depth=PREFETCH_DEPTH,
                            place=eng.place_batch) as p:
                for t in range(step, step + n):
                    state, m = eng.train(state, p.get(t))
                jax.block_until_ready(m["loss"])
        else:
            for t in range(step, step + n):
                state, m = eng.train(state, b.batch(t))
            jax.block_until_ready(m["loss"])
        step += n
        cpu.setdefault(name, []).append((time.process_time() - c0) / n)
        return (time.perf_counter() - t0) / n

    rows = {"token shard (.bin, memory-mapped)": (b_shard, True),
            "in-memory array": (b_mem, True),
            "token shard, no prefetch (batch built in the step's caller)": (b_shard, False)}
    build = {}  # what the prefetch thread has to hide: one batch's building, per source
    for name, b in (("token shard (.bin, memory-mapped)", b_shard), ("in-memory array", b_mem)):
        t0 = time.perf_counter()
        for t in range(10_000, 10_500):
            b.batch(t)
        build[name] = (time.perf_counter() - t0) / 500
    block(b_mem, True, 3)  # compile
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(a.blocks):
        for name, (b, pre) in rows.items():
            times[name].append(block(b, pre, a.steps, name))
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["in-memory array"]
    model = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines()
        if ln.startswith("Model name")), "?")
    print(f"CPU: {model} ({os.cpu_count()} CPUs), device {jax.devices()[0].device_kind}; "
          f"GPT-2 {a.model_size}, batch {a.batch_size} x seq {a.seq_len}; shard "
          f"{a.tokens:,} tokens ({os.path.getsize(path) / 2**20:.0f} MiB); median of "
          f"{a.blocks} alternating blocks of {a.steps} steps, prefetch depth {PREFETCH_DEPTH}"
          "\n")
    cmed = {k: statistics.median(cpu[k]) for k in rows}
    print("| batches from | step time (ms) | / in-memory | process CPU per step (ms) | "
          "/ in-memory | paired block ratios |")
    print("|---|---|---|---|---|---|")
    for k, v in med.items():
        paired = ", ".join(f"{x / y:.2f}" for x, y in zip(times[k], times["in-memory array"]))
        print(f"| {k} | {v * 1e3:.2f} | **{v / ref:.3f}** | {cmed[k] * 1e3:.2f} | "
              f"{cmed[k] / cmed['in-memory array']:.3f} | {paired} |")
    extra = build["token shard (.bin, memory-mapped)"] - build["in-memory array"]
    print("\nbuilding one batch on the host (500 batches, no step running): "
          + "; ".join(f"{k} {v * 1e6:.0f} us" for k, v in build.items())
          + f"; the shard's extra {extra * 1e6:.0f} us is {extra / ref:.2%} of the in-memory "
          "step (what the step would lose without the prefetch thread)")
    os.remove(path)
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
