"""Where a checkpoint save of the pmap engine's state stalls the loop (issue 28).

The parts the loop waits for, per save (the state replicated on 8 simulated CPU devices, the
trainer's code): device 0's replica copied to the host, the per-leaf checksums and finite
check, the free-space check, orbax's start of the asynchronous write; and the rest of the
write, done in orbax's threads while the next steps run (on few cores it competes with them):

    python bench/bench_save.py [--vocab 256] [--saves 5]

``--vocab 256``: the trainer's default model (GPT-2 micro, byte vocabulary, 0.5M parameters);
``--vocab 50304``: the same layers with GPT-2's vocabulary (20.5M values with the optimizer
state).
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--saves", type=int, default=5)
    args = ap.parse_args()
    tc = TrainConfig()
    mc = models.get_config(tc.model, tc.base_size(), vocab_size=args.vocab,
                           **tc.model_overrides())
    params = jax.device_get(models.init_params(mc, jax.random.key(0)))
    host = init_state(params, make_optimizer(tc, build_schedule(tc), params))
    n = sum(np.size(x) for x in jax.tree.leaves(host))
    print(f"state: {len(jax.tree.leaves(host))} leaves, {n:,} values ({n * 4 / 2**20:.1f} MiB)")
    state = jax.block_until_ready(replicate(host, None))
    print("save  replica->host  checksums  orbax start  (waited)  write after")
    with tempfile.TemporaryDirectory() as d:
        ck = Checkpointer(d, 2)
        for step in range(1, args.saves + 1):
            t0 = time.perf_counter()
            view = {**unreplicate(state), "step": np.asarray(step, np.int32)}
            t1 = time.perf_counter()
            leaf_checksums(view, check_finite=True)  # what save() computes first
            t2 = time.perf_counter()
            ck.save(step, view, {"bench": True})
            t3 = time.perf_counter()
            ck.wait()
            t4 = time.perf_counter()
            start = (t3 - t2) - (t2 - t1)  # save() less its own checksums
            print(f"{step:4d}  {t1 - t0:13.3f}  {t2 - t1:9.3f}  {start:11.3f}  "
                  f"{t1 - t0 + t3 - t2:8.3f}  {t4 - t3:11.3f}")
        ck.close()


if __name__ == "__main__":
    main()
