"""Trainer benchmarks: schedule overhead, tokens/s on 1 vs 8 (simulated) devices, vs PyTorch.

    python bench/bench_train.py                 # everything, markdown table on stdout
    python bench/bench_train.py --steps 30 --out /tmp/bench_train.md

Measures, on the default run's model and batch (read from ``train/config.py``; today GPT-2
"micro": 2 layers x 128, byte vocab, seq 64, global batch 16 sequences, float32, AdamW,
clip 1.0):

1. schedule overhead: time per pmapped train step with a 3-piece composite schedule
   (``join(linear, constant, cosine)``) / with a constant lr, same process, the median of
   60 paired single steps (and the schedule alone in a jitted call, as an upper bound);
2. training tokens/s with ``--xla_force_host_platform_device_count=8`` (2 sequences per device)
   vs 1 device (16 sequences), each in its own process;
3. the same training step in plain PyTorch (``transformers.GPT2LMHeadModel``, ``torch.optim.AdamW``,
   same batch, ``torch.set_num_threads(os.cpu_count())``).

Each worker runs in a subprocess (``--worker jax|torch``) and prints one JSON line.

``--paired`` instead runs the JAX step (jit of loss + gradients + clip + AdamW, donated state)
and the PyTorch step in ONE process, alternating, one thread each, and prints the median of the
per-pair ratios of process CPU time: the comparison to use on a loaded machine (pin it to one
core: ``taskset -c 1 python bench/bench_train.py --paired``; ``--width 384 --heads 6`` for a
wider model, ``--layers 4 --seq 128`` for the previous default "mini").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import models  # noqa: E402
from train.config import EXTRA_SIZES, TrainConfig  # noqa: E402


def _default_model() -> tuple[int, int, int, int, int]:
    """(seq, global batch, layers, width, heads) of the default run (``train/config.py``)."""
    d = TrainConfig()
    base, overrides = EXTRA_SIZES.get(d.model_size, (d.model_size, {}))
    m = models.get_config(d.model, base, **overrides)
    return d.seq_len, d.batch_size, m.n_layer, m.n_embd, m.n_head


SEQ, GLOBAL_BATCH, LAYERS, WIDTH, HEADS = _default_model()
VOCAB = 256


def _batch(rng, n: int, seq: int = SEQ):
    import numpy as np

    return rng.integers(0, VOCAB, size=(n, seq + 1), dtype=np.int64)


def jax_worker(steps: int, overhead: bool) -> dict:
    import jax
    import numpy as np

    import schedules as S
    from train.engine.pmap import make_train_step, replicate
    from train.optim import make_optimizer

    n = jax.local_device_count()
    per = GLOBAL_BATCH // n
    mcfg = models.get_config("gpt2", "tiny", vocab_size=VOCAB, block_size=SEQ, n_layer=LAYERS,
                             n_head=HEADS, n_embd=WIDTH)
    cfg = TrainConfig()
    params = jax.device_get(models.init_params(mcfg, jax.random.key(0)))
    rng = np.random.default_rng(0)
    batches = [_batch(rng, GLOBAL_BATCH).reshape(n, 1, per, SEQ + 1).astype(np.int32)
               for _ in range(4)]

    def setup(sched):
        tx = make_optimizer(cfg, sched, params)
        step = make_train_step(mcfg, tx, 0)
        state = replicate({"step": np.zeros((), np.int32), "params": params,
                            "opt_state": jax.device_get(tx.init(params))}, None)
        for i in range(3):  # compile + warm up
            state, m = step(state, batches[i % 4])
        jax.block_until_ready(m["loss"])
        return [step, state]

    def run(ctx, k: int) -> float:
        step, state = ctx
        t0 = time.perf_counter()
        for i in range(k):
            state, m = step(state, batches[i % 4])
        jax.block_until_ready(m["loss"])
        ctx[1] = state
        return (time.perf_counter() - t0) / k

    const = setup(S.constant(1e-3))
    out: dict = {"devices": n, "per_device_batch": per}
    t = statistics.median(run(const, max(steps // 3, 1)) for _ in range(3))
    out["step_s"] = t
    out["tokens_per_s"] = GLOBAL_BATCH * SEQ / t
    if overhead:
        comp_sched = S.join(S.linear(0.0, 1e-3, 100), S.constant(1e-3),
                            S.cosine(1e-3, 1e-5, 800), at=[100, 200])
        comp = setup(comp_sched)
        rc, rs, ratios = [], [], []
        for i in range(60):  # single steps, back to back, alternating which goes first
            first, second = (const, comp) if i % 2 == 0 else (comp, const)
            t1, t2 = run(first, 1), run(second, 1)
            tc, ts = (t1, t2) if first is const else (t2, t1)
            rc.append(tc)
            rs.append(ts)
            ratios.append(ts / tc)
        out["const_step_s"] = statistics.median(rc)
        out["composite_step_s"] = statistics.median(rs)
        # the median of the paired ratios: each pair ran back to back, so the machine's slow
        # drifts cancel; the quartiles show the noise of one pair
        out["overhead_ratio"] = statistics.median(ratios)
        q = statistics.quantiles(ratios, n=4)
        out["overhead_quartiles"] = [q[0], q[2]]
        # the schedule alone, as the optimizer evaluates it (one scalar from the count),
        # jitted: an upper bound of what it can add to a step, free of the step's noise
        sched = comp_sched
        f = jax.jit(lambda c: sched(c))
        f(np.int32(5)).block_until_ready()
        t0 = time.perf_counter()
        for i in range(2000):
            f(np.int32(i)).block_until_ready()
        out["schedule_alone_s"] = (time.perf_counter() - t0) / 2000
    return out


def torch_worker(steps: int) -> dict:
    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=WIDTH,
                                       n_layer=LAYERS, n_head=HEADS, resid_pdrop=0.0,
                                       embd_pdrop=0.0, attn_pdrop=0.0))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(_batch(rng, GLOBAL_BATCH)) for _ in range(4)]

    def step(b):
        x, y = b[:, :-1], b[:, 1:]
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for i in range(3):
        step(batches[i])
    times = []
    for _ in range(3):
        k = max(steps // 3, 1)
        t0 = time.perf_counter()
        for i in range(k):
            step(batches[i % 4])
        times.append((time.perf_counter() - t0) / k)
    t = statistics.median(times)
    return {"step_s": t, "tokens_per_s": GLOBAL_BATCH * SEQ / t, "threads": torch.get_num_threads()}


def paired(steps: int, width: int, heads: int, layers: int = LAYERS, seq: int = SEQ,
           batch: int = GLOBAL_BATCH) -> dict:
    """JAX vs PyTorch train step in one process, 1 thread each, alternating (CPU time)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(1)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=seq, n_embd=width,
                                    n_layer=layers, n_head=heads, resid_pdrop=0.0,
                                    embd_pdrop=0.0, attn_pdrop=0.0)).train()
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    tok = _batch(np.random.default_rng(0), batch, seq)
    tt = torch.from_numpy(tok)

    def torch_step() -> None:
        logits = hf(tt[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tt[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()

    cfg = models.get_config("gpt2", "tiny", vocab_size=VOCAB, block_size=seq, n_layer=layers,
                            n_head=heads, n_embd=width)
    params = models.from_hf(cfg, hf.state_dict())
    module = models.build(cfg)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(1e-3, 0.9, 0.95, weight_decay=0.1, mask=models.decay_mask))
    x, y = jnp.asarray(tok[:, :-1], jnp.int32), jnp.asarray(tok[:, 1:], jnp.int32)

    def step(p, o):
        loss, g = jax.value_and_grad(lambda p: models.loss_fn(module.apply({"params": p}, x),
                                                              y))(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    jstep = jax.jit(step, donate_argnums=(0, 1))
    st = [params, tx.init(params)]

    def jax_step() -> None:
        st[0], st[1], loss = jstep(st[0], st[1])
        loss.block_until_ready()

    for _ in range(3):
        jax_step()
        torch_step()
    tj, tp = [], []
    for i in range(steps):
        for which in ((jax_step, tj), (torch_step, tp))[:: 1 if i % 2 == 0 else -1]:
            c0 = time.process_time()
            which[0]()
            which[1].append(time.process_time() - c0)
    ratios = [b / a for a, b in zip(tj, tp)]
    return {"width": width, "layers": layers, "seq": seq, "batch": batch,
            "jax_cpu_s": statistics.median(tj),
            "torch_cpu_s": statistics.median(tp), "torch_over_jax": statistics.median(ratios)}


def _spawn(args: list[str], n_dev: int | None = None) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    if n_dev:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_dev}"
    r = subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env,
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    p.add_argument("--worker", choices=["jax", "torch"])
    p.add_argument("--overhead", action="store_true")
    p.add_argument("--out", help="also write the markdown to this file")
    p.add_argument("--paired", action="store_true",
                   help="JAX vs PyTorch in one process, 1 thread each, alternating")
    p.add_argument("--width", type=int, default=WIDTH, help="model width (--paired)")
    p.add_argument("--heads", type=int, default=HEADS, help="attention heads (--paired)")
    p.add_argument("--layers", type=int, default=LAYERS, help="layers (--paired)")
    p.add_argument("--seq", type=int, default=SEQ, help="sequence length (--paired)")
    p.add_argument("--batch", type=int, default=GLOBAL_BATCH, help="sequences per step (--paired)")
    a = p.parse_args()
    if a.paired:
        r = paired(a.steps, a.width, a.heads, a.layers, a.seq, a.batch)
        print(f"{r['layers']} x {r['width']}, {r['batch']} x {r['seq']} tokens: "
              f"JAX {r['jax_cpu_s'] * 1e3:.1f} ms, PyTorch "
              f"{r['torch_cpu_s'] * 1e3:.1f} ms CPU time per step (1 thread each); "
              f"PyTorch / JAX = {r['torch_over_jax']:.2f} (median of {a.steps} paired steps)")
        print(json.dumps(r))
        return
    if a.worker == "jax":
        print(json.dumps(jax_worker(a.steps, a.overhead)))
        return
    if a.worker == "torch":
        print(json.dumps(torch_worker(a.steps)))
        return
    one = _spawn(["--worker", "jax", "--overhead", "--steps", str(a.steps)], 1)
    eight = _spawn(["--worker", "jax", "--steps", str(a.steps)], 8)
    pt = _spawn(["--worker", "torch", "--steps", str(a.steps)])
    cmd = f"python bench/bench_train.py --steps {a.steps}"
    md = "\n".join([
        "### Trainer (`bench/bench_train.py`)",
        "",
        f"Command: `{cmd}`. Machine: {os.cpu_count()} CPU cores, CPU only. Model: GPT-2 "
        f"({LAYERS} layers x {WIDTH}, byte vocab), seq {SEQ}, global batch {GLOBAL_BATCH} "
        "sequences, float32, AdamW + clip.",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| step time, constant lr (1 device) | {one['const_step_s'] * 1e3:.1f} ms |",
        f"| step time, 3-piece composite schedule | {one['composite_step_s'] * 1e3:.1f} ms |",
        f"| **schedule overhead ratio** (composite / constant, median of 60 paired steps) | "
        f"**{one['overhead_ratio']:.3f}** (quartiles {one['overhead_quartiles'][0]:.3f}"
        f"-{one['overhead_quartiles'][1]:.3f}) |",
        f"| the composite schedule alone, jitted call incl. dispatch | "
        f"{one['schedule_alone_s'] * 1e6:.1f} us = "
        f"{one['schedule_alone_s'] / one['const_step_s']:.1e} of a step |",
        f"| tokens/s, JAX pmap, 1 device x {GLOBAL_BATCH} seqs | {one['tokens_per_s']:,.0f} |",
        f"| tokens/s, JAX pmap, 8 simulated devices x {GLOBAL_BATCH // 8} seqs | "
        f"{eight['tokens_per_s']:,.0f} |",
        f"| 8 devices / 1 device | {eight['tokens_per_s'] / one['tokens_per_s']:.2f} |",
        f"| tokens/s, PyTorch eager (GPT2LMHeadModel, {pt['threads']} threads) | "
        f"{pt['tokens_per_s']:,.0f} |",
        f"| JAX 1 device / PyTorch | {one['tokens_per_s'] / pt['tokens_per_s']:.2f} |",
        f"| JAX 8 devices / PyTorch | {eight['tokens_per_s'] / pt['tokens_per_s']:.2f} |",
        "",
    ])
    print(md)
    print(json.dumps({"jax_1": one, "jax_8": eight, "torch": pt}))
    if a.out:
        with open(a.out, "w") as f:
            f.write(md)


if __name__ == "__main__":
    main()
