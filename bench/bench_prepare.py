"""train.prepare throughput and memory (issue 25).

Tokens/s of ``train.prepare`` with 1 and 2 workers against a plain loop over the same
tokenizer's own batch encoding (read JSON lines, ``encode_batch``, append the delimiter, write
the tokens) in the same run, and the peak RSS of a prepare on a corpus 10x larger (it must not
grow: documents are streamed, shards written as they fill):

    python bench/bench_prepare.py [--mb 1] [--tokenizer gpt2] [--repeat 2]

The corpus is synthetic JSON lines (seeded word salad), written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--mb", type=float, default=1.0, help="corpus size for the throughput runs")
    ap.add_argument("--tokenizer", default="gpt2")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "c.jsonl")
        write_corpus(src, a.mb)
        n_tokens = plain_loop(src, a.tokenizer, os.path.join(d, "plain.bin"))

        def run_prepare(w: int, i: int) -> None:
            C.prepare([src], os.path.join(d, f"p{w}-{i}"), a.tokenizer, workers=w,
                      progress=False)

        times: dict[str, list[float]] = {"plain": [], "1": [], "2": []}
        for i in range(a.repeat):  # interleaved, so load from others hits all three alike
            times["plain"].append(timed(
                lambda: plain_loop(src, a.tokenizer, os.path.join(d, "plain.bin"))))
            times["1"].append(timed(lambda i=i: run_prepare(1, i)))
            times["2"].append(timed(lambda i=i: run_prepare(2, i)))
        t_plain, t1, t2 = min(times["plain"]), min(times["1"]), min(times["2"])
        print(f"corpus: {a.mb:g} MB of JSON lines, {n_tokens:,} {a.tokenizer} tokens, "
              f"{os.cpu_count()} CPUs")
        print(f"plain loop (encode_batch, 1 process): {n_tokens / t_plain:12,.0f} tokens/s")
        print(f"prepare --workers 1:                  {n_tokens / t1:12,.0f} tokens/s  "
              f"({t_plain / t1:.2f}x the plain loop)")
        print(f"prepare --workers 2:                  {n_tokens / t2:12,.0f} tokens/s  "
              f"({t_plain / t2 / 2:.2f}x the plain loop per worker)")
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
        big = os.path.join(d, "big.jsonl")
        write_corpus(big, 10 * a.mb, seed=1)
        r1 = peak_rss_mb(src, os.path.join(d, "r1"), a.tokenizer)
        r10 = peak_rss_mb(big, os.path.join(d, "r10"), a.tokenizer)
        print(f"peak RSS: {r1:.0f} MB on {a.mb:g} MB, {r10:.0f} MB on {10 * a.mb:g} MB "
              f"({r10 / r1:.2f}x)")


if __name__ == "__main__":
    main()
