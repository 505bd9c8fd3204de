"""Where a checkpoint save of the pmap engine's state stalls the loop (issue 28).

The parts the loop waits for, per save (the state replicated on 8 simulated CPU devices, the
trainer's code): device 0's replica copied to the host and ``save()`` (the free-space check;
the per-leaf checksums and finite check, timed alone here, and orbax's write run in the
checkpointer's writer thread); and the write itself, while the next steps run:

    python bench/bench_save.py [--vocab 256] [--saves 5]

``--vocab 256``: the trainer's default model (GPT-2 micro, byte vocabulary, 0.5M parameters);
``--vocab 50304``: the same layers with GPT-2's vocabulary (20.5M values with the optimizer
state).

``--loop``: the stall as the training loop sees it. Runs the actual ``python -m train`` (the
default model, one CPU device) with ``--log-interval 1``, so that every step is timed on its
own (metrics.jsonl), and a save every ``--every`` steps; per save: the loop's wait plus what the
next ``--window`` steps took beyond the median step (the asynchronous write competes with
them), in seconds and in steps. The same sum over windows half-way between saves (no save
near) is the noise floor. ``--repo DIR`` runs another checkout's trainer (e.g. an unpacked
``git archive`` of the previous commit), ``--runs N`` alternates the checkouts N times:

    python bench/bench_save.py --loop --repo /tmp/base --repo . --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

import models  # noqa: E402
from train import TrainConfig, build_schedule  # noqa: E402
from train.checkpoint import Checkpointer, leaf_checksums  # noqa: E402
from train.engine.pmap import replicate, unreplicate  # noqa: E402
from train.engine.step import init_state  # noqa: E402
from train.optim import make_optimizer  # noqa: E402


def loop_run(repo: str, steps: int, every: int, window: int) -> dict:
    """One ``python -m train`` run of ``repo``'s trainer; the stall of each save (not the last,
    which has no next steps), in seconds and in median steps."""
    with tempfile.TemporaryDirectory() as d:
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
        env["PYTHONPATH"] = os.path.abspath(repo)
        cmd = [sys.executable, "-m", "train", "--workdir", d, "--steps", str(steps),
               "--checkpoint-interval", str(every), "--log-interval", "1",
               "--eval-interval", str(10 * steps), "--eval-batches", "1", "--sample-tokens", "0"]
        subprocess.run(cmd, cwd=os.path.abspath(repo), env=env, check=True,
                       stdout=subprocess.DEVNULL)
        with open(os.path.join(d, "metrics", "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
    tokens = TOKENS_PER_STEP
    step_s = {r["step"]: tokens / r["tokens_per_s"] for r in rows
              if "loss" in r and r.get("tokens_per_s")}
    waits = {r["step"]: r["save_wait_s"] for r in rows if "save_wait_s" in r}
    median = float(np.median(list(step_s.values())))

    def extra(first: int) -> float | None:
        ts = [step_s.get(t) for t in range(first, first + window)]
        return None if None in ts else sum(t - median for t in ts)

    stalls = [waits[s] + e for s in sorted(waits) if (e := extra(s)) is not None]
    noise = [e for s in sorted(waits) if s > every // 2 and (e := extra(s - every // 2))
             is not None]
    # a write slowed to a crawl by a low priority may outlast the window: the wait plus every
    # step up to the next save beyond the median (noisier: no quiet reference window left)
    whole = [waits[s] + sum(step_s[t] - median for t in range(s, s + every))
             for s in sorted(waits) if all(t in step_s for t in range(s, s + every))]
    return {"median": median, "stalls": stalls, "waits": [waits[s] for s in sorted(waits)],
            "noise": noise, "whole": whole}


TOKENS_PER_STEP = TrainConfig().batch_size * TrainConfig().seq_len


def loop_main(args: argparse.Namespace) -> None:
    repos = args.repo or ["."]
    print(f"load average {os.getloadavg()[0]:.2f}; {args.steps} steps, a save every "
          f"{args.every}, stall = wait + next {args.window} steps beyond the median")
    print("repo  run  median step  wait (median)  stall s (median, max)  stall steps "
          "(median, max)  noise steps (median)  up to the next save, steps (median)")
    for run in range(args.runs):
        for repo in repos:
            r = loop_run(repo, args.steps, args.every, args.window)
            med, st = r["median"], np.array(r["stalls"])
            print(f"{repo}  {run}  {med:.4f}  {np.median(r['waits']):.4f}  "
                  f"{np.median(st):.3f} {st.max():.3f}  {np.median(st) / med:.2f} "
                  f"{st.max() / med:.2f}  {np.median(r['noise']) / med:.2f}  "
                  f"{np.median(r['whole']) / med:.2f}  "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--saves", type=int, default=5)
    ap.add_argument("--loop", action="store_true", help="the stall in the training loop")
    ap.add_argument("--repo", action="append", help="(--loop) a checkout to run; repeatable")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--window", type=int, default=5)
    args = ap.parse_args()
    if args.loop:
        return loop_main(args)
    tc = TrainConfig()
    mc = models.get_config(tc.model, tc.base_size(), vocab_size=args.vocab,
                           **tc.model_overrides())
    params = jax.device_get(models.init_params(mc, jax.random.key(0)))
    host = init_state(params, make_optimizer(tc, build_schedule(tc), params))
    n = sum(np.size(x) for x in jax.tree.leaves(host))
    print(f"state: {len(jax.tree.leaves(host))} leaves, {n:,} values ({n * 4 / 2**20:.1f} MiB)")
    state = jax.block_until_ready(replicate(host, None))
    # the checksums run in the checkpointer's writer thread (not waited for); timed alone here
    print("save  replica->host  checksums (alone)  save() returns  (waited)  write after")
    with tempfile.TemporaryDirectory() as d:
        ck = Checkpointer(d, 2)
        for step in range(1, args.saves + 1):
            t0 = time.perf_counter()
            view = {**unreplicate(state), "step": np.asarray(step, np.int32)}
            t1 = time.perf_counter()
            leaf_checksums(view, check_finite=True)  # what the writer thread computes first
            t2 = time.perf_counter()
            ck.save(step, view, {"bench": True})
            t3 = time.perf_counter()
            ck.wait()
            t4 = time.perf_counter()
            print(f"{step:4d}  {t1 - t0:13.3f}  {t2 - t1:17.3f}  {t3 - t2:14.3f}  "
                  f"{t1 - t0 + t3 - t2:8.3f}  {t4 - t3:11.3f}")
        ck.close()


if __name__ == "__main__":
    main()
