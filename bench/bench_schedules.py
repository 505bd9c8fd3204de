"""Schedule algebra benchmarks (issue 2): host queries, 1M-step curves, recompilation.

Prints side-by-side timings and ratios against PyTorch's ``scheduler.step()`` and
optax schedules measured in the same run:

    python bench/bench_schedules.py [--repeat 5] [--curve-steps 1000000]
"""

from __future__ import annotations

import argparse
import time
import warnings

import jax
import jax.numpy as jnp
import optax
import torch
from _timing import best_of  # bench/ is the script's directory

import schedules as S

W, TOTAL = 1000, 100_000


def ours_warmup_cosine() -> S.Schedule:
    return S.join(S.linear(1e-3 / W, 1e-3, W), S.cosine(1e-3, 0.0, TOTAL - W), at=[W])


def optax_warmup_cosine():
    return optax.join_schedules(
        [optax.linear_schedule(1e-3 / W, 1e-3, W), optax.cosine_decay_schedule(1e-3, TOTAL - W)],
        [W],
    )


def torch_warmup_cosine(opt):
    L = torch.optim.lr_scheduler
    return L.SequentialLR(
        opt, [L.LinearLR(opt, 1 / W, 1.0, W), L.CosineAnnealingLR(opt, TOTAL - W)], [W]
    )


def ours_three_piece() -> S.Schedule:
    return S.join(
        S.linear(1e-3 / W, 1e-3, W),
        S.constant(1e-3),
        S.cosine(1e-3, 1e-5, TOTAL - 5 * W),
        at=[W, 5 * W],
    ) * S.exponential(1.0, 0.99999)


def optax_three_piece():
    j = optax.join_schedules(
        [
            optax.linear_schedule(1e-3 / W, 1e-3, W),
            optax.constant_schedule(1e-3),
            optax.cosine_decay_schedule(1e-3, TOTAL - 5 * W, alpha=1e-2),
        ],
        [W, 5 * W],
    )
    e = optax.exponential_decay(1.0, 1, 0.99999)
    return lambda t: j(t) * e(t)


def torch_three_piece(opt):
    L = torch.optim.lr_scheduler
    seq = L.SequentialLR(
        opt,
        [
            L.LinearLR(opt, 1 / W, 1.0, W),
            L.ConstantLR(opt, 1.0, 1),
            L.CosineAnnealingLR(opt, TOTAL - 5 * W, 1e-5),
        ],
        [W, 5 * W],
    )
    return L.ChainedScheduler([seq, L.ExponentialLR(opt, 0.99999)])


def bench_host(name, ours, opt_fn, torch_fn, n, repeat):
    s = ours()
    o = opt_fn()
    s(0)  # fill the one-off host-path cache

    def run_ours():
        for t in range(n):
            float(s(t))

    def run_torch():
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1e-3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sch = torch_fn(opt)
            t0 = time.perf_counter()
            for _ in range(n):
                sch.step()
            return time.perf_counter() - t0

    n_optax = max(n // 50, 20)

    def run_optax():
        for t in range(n_optax):
            float(o(t))

    run_optax()
    t_ours = best_of(run_ours, repeat) / n
    t_torch = min(run_torch() for _ in range(repeat)) / n
    t_optax = best_of(run_optax, repeat) / n_optax
    print(
        f"[host] {name}: ours {t_ours * 1e6:.2f} us/query | torch step() {t_torch * 1e6:.2f} us "
        f"| optax eager {t_optax * 1e6:.1f} us"
    )
    print(
        f"       ours/torch = {t_ours / t_torch:.3f} (target <= 0.333)   "
        f"optax/ours = {t_optax / t_ours:.0f}x (target >= 100x)"
    )
    return t_ours / t_torch, t_optax / t_ours


def bench_curve(name, ours, opt_fn, steps, repeat):
    t = jnp.arange(steps, dtype=jnp.int32)
    f_ours = jax.jit(jax.vmap(ours()))
    f_optax = jax.jit(jax.vmap(opt_fn()))
    t0 = time.perf_counter()
    f_ours(t).block_until_ready()
    c_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    f_optax(t).block_until_ready()
    c_optax = time.perf_counter() - t0
    # Interleave the two so that neither pays for a cold cache or a busy core alone.
    r_ours, r_optax = float("inf"), float("inf")
    for _ in range(repeat):
        r_ours = min(r_ours, best_of(lambda: f_ours(t).block_until_ready(), 3))
        r_optax = min(r_optax, best_of(lambda: f_optax(t).block_until_ready(), 3))
    print(
        f"[curve] {name}, {steps:,} steps jit(vmap): ours {r_ours * 1e3:.2f} ms | optax "
        f"{r_optax * 1e3:.2f} ms | ratio {r_ours / r_optax:.3f} (target <= 1.0); compile: "
        f"ours {c_ours * 1e3:.0f} ms, optax {c_optax * 1e3:.0f} ms"
    )
    return r_ours / r_optax


def count_recompiles() -> int:
    traces = []

    @jax.jit
    def lr(s, t):
        traces.append(1)
        return s(t)

    for w in (10, 100, 1000, 5000):
        for peak in (1e-4, 3e-4, 1e-3):
            s = S.join(S.linear(0.0, peak, w), S.cosine(peak, 0.1 * peak, TOTAL - w), at=[w])
            lr(s, 123).block_until_ready()
    return len(traces)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--curve-steps", type=int, default=1_000_000)
    a = ap.parse_args()
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, torch {torch.__version__}, "
        f"devices {jax.devices()[0].platform}"
    )
    cases = [
        ("warmup+cosine join", ours_warmup_cosine, optax_warmup_cosine, torch_warmup_cosine),
        ("3-piece join x factor", ours_three_piece, optax_three_piece, torch_three_piece),
    ]
    for name, ours, opt_fn, torch_fn in cases:
        bench_host(name, ours, opt_fn, torch_fn, a.queries, a.repeat)
    for name, ours, opt_fn, _ in cases:
        bench_curve(name, ours, opt_fn, a.curve_steps, a.repeat)
    n = count_recompiles()
    print(
        f"[recompile] 12 schedules differing only in hyperparameter values: {n} trace(s) (target 1)"
    )


if __name__ == "__main__":
    main()
