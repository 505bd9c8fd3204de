"""train.prepare throughput and memory (issue 25).

Tokens/s of ``train.prepare`` with 1 and 2 workers against a plain loop over the same
tokenizer's own batch encoding (read JSON lines, ``encode_batch``, append the delimiter, write
the tokens; as nanoGPT's prepare.py does) in the same run, and the peak RSS of a prepare on a
corpus 10x larger (it must not grow: documents are streamed, shards written as they fill):

    python bench/bench_prepare.py [--mb 24] [--tokenizer gpt2] [--repeat 2] [--rss-mb 2]

Both sides encode on one thread per process (``encode_batch`` asks tiktoken for one thread;
the workers are the parallelism), so "per worker" compares one core with one core. Each ratio
is given by wall time and by CPU time (the parent's, plus the workers' read from /proc before
the pool closes): the machine is shared, and on 2 cores the second worker competes with the
reading process and with everyone else, so the CPU ratio is the one that load does not move.
The pool start (forkserver, each worker importing its modules and unpickling the tokenizer)
is timed on its own, as ``python -m train.prepare`` pays it, and the 2-worker ratios are
given with it and without it: a real corpus of hundreds of MB amortizes it; the default 24 MB
(about 6M GPT-2 tokens, seconds per run) shows both.

The corpus is synthetic JSON lines (seeded word salad), written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import multiprocessing.pool
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from train import corpus as C  # noqa: E402
from train.tokenizer import get_tokenizer  # noqa: E402

WORDS = [
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at",
    "from", "his", "it", "an", "were", "are", "which", "schedule", "learning", "rate", "cosine",
    "warmup", "decay", "model", "token", "tokenizer", "corpus", "shard", "epoch", "1999", "2024",
    "3.14", "naïve", "café", "ü", "日本語", "...", "?", "!", "(x)", "[y]", "{z}", "'quoted'",
    '"double"',
]


def write_corpus(path: str, mb: float, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    size = 0
    with open(path, "w") as f:
        while size < mb * 1e6:
            n = int(rng.integers(20, 800))
            text = " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))
            line = json.dumps({"text": text}) + "\n"
            f.write(line)
            size += len(line.encode())
    return size


def plain_loop(path: str, spec: str, out: str) -> int:
    """The baseline: the tokenizer's own batch encoding over the same documents."""
    tok = get_tokenizer(spec)
    n = 0
    with open(path, "rb") as f, open(out, "wb") as o:
        batch: list[str] = []
        size = 0

        def flush() -> int:
            ids = [tok.delimit(a) for a in tok.encode_batch(batch)]
            arr = np.concatenate(ids)
            o.write(arr.astype(tok.dtype).tobytes())
            return len(arr)

        for line in f:
            t = json.loads(line)["text"]
            batch.append(t)
            size += len(t)
            if size >= C.CHUNK_BYTES:
                n += flush()
                batch, size = [], 0
        if batch:
            n += flush()
    return n


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_of_batches(b, n: int = 200) -> float:
    b.batch(0)
    return min(timed(lambda s=s: b.batch(s)) for s in range(1, n))


_CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


HOLD = 0.3  # s: a task per worker that outlasts the slowest start, so each worker takes one


