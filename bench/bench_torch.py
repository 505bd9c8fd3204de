"""Benchmark schedules.torch against torch's ``scheduler.step()`` for the same composition.

    python bench/bench_torch.py [--steps N]

Prints, per composition: torch's cost per ``step()`` and read, our host cost per sequential
query (the facade's pattern: replay memoized, O(1) amortized), and our cost inside a
jitted step at an early and a late step (O(1): no loop over the steps so far).
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import jax.numpy as jnp


def _compositions(T):
    lr = 0.1
    return {
        "SequentialLR(LinearLR, CosineAnnealingLR)": (
            lambda L, o: L.SequentialLR(o, [L.LinearLR(o, 0.01, total_iters=500),
                                            L.CosineAnnealingLR(o, T_max=50_000, eta_min=1e-4)],
                                        [500]),
            T.SequentialLR(lr, [T.LinearLR(lr, 0.01, total_iters=500),
                                T.CosineAnnealingLR(lr, T_max=50_000, eta_min=1e-4)], [500])),
        "ChainedScheduler(ConstantLR, ExponentialLR, MultiStepLR)": (
            lambda L, o: L.ChainedScheduler([L.ConstantLR(o, 0.5, 100), L.ExponentialLR(o, 0.9999),
                                             L.MultiStepLR(o, [3000, 6000])]),
            T.ChainedScheduler([T.ConstantLR(lr, 0.5, 100), T.ExponentialLR(lr, 0.9999),
                                T.MultiStepLR(lr, [3000, 6000])])),
        "OneCycleLR": (
            lambda L, o: L.OneCycleLR(o, 1.0, total_steps=200_000),
            T.OneCycleLR(lr, 1.0, total_steps=200_000)),
        # issue 29: at most 1/3 of torch's step() + read on the host
        "SequentialLR(LinearLR 1000, CosineAnnealingLR 99000)": (
            lambda L, o: L.SequentialLR(o, [L.LinearLR(o, 0.01, 1.0, 1000),
                                            L.CosineAnnealingLR(o, T_max=99_000,
                                                                eta_min=lr / 100)], [1000]),
            T.SequentialLR(lr, [T.LinearLR(lr, 0.01, 1.0, 1000),
                                T.CosineAnnealingLR(lr, T_max=99_000, eta_min=lr / 100)],
                           milestones=[1000])),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20_000)
    n = ap.parse_args().steps
    import torch

    from schedules import torch as T

    L = torch.optim.lr_scheduler
    print(f"steps={n}; per-step costs in microseconds")
    print(f"{'composition':58s} {'torch step':>11s} {'host seq':>9s} {'ratio':>6s} "
          f"{'jit t=10':>9s} {'jit late':>9s} {'ratio':>6s}")
    for name, (build, ours) in _compositions(T).items():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sch = build(L, opt)
            t0 = time.perf_counter()
            for _ in range(n):
                sch.step()
                sch.get_last_lr()[0]  # step() + read: what a loop does with it
            t_torch = (time.perf_counter() - t0) / n * 1e6
        leaves, tree = jax.tree_util.tree_flatten(ours)
        fresh = jax.tree_util.tree_unflatten(tree, leaves)
        t0 = time.perf_counter()
        for t in range(n):
            float(fresh(t))
        t_host = (time.perf_counter() - t0) / n * 1e6

        @jax.jit
        def train_step(count, w, s=ours):
            return w - s(count) * w

        w = jnp.ones(1024, jnp.float32)
        res = {}
        for label, c in (("early", 10), ("late", n - 1)):
            cnt = jnp.int32(c)
            train_step(cnt, w).block_until_ready()
            reps = 2000
            t0 = time.perf_counter()
            for _ in range(reps):
                out = train_step(cnt, w)
            out.block_until_ready()
            res[label] = (time.perf_counter() - t0) / reps * 1e6
        print(f"{name:58s} {t_torch:11.2f} {t_host:9.2f} {t_host / t_torch:6.2f} "
              f"{res['early']:9.2f} {res['late']:9.2f} {res['late'] / res['early']:6.2f}")


if __name__ == "__main__":
    main()
