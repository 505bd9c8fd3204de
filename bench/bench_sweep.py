"""Population sweeps: K members in one vmapped program vs single runs, measured side by side.

    python bench/bench_sweep.py                          # everything, markdown on stdout
    python bench/bench_sweep.py --ks 1,2,4,8 --steps 3 --e2e-steps 20 --out /tmp/sweep.md

1. **Throughput**: for each K (default 1, 2, 4, 8, 16), one worker process compiles the
   single run's train step (``train.engine.pmap.make_train_step``) and the K-member population step
   (``train.sweep``, K learning rates), then alternates timed blocks of ``--steps`` steps of
   each (``--blocks`` rounds, the median block). Population tokens/s are summed over the
   members, from wall time; the ratio to the single run's tokens/s is taken within the worker,
   so the machine's load (shared with others) cancels out (the population step as the run
   compiles it: ``train.engine.population.MEMBER_LOOP``, on CPUs the members in sequence);
   the same ratio per CPU second of the worker (``time.process_time``) is less sensitive to
   other processes still. Peak memory: the worker's peak RSS on CPU (both programs), or the
   accelerator's peak bytes in use where it reports them.
2. **The run's own figure** (``--run``): one worker process runs the real trainer path
   (``python -m train``'s ``parse_config`` + ``train_and_evaluate``, console and metrics, the
   evaluation and the checkpoint included) of the single run and of a ``--sweep`` of K learning
   rates, alternating ``--rounds`` times (the first round of each compiles and is discarded),
   and prints the tokens/s each run reports (steady state) and their ratio, by wall time and
   per CPU second of the process (``Loop.tokens_per_cpu_s``)::

       python bench/bench_sweep.py --run --ks 8 --run-steps 150 --rounds 4

   ``--run-flags`` adds flags to both runs (``--run-flags="--eval-interval=1000"``) to take a
   difference apart.
3. **End to end**: one ``python -m train --sweep lr=...`` of 8 members against 8 separate
   ``python -m train --lr=...`` runs of the same settings (process start-up, data loading,
   compilation, training, evaluation, checkpoints: everything), run in turn.

Model: GPT-2 "mini" (4 layers x 128, byte vocabulary; the default run's model until
session 4), seq 128, batch 16
sequences, float32, AdamW + clipping, one device.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LRS = [1e-3 * 1.25**i for i in range(64)]


def _base(model_size: str, batch: int, seq: int) -> dict:
    return dict(model="gpt2", model_size=model_size, seq_len=seq, batch_size=batch, devices=1,
                tensorboard=False, sample_tokens=0)


def worker(k: int, steps: int, blocks: int, model_size: str, batch: int, seq: int) -> dict:
    import jax
    import numpy as np

    sys.path.insert(0, ROOT)
    import models
    from train import TrainConfig, build_schedule
    from train.engine.pmap import pmap_engine, replicate
    from train.engine.population import Population, population_engine, population_state
    from train.run.grid import member_configs

    devices = jax.local_devices()[:1]
    cfg = TrainConfig(**_base(model_size, batch, seq), steps=1000)
    mcfg = models.get_config("gpt2", cfg.base_size(), vocab_size=256, **cfg.model_overrides())
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, size=(1, 1, batch, seq + 1)).astype(np.int32)
               for _ in range(4)]
    params = jax.device_get(models.init_params(mcfg, jax.random.key(0)))

    # the single run's step, exactly as train_and_evaluate builds it
    sched = build_schedule(cfg)
    eng = pmap_engine(mcfg, cfg, sched, params, devices)
    tx, p_train = eng.tx, eng.train
    single = replicate({"step": np.zeros((), np.int32), "params": params,
                         "opt_state": jax.device_get(tx.init(params))}, devices)

    # the population: K learning rates (torch cosine: each member's exact table)
    pcfg = cfg.replace(sweep=("lr=" + ",".join(repr(x) for x in LRS[:k]),) if k > 1 else (),
                       sweep_seeds=1 if k == 1 else 0)
    _, members, cfgs = member_configs(pcfg)
    pop = Population(cfgs, members, [build_schedule(c) for c in cfgs])
    pop_eng = population_engine(mcfg, pop, False, devices)  # as run_sweep builds it
    state = pop_eng.put_state(population_state(mcfg, pop))  # every member: seed 0's init

    cpu: dict[str, list[float]] = {"single": [], "pop": []}

    def timed(fn, st, n, kind=None):
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            st, m = fn(st, i)
        jax.block_until_ready(m["loss"])
        if kind:
            cpu[kind].append(time.process_time() - c0)
        return st, time.perf_counter() - t0

    def run_single(st, i):
        return p_train(st, batches[i % 4])

    def run_pop(st, i):
        return pop_eng.train(st, batches[i % 4])

    t0 = time.perf_counter()
    single, _ = timed(run_single, single, 1)  # compile + first step
    t_c1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, _ = timed(run_pop, state, 1)
    t_ck = time.perf_counter() - t0
    ts, tp = [], []
    for _ in range(blocks):
        single, a = timed(run_single, single, steps, "single")
        state, b = timed(run_pop, state, steps, "pop")
        ts.append(a)
        tp.append(b)
    tok = batch * seq * steps
    single_tps = tok / statistics.median(ts)
    pop_tps = k * tok / statistics.median(tp)
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        peak, peak_kind = stats["peak_bytes_in_use"], "device peak bytes in use"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak_kind = "process peak RSS"
    state_bytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(jax.device_get(state)))
    cpu_ratio = k * statistics.median(cpu["single"]) / statistics.median(cpu["pop"])
    return {"k": k, "single_tps": single_tps, "pop_tps": pop_tps, "ratio": pop_tps / single_tps,
            "cpu_ratio": cpu_ratio,
            "compile_single_s": t_c1, "compile_pop_s": t_ck, "peak_bytes": peak,
            "peak_kind": peak_kind, "state_bytes": state_bytes, "device": dev.device_kind}


def run_worker(k: int, steps: int, rounds: int, flags: list[str], loops: list[str]) -> dict:
    """The single run and the K-member sweep (each of ``loops``: the population step's
    ``MEMBER_LOOP``) through the trainer's own path, alternating."""
    import shutil

    sys.path.insert(0, ROOT)
    import train.engine.population as population
    from train.__main__ import parse_config
    from train.run.train import train_and_evaluate

    tmp = tempfile.mkdtemp(prefix="bench-run-")
    common = ["--devices=1", f"--steps={steps}", "--model-size=tiny", "--sample-tokens=0",
              f"--eval-interval={steps}", "--no-tensorboard", "--overwrite", *flags]
    sweep = ["--sweep", "lr=" + ",".join(f"{1e-3 * (i + 1):g}" for i in range(k))]
    kinds = [("single", [], "auto")] + [(f"sweep {x}", sweep, x) for x in loops]
    res: dict[str, list[tuple[float, float]]] = {n: [] for n, _, _ in kinds}
    for r in range(rounds + 1):
        for kind, extra, loop in kinds:
            population.MEMBER_LOOP = loop
            wd = os.path.join(tmp, kind.replace(" ", "-"))
            cfg, _ = parse_config(["--workdir", wd, *common, *extra])
            out = train_and_evaluate(cfg, wd)
            if r:  # round 0 compiles
                res[kind].append((out["tokens_per_s"], out["tokens_per_cpu_s"]))
            print(f"round {r} {kind}: {out['tokens_per_s']:,.0f} tok/s, "
                  f"{out['tokens_per_cpu_s']:,.0f} tok/CPU-s", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    med = {n: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
           for n, v in res.items()}
    return {"k": k, "rows": [
        {"kind": n, "tps": med[n][0], "cpu_tps": med[n][1], "ratio": med[n][0] / med["single"][0],
         "cpu_ratio": med[n][1] / med["single"][1],
         "paired": [b[0] / a[0] for a, b in zip(res["single"], res[n])]} for n in res]}


def _train_cmd(workdir: str, extra: list[str], common: list[str]) -> list[str]:
    return [sys.executable, "-m", "train", "--workdir", workdir, *common, *extra]


def end_to_end(n: int, steps: int, model_size: str, batch: int, seq: int) -> dict:
    sys.path.insert(0, ROOT)
    from train.data import load_data
    from train.tokenizer import get_tokenizer

    tmp = tempfile.mkdtemp(prefix="bench-sweep-")
    cache = os.path.join(tmp, "cache")
    load_data(None, None, get_tokenizer("byte"), cache, 0.05)  # tokenize once, untimed
    common = [f"--{k.replace('_', '-')}={v}" for k, v in _base(model_size, batch, seq).items()
              if not isinstance(v, bool)]
    common += ["--no-tensorboard", f"--steps={steps}", f"--eval-interval={steps}",
               "--eval-batches=2", f"--checkpoint-interval={steps}", f"--data-cache={cache}",
               f"--log-interval={steps}"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    lrs = LRS[:n]
    t0 = time.perf_counter()
    r = subprocess.run(_train_cmd(os.path.join(tmp, "sweep"),
                                  ["--sweep", "lr=" + ",".join(repr(x) for x in lrs)], common),
                       env=env, cwd=ROOT, capture_output=True, text=True)
    t_sweep = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    t0 = time.perf_counter()
    for i, lr in enumerate(lrs):
        r = subprocess.run(_train_cmd(os.path.join(tmp, f"run{i}"), [f"--lr={lr!r}"], common),
                           env=env, cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
    t_sep = time.perf_counter() - t0
    return {"n": n, "steps": steps, "sweep_s": t_sweep, "separate_s": t_sep,
            "ratio": t_sweep / t_sep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ks", default="1,2,4,8,16")
    ap.add_argument("--steps", type=int, default=3, help="steps per timed block")
    ap.add_argument("--blocks", type=int, default=3, help="alternating timed blocks")
    ap.add_argument("--e2e-members", type=int, default=8)
    ap.add_argument("--e2e-steps", type=int, default=20)
    ap.add_argument("--model-size", default="mini")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--out", help="also write the markdown here")
    ap.add_argument("--run", action="store_true",
                    help="the trainer's own path: single run vs --sweep, reported tokens/s")
    ap.add_argument("--run-steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--run-flags", default="", help="more flags for both runs")
    ap.add_argument("--loops", default="vmap,scan",
                    help="--run: the population step's member loops to compare")
    ap.add_argument("--run-worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    shape = (a.model_size, a.batch_size, a.seq_len)
    if a.worker is not None:
        print(json.dumps(worker(a.worker, a.steps, a.blocks, *shape)))
        return
    if a.run_worker is not None:
        print(json.dumps(run_worker(a.run_worker, a.run_steps, a.rounds, a.run_flags.split(),
                                    a.loops.split(","))))
        return
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if a.run:
        run_main(a, env)
        return
    rows = []
    for k in (int(x) for x in a.ks.split(",")):
        r = subprocess.run([sys.executable, __file__, "--worker", str(k), "--steps", str(a.steps),
                            "--blocks", str(a.blocks), "--model-size", a.model_size,
                            "--batch-size", str(a.batch_size), "--seq-len", str(a.seq_len)],
                           env=env, cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"K={k}: {rows[-1]}", file=sys.stderr)
    lines = [f"Device: {rows[0]['device']}; model {a.model_size}, batch {a.batch_size} x seq "
             f"{a.seq_len}; median of {a.blocks} blocks of {a.steps} steps.", "",
             "| K | single run tokens/s | population tokens/s (sum) | population / single | "
             "same, per CPU second | compile single / population (s) | population state | "
             "peak memory |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['k']} | {r['single_tps']:,.0f} | {r['pop_tps']:,.0f} | "
                     f"**{r['ratio']:.2f}** | {r['cpu_ratio']:.2f} | "
                     f"{r['compile_single_s']:.1f} / "
                     f"{r['compile_pop_s']:.1f} | {r['state_bytes'] / 2**20:.1f} MiB | "
                     f"{r['peak_bytes'] / 2**20:,.0f} MiB ({r['peak_kind']}) |")
    if not a.skip_e2e:
        e = end_to_end(a.e2e_members, a.e2e_steps, *shape)
        lines += ["", f"End to end, {e['n']} members x {e['steps']} steps (start-up, data, "
                  "compilation, training, evaluation, checkpoints):", "",
                  "| one `--sweep` run | separate `python -m train` runs | sweep / separate |",
                  "|---|---|---|",
                  f"| {e['sweep_s']:.1f} s | {e['separate_s']:.1f} s | **{e['ratio']:.2f}** |"]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


def run_main(a: argparse.Namespace, env: dict) -> None:
    import platform

    cpu = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines()
        if ln.startswith("Model name")), platform.processor())
    lines = [f"CPU: {cpu}, {os.cpu_count()} CPUs; tiny model, {a.run_steps} steps per run, "
             f"median of {a.rounds} rounds (the runs alternating, after one compiling round); "
             f"flags: {a.run_flags or 'none'}", "",
             "| K | run | tokens/s (sweep: sum) | / single | tokens per CPU s | / single | "
             "paired ratios |", "|---|---|---|---|---|---|---|"]
    for k in (int(x) for x in a.ks.split(",")):
        r = subprocess.run([sys.executable, __file__, "--run-worker", str(k), "--run-steps",
                            str(a.run_steps), "--rounds", str(a.rounds), "--loops", a.loops,
                            f"--run-flags={a.run_flags}"],
                           env=env, cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
        x = json.loads(r.stdout.strip().splitlines()[-1])
        for row in x["rows"]:
            lines.append(f"| {k} | {row['kind']} | {row['tps']:,.0f} | **{row['ratio']:.2f}** | "
                         f"{row['cpu_tps']:,.0f} | **{row['cpu_ratio']:.2f}** | "
                         + ", ".join(f"{v:.2f}" for v in row["paired"]) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