class PoolMeter:
    """Times prepare's pool start in the run itself (until every worker has taken a task) and
    adds up the workers' CPU just before the pool closes (the workers are the forkserver's
    children, so the parent's rusage never sees them)."""

    def __init__(self) -> None:
        self.reset()
        start, close = C._start_pool, multiprocessing.pool.Pool.close
        meter = self

        def start_and_wait(workers: int, tok, spec: str):  # -> Pool
            t0 = time.perf_counter()
            pool = start(workers, tok, spec)
            pool.map(time.sleep, [HOLD] * workers, chunksize=1)
            meter.held = time.perf_counter() - t0
            meter.start_cpu = sum(proc_cpu(p.pid) for p in pool._pool)
            return pool

        def close_and_count(pool) -> None:
            meter.worker_cpu += sum(proc_cpu(p.pid) for p in pool._pool)
            close(pool)

        C._start_pool = start_and_wait
        multiprocessing.pool.Pool.close = close_and_count

    def reset(self) -> None:
        self.held = self.start_cpu = self.worker_cpu = 0.0


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(ln.split(":", 1)[1].strip() for ln in out.splitlines()
                    if ln.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


_RSS_CHILD = """
import resource, sys
sys.path.insert(0, {root!r})
from train import corpus as C
C.prepare([{src!r}], {out!r}, {tok!r}, progress=False, workers=1)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mb(src: str, out: str, tok: str) -> float:
    code = _RSS_CHILD.format(root=ROOT, src=src, out=out, tok=tok)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return int(res.stdout.split()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=24.0, help="corpus size for the throughput runs")
    ap.add_argument("--tokenizer", default="gpt2")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rss-mb", type=float, default=2.0,
                    help="the smaller corpus of the peak-RSS pair (the other is 10x)")
    a = ap.parse_args()
    # as under `python -m train.prepare`: no main script for the forkserver to preload, so
    # each worker imports its modules itself (this script's preload would hide that cost)
    mp.get_context("forkserver").set_forkserver_preload([])
    meter = PoolMeter()
    print(f"{cpu_model()}, {os.cpu_count()} CPUs; load average {load()}")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "c.jsonl")
        write_corpus(src, a.mb)
        n_tokens = plain_loop(src, a.tokenizer, os.path.join(d, "plain.bin"))

        def run(kind: str, i: int) -> dict[str, float]:
            meter.reset()
            c0, t0 = time.process_time(), time.perf_counter()
            if kind == "plain":
                plain_loop(src, a.tokenizer, os.path.join(d, "plain.bin"))
            else:
                C.prepare([src], os.path.join(d, f"p{kind}-{i}"), a.tokenizer,
                          workers=int(kind), progress=False)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0 + meter.worker_cpu
            hold = HOLD if meter.held else 0.0
            # "wall"/"cpu": the run as a user has it (less the bench's hold); "*_work": from
            # the moment every worker is ready
            return {"wall": wall - hold, "cpu": cpu, "start": meter.held - hold,
                    "start_cpu": meter.start_cpu, "wall_work": wall - meter.held,
                    "cpu_work": cpu - meter.start_cpu}

        runs: dict[str, list[dict[str, float]]] = {"plain": [], "1": [], "2": []}
        for i in range(a.repeat):  # interleaved, so load from others hits all alike
            for kind in runs:
                runs[kind].append(run(kind, i))

        def best(kind: str, key: str) -> float:
            return min(r[key] for r in runs[kind])

        w0, w1, w2 = (best(k, "wall") for k in runs)
        c0, c1, c2 = (best(k, "cpu") for k in runs)
        print(f"corpus: {a.mb:g} MB of JSON lines, {n_tokens:,} {a.tokenizer} tokens; best of "
              f"{a.repeat}, load average {load()}")
        print(f"pool start, 2 workers (until each has taken a task): {best('2', 'start'):.2f} s "
              f"wall, {best('2', 'start_cpu'):.2f} CPU s (imports, tokenizer); runs: "
              + ", ".join(f"{r['start']:.2f}" for r in runs["2"]))
        print(f"{'':22s} {'wall s':>7s} {'tokens/s':>11s} {'CPU s':>7s} {'tokens/CPU-s':>13s}")
        for name, w, c in (("plain loop", w0, c0), ("prepare --workers 1", w1, c1),
                           ("prepare --workers 2", w2, c2)):
            print(f"{name:22s} {w:7.2f} {n_tokens / w:11,.0f} {c:7.2f} {n_tokens / c:13,.0f}")
        print(f"--workers 1 vs the plain loop: {w0 / w1:.2f}x by wall time, "
              f"{c0 / c1:.2f}x by CPU time")
        print(f"--workers 2 vs the plain loop, per worker: {w0 / w2 / 2:.2f}x by wall time "
              f"({w0 / best('2', 'wall_work') / 2:.2f}x once the workers are ready), "
              f"{c0 / c2:.2f}x by CPU time ({c0 / best('2', 'cpu_work'):.2f}x once ready)")
        # batches from the memory-mapped shards vs the same tokens in memory (item 5: the
        # data side of "a real shard within 2% of an in-memory array")
        from train.data import Batcher, TokenData, open_prepared

        shards = open_prepared(os.path.join(d, "p1-0")).train.shards
        kw = dict(seq_len=256, batch_size=16, grad_accum=1, local_devices=1)
        mm = Batcher(TokenData(shards, "mmap"), **kw)
        mem = Batcher(TokenData([np.array(s) for s in shards], "mem"), **kw)
        t_mm = best_of_batches(mm)
        t_mem = best_of_batches(mem)
        print(f"Batcher.batch [16 x 257]: {t_mm * 1e6:.0f} us memory-mapped, "
              f"{t_mem * 1e6:.0f} us in memory")
        small, big = os.path.join(d, "small.jsonl"), os.path.join(d, "big.jsonl")
        write_corpus(small, a.rss_mb, seed=2)
        write_corpus(big, 10 * a.rss_mb, seed=1)
        r1 = peak_rss_mb(small, os.path.join(d, "r1"), a.tokenizer)
        r10 = peak_rss_mb(big, os.path.join(d, "r10"), a.tokenizer)
        print(f"peak RSS: {r1:.0f} MB on {a.rss_mb:g} MB, {r10:.0f} MB on {10 * a.rss_mb:g} MB "
              f"({r10 / r1:.2f}x)")
    print(f"load average at the end: {load()}")


if __name__ == "__main__":
    main()
