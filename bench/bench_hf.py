"""Host queries of ``schedules.hf`` against transformers' schedulers, in the same run.

A transformers schedule is a ``LambdaLR``: a query is ``scheduler.step()`` (the lambda plus
torch's bookkeeping); ours is ``schedule(t)`` on a Python int. Prints microseconds per query
and the ratio (transformers / ours; above 1: ours is faster):

    python bench/bench_hf.py [--queries 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import warnings

import torch
from _timing import best_of  # bench/ is the script's directory
from transformers import optimization as O

from schedules import hf

W, N = 100, 10_000
KINDS = {
    "linear": dict(num_warmup_steps=W, num_training_steps=N),
    "cosine": dict(num_warmup_steps=W, num_training_steps=N),
    "cosine_with_restarts": dict(num_warmup_steps=W, num_training_steps=N, num_cycles=3),
    "polynomial": dict(num_warmup_steps=W, num_training_steps=N, power=2.0),
    "inverse_sqrt": dict(num_warmup_steps=W),
    "cosine_with_min_lr": dict(num_warmup_steps=W, num_training_steps=N, min_lr_rate=0.1),
    "warmup_stable_decay": dict(num_warmup_steps=W, num_decay_steps=N // 5,
                                num_stable_steps=N - W - N // 5),
}


def bench(kind: str, kw: dict, n: int, repeat: int) -> tuple[float, float]:
    own = {k: v for k, v in kw.items() if k not in ("num_warmup_steps", "num_training_steps")}
    ours = hf.get_scheduler(kind, 1.0, kw["num_warmup_steps"], kw.get("num_training_steps"),
                            scheduler_specific_kwargs=own)

    def run_ours() -> None:
        for t in range(n):
            ours(t)

    def run_theirs() -> None:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sch = O.get_scheduler(kind, opt, kw["num_warmup_steps"], kw.get("num_training_steps"),
                                  scheduler_specific_kwargs=own)
            for _ in range(n):
                sch.step()

    return best_of(run_ours, repeat) / n * 1e6, best_of(run_theirs, repeat) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    print(f"{'kind':24s} {'ours us':>8s} {'transformers us':>16s} {'ratio':>6s}")
    for kind, kw in KINDS.items():
        ours, theirs = bench(kind, kw, a.queries, a.repeat)
        print(f"{kind:24s} {ours:8.2f} {theirs:16.2f} {theirs / ours:6.2f}")


if __name__ == "__main__":
    main()
