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
wider model, ``--layers 4 --seq 128`` for the previous default "mini"). The process pins itself
to one CPU of those allowed.

    python bench/bench_train.py --paired --compile --widths 128,256 --model llama --steps 6

``--widths`` runs several widths (4 layers, 16 x 128 tokens, heads = max(4, width // 64) unless
given) and prints one markdown table; ``--model llama`` the LLaMA-3 shape against
``LlamaForCausalLM`` (same weights); ``--compile`` adds ``torch.compile`` (inductor: the loss's
forward + backward and the clipped AdamW step, compiled and warmed up outside the timing).

Every mode first sets the host allocator as ``python -m train`` does (``train/allocator.py``:
glibc keeps XLA:CPU's per-step buffer instead of mapping it afresh each step);
``--host-allocator system`` measures with the C library's defaults instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
if "--profile" in sys.argv:  # per-thunk times in jax.profiler traces: set before jax loads
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_enable_xprof_traceme=true").strip()
import models  # noqa: E402
from train.allocator import ENV, MODES, tune_host_allocator  # noqa: E402
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


def _pin_one_cpu() -> int | None:
    """Pin the whole process (XLA's and torch's threads) to one CPU of those allowed, the last
    one (``taskset -c 1`` on a 2-core machine): process CPU time is then one core's work."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    return cpus[-1]


def _bench_configs(model: str, width: int, heads: int, layers: int, seq: int) -> tuple:
    """(our config, transformers config) of one benchmark model.

    ``gpt2``: GPT-2 (LayerNorm, GELU MLP 4C, learned positions, tied head). ``llama``: LLaMA-3
    shape (RMSNorm, SwiGLU of width 4C as LLaMA-3.2 1B, RoPE theta 500000, grouped-query
    attention with LLaMA-3's 4 query heads per key/value head, tied head as LLaMA-3.2)."""
    import transformers

    if model == "gpt2":
        cfg = models.get_config("gpt2", "tiny", vocab_size=VOCAB, block_size=seq, n_layer=layers,
                                n_head=heads, n_embd=width)
        hf_cls, tcfg_cls = transformers.GPT2LMHeadModel, transformers.GPT2Config
    else:
        cfg = models.get_config("llama3", "tiny", vocab_size=VOCAB, block_size=seq,
                                n_layer=layers, n_head=heads, n_kv_head=max(1, heads // 4),
                                n_embd=width, intermediate_size=4 * width, rope_scaling=None,
                                rope_theta=500000.0, tie_embeddings=True)
        hf_cls, tcfg_cls = transformers.LlamaForCausalLM, transformers.LlamaConfig
    d = {k: v for k, v in models.hf_config(cfg).items() if k != "architectures"}
    return cfg, hf_cls, tcfg_cls(**d, attn_implementation="sdpa")


def _torch_step(m: Any, xt: Any, yt: Any, compiled: bool = False,
                scoped: bool = False) -> Any:
    """The PyTorch train step: cross-entropy, backward, clip 1.0, AdamW. ``compiled``: the
    loss's forward + backward (AOTAutograd) and the clipped AdamW under ``torch.compile``;
    ``scoped``: the optimizer's ops in a ``record_function("optimizer")`` (profiles)."""
    import contextlib

    import torch

    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    params = list(m.parameters())

    def loss_of(x, y):
        return torch.nn.functional.cross_entropy(m(x).logits.reshape(-1, VOCAB), y)

    def update() -> None:
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    if compiled:
        loss_of, update = torch.compile(loss_of), torch.compile(update)

    def scope() -> Any:
        return (torch.autograd.profiler.record_function("optimizer") if scoped
                else contextlib.nullcontext())

    def step() -> None:
        loss = loss_of(xt, yt)
        with scope():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        with scope():
            update()

    return step


def _jax_step(cfg: Any, hf_state: Any, tok: Any) -> Any:
    """The JAX train step (jit of loss + gradients + clip + AdamW, donated state), the same
    weights as ``hf_state``: returns ``(step(), jitted, state)``; the optimizer's ops carry the
    name scope ``optimizer``."""
    import jax
    import jax.numpy as jnp
    import optax

    params = models.from_hf(cfg, hf_state)
    module = models.build(cfg)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(1e-3, 0.9, 0.95, weight_decay=0.1, mask=models.decay_mask))
    x, y = jnp.asarray(tok[:, :-1], jnp.int32), jnp.asarray(tok[:, 1:], jnp.int32)

    def step(p, o):
        loss, g = jax.value_and_grad(lambda p: models.loss_fn(module.apply({"params": p}, x),
                                                              y))(p)
        with jax.named_scope("optimizer"):
            u, o = tx.update(g, o, p)
            p = optax.apply_updates(p, u)
        return p, o, loss

    jstep = jax.jit(step, donate_argnums=(0, 1))
    st = [params, tx.init(params)]

    def jax_step() -> None:
        st[0], st[1], loss = jstep(st[0], st[1])
        loss.block_until_ready()

    return jax_step, jstep, st


def _setup(model: str, width: int, heads: int, layers: int, seq: int, batch: int) -> tuple:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg, hf_cls, tcfg = _bench_configs(model, width, heads, layers, seq)
    hf = hf_cls(tcfg).train()
    tok = _batch(np.random.default_rng(0), batch, seq)
    tt = torch.from_numpy(tok)
    xt, yt = tt[:, :-1].contiguous(), tt[:, 1:].reshape(-1).contiguous()
    return cfg, hf_cls, tcfg, hf, tok, xt, yt


def paired(steps: int, width: int, heads: int, layers: int = LAYERS, seq: int = SEQ,
           batch: int = GLOBAL_BATCH, model: str = "gpt2", compile_: bool = False,
           warmup: int = 3) -> dict:
    """JAX vs PyTorch eager (and ``torch.compile``) train step in one process, one thread
    each, alternating (process CPU time)."""
    import torch

    cfg, hf_cls, tcfg, hf, tok, xt, yt = _setup(model, width, heads, layers, seq, batch)
    torch_eager = _torch_step(hf, xt, yt)
    ours = {"jax": None, "eager": torch_eager}
    compile_error = None
    if compile_:
        try:
            hc = hf_cls(tcfg).train()
            hc.load_state_dict(hf.state_dict())
            tc = _torch_step(hc, xt, yt, compiled=True)
            for _ in range(max(warmup, 2)):  # compile (minutes), warm up: outside the timing
                tc()
            ours["compile"] = tc
        except Exception as e:  # any inductor failure: report it in one line, go on
            compile_error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"
    jax_step = _jax_step(cfg, hf.state_dict(), tok)[0]
    ours["jax"] = jax_step
    for _ in range(warmup):
        jax_step()
        torch_eager()
    names = list(ours)
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(steps):  # rotate the order, so that no side always runs first
        for k in names[i % len(names):] + names[:i % len(names)]:
            c0 = time.process_time()
            ours[k]()
            times[k].append(time.process_time() - c0)
    out = {"model": model, "width": width, "heads": heads, "layers": layers, "seq": seq,
           "batch": batch, "steps": steps, "torch_threads": torch.get_num_threads(),
           "attn_implementation": hf.config._attn_implementation}
    for k in names:
        out[f"{k}_cpu_s"] = statistics.median(times[k])
        if k != "jax":  # the median of the per-pair ratios: slow drifts of the machine cancel
            out[f"{k}_over_jax"] = statistics.median(
                b / a for a, b in zip(times["jax"], times[k]))
    out["torch_over_jax"] = out["eager_over_jax"]
    out["torch_cpu_s"] = out["eager_cpu_s"]
    if compile_error:
        out["compile_error"] = compile_error
    return out


BUCKETS = ("matmul", "attention", "norms", "optimizer", "other")
_NORM_RE = re.compile(r"(^|/)(ln_\d+|ln_f|input_layernorm|post_attention_layernorm|norm)(/|$)")
_ATTN_RE = re.compile(r"(^|[/(])attention([/)]|$)")


def _jax_bucket(op_names: list[str], has_dot: bool) -> str:
    """The bucket of one XLA thunk from the HLO ``op_name``s of its operations (those of its
    dots when it has any): the ``optimizer`` and ``attention`` name scopes, the norm modules'
    names, then any other product is a matmul."""
    if any("optimizer" in n for n in op_names):
        return "optimizer"
    if any(_ATTN_RE.search(n) for n in op_names):
        return "attention"
    if any(_NORM_RE.search(n) for n in op_names):
        return "norms"
    return "matmul" if has_dot else "other"


def _hlo_thunk_buckets(hlo: str) -> dict[str, str]:
    """HLO instruction name -> bucket, for every instruction of the optimized module (a thunk
    is named for its instruction; a fusion's operations are those of its computation)."""
    comps: dict[str, list[tuple[str, str, str, str | None]]] = {}
    cur: list = []
    for line in hlo.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            name = line.split()[1] if line.startswith("ENTRY") else line.split()[0]
            cur = comps.setdefault(name.lstrip("%"), [])
            continue
        m = re.match(r"^\s+(?:ROOT\s+)?%?([^\s=]+) = (.*)$", line)
        if not m:
            continue
        rest = m.group(2)
        op = re.search(r"\s([a-z][a-z0-9\-]*)\(", " " + rest.split("metadata=")[0])
        on = re.search(r'op_name="([^"]*)"', rest)
        calls = re.search(r"calls=%?([\w.\-]+)", rest)
        cur.append((m.group(1), op.group(1) if op else "", on.group(1) if on else "",
                    calls.group(1) if calls else None))

    def ops(inst: tuple, depth: int = 0) -> list[tuple[str, str]]:
        out = [(inst[1], inst[2])]
        if inst[3] and depth < 3:
            for sub in comps.get(inst[3], []):
                out += ops(sub, depth + 1)
        return out

    res = {}
    for insts in comps.values():
        for inst in insts:
            o = ops(inst)
            dots = [n for op, n in o if op in ("dot", "convolution") and n]
            names = dots or [n for _, n in o if n]
            has_dot = bool(dots) or inst[0].startswith(("ynn", "dot"))
            res[inst[0]] = _jax_bucket(names, has_dot)
    return res


def jax_profile(jax_step: Any, jstep: Any, st: list, steps: int) -> dict[str, float]:
    """Seconds per step in each bucket of the XLA thunks' times (``jax.profiler`` trace with
    ``--xla_cpu_enable_xprof_traceme=true``, read with ``jax.profiler.ProfileData``)."""
    import glob
    import tempfile

    import jax

    buckets = _hlo_thunk_buckets(jstep.lower(*st).compile().as_text())
    jax_step()
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for _ in range(steps):
                jax_step()
        data = jax.profiler.ProfileData.from_file(
            sorted(glob.glob(f"{d}/**/*.xplane.pb", recursive=True))[-1])
    out = dict.fromkeys(BUCKETS, 0.0)
    unknown = 0.0
    for plane in data.planes:
        for line in plane.lines:
            for ev in line.events:
                stats = dict(ev.stats)
                if "hlo_op" not in stats or not str(stats.get("hlo_module", "")).startswith(
                        "jit_step"):
                    continue
                b = buckets.get(str(stats["hlo_op"]))
                if b is None:
                    unknown += ev.duration_ns
                    b = "other"
                out[b] += ev.duration_ns * 1e-9 / steps
    return out


def torch_profile(step: Any, model: Any, steps: int) -> dict[str, float]:
    """Seconds per step in each bucket of the PyTorch ops' self CPU times
    (``torch.profiler``): the ``optimizer`` record_function; norms by module (forward hooks
    scope the norm modules, and their backward nodes are found by the autograd sequence
    number) and by op name (``layer_norm``); attention = the SDPA kernels (forward and
    backward); matmul = mm/addmm/bmm/baddbmm; the rest other."""
    import torch
    from torch.autograd.profiler import record_function

    open_scopes: list = []

    def pre(mod: Any, args: Any) -> None:
        rf = record_function("norm")
        rf.__enter__()
        open_scopes.append(rf)

    def post(mod: Any, args: Any, out: Any) -> None:
        open_scopes.pop().__exit__(None, None, None)

    hooks = []
    for mod in model.modules():
        if type(mod).__name__.endswith(("Norm", "LayerNorm")):
            hooks += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    for h in hooks:
        h.remove()
    events = list(prof.events())

    def scope_of(ev: Any) -> str | None:
        while ev is not None:
            if ev.name in ("optimizer", "norm"):
                return ev.name
            ev = ev.cpu_parent
        return None

    norm_seq = {ev.sequence_nr for ev in events
                if ev.sequence_nr >= 0 and scope_of(ev) == "norm"}
    matmul = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv",
              "aten::mv", "aten::dot"}

    def bucket(ev: Any) -> str:
        s = scope_of(ev)
        if s == "optimizer":
            return "optimizer"
        e = ev
        while e is not None:  # the op or the autograd node it runs under
            n = e.name
            if "scaled_dot_product" in n or "flash_attention" in n or "ScaledDotProduct" in n:
                return "attention"
            if s == "norm" or "layer_norm" in n or "LayerNorm" in n or (
                    n.startswith("autograd::engine::evaluate_function")
                    and e.sequence_nr in norm_seq):
                return "norms"
            e = e.cpu_parent
        return "matmul" if ev.name in matmul else "other"

    out = dict.fromkeys(BUCKETS, 0.0)
    for ev in events:
        out[bucket(ev)] += ev.self_cpu_time_total * 1e-6 / steps
    return out


def profile(steps: int, width: int, heads: int, layers: int, seq: int, batch: int,
            model: str) -> dict:
    """The JAX and the PyTorch eager step's time split into :data:`BUCKETS`."""
    cfg, _, _, hf, tok, xt, yt = _setup(model, width, heads, layers, seq, batch)
    jax_step, jstep, st = _jax_step(cfg, hf.state_dict(), tok)
    jax_step()
    j = jax_profile(jax_step, jstep, st, steps)
    t = torch_profile(_torch_step(hf, xt, yt, scoped=True), hf, steps)
    return {"model": model, "width": width, "heads": heads, "layers": layers, "seq": seq,
            "batch": batch, "jax_s": j, "torch_s": t}


def _widths(text: str) -> list[int]:
    try:
        ws = [int(w) for w in text.split(",")]
    except ValueError:
        ws = []
    if not ws or any(w < 64 or w % 64 for w in ws):
        raise argparse.ArgumentTypeError(
            f"--widths={text!r}: must be comma-separated multiples of 64 (e.g. 128,256)")
    return ws


def _paired_main(a: argparse.Namespace) -> None:
    many = a.widths is not None
    layers = a.layers or (4 if many else LAYERS)
    seq = a.seq or (128 if many else SEQ)
    batch = a.batch or (16 if many else GLOBAL_BATCH)
    for name in ("steps", "layers", "seq", "batch", "warmup"):
        v = {"steps": a.steps, "layers": layers, "seq": seq, "batch": batch,
             "warmup": a.warmup}[name]
        if v < 1:
            raise SystemExit(f"error: --{name}={v}: must be >= 1")
    cpu = _pin_one_cpu()
    widths = a.widths or [a.width]
    if a.profile:
        _profile_main(a, widths, many, layers, seq, batch, cpu)
        return
    rows = []
    for w in widths:
        heads = max(4, w // 64) if many else a.heads
        r = paired(a.steps, w, heads, layers, seq, batch, a.model, a.compile, a.warmup)
        rows.append(r)
        print(json.dumps(r), flush=True)
    lines = [f"{a.model}, {layers} layers, {batch} x {seq} tokens, byte vocab, float32, AdamW + "
             f"clip; process CPU time per step on CPU {cpu}, 1 thread each "
             f"(torch {rows[0]['torch_threads']}), host allocator {a.host_allocator}, "
             f"median of {a.steps} rotated rounds; "
             f"ratios are medians of the per-round ratios", "",
             "| width | heads | JAX ms | eager ms | eager/JAX | compile ms | compile/JAX |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "compile_cpu_s" in r:
            comp = f"{r['compile_cpu_s'] * 1e3:.1f} | {r['compile_over_jax']:.2f}"
        else:
            comp = "- | -"
        lines.append(f"| {r['width']} | {r['heads']} | {r['jax_cpu_s'] * 1e3:.1f} | "
                     f"{r['eager_cpu_s'] * 1e3:.1f} | {r['eager_over_jax']:.2f} | {comp} |")
    print("\n".join(lines))
    for r in rows:
        if "compile_error" in r:
            print(f"torch.compile failed at width {r['width']}: {r['compile_error']}")


def _profile_main(a: argparse.Namespace, widths: list[int], many: bool, layers: int,
                  seq: int, batch: int, cpu: int | None) -> None:
    lines = [f"{a.model}, {layers} layers, {batch} x {seq} tokens, one thread on CPU {cpu}: "
             f"share of the step's op time (JAX: XLA thunk times; PyTorch eager: ops' self "
             f"CPU time), {a.steps} traced steps; traced ms are wall-clock sums of the ops "
             f"(under load or with concurrent XLA thunks they exceed the step's CPU time: "
             f"read the shares)", "",
             "| width | side | " + " | ".join(BUCKETS) + " | traced ms/step |",
             "|---|---|" + "---|" * (len(BUCKETS) + 1)]
    for w in widths:
        heads = max(4, w // 64) if many else a.heads
        r = profile(a.steps, w, heads, layers, seq, batch, a.model)
        print(json.dumps(r), flush=True)
        for side, key in (("JAX", "jax_s"), ("PyTorch", "torch_s")):
            d = r[key]
            tot = sum(d.values())
            lines.append(f"| {w} | {side} | " + " | ".join(f"{100 * d[b] / tot:.0f}%"
                                                           for b in BUCKETS)
                         + f" | {tot * 1e3:.1f} |")
    print("\n".join(lines))


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
    p.add_argument("--layers", type=int, help="layers (--paired; default: the default run's, "
                   "4 with --widths)")
    p.add_argument("--seq", type=int, help="sequence length (--paired; default: the default "
                   "run's, 128 with --widths)")
    p.add_argument("--batch", type=int, help="sequences per step (--paired; default: the "
                   "default run's, 16 with --widths)")
    p.add_argument("--widths", type=_widths,
                   help="--paired at several widths, comma-separated (heads = max(4, width // 64))")
    p.add_argument("--model", choices=["gpt2", "llama"], default="gpt2",
                   help="--paired: GPT-2 or the LLaMA-3 shape")
    p.add_argument("--warmup", type=int, default=3,
                   help="--paired: untimed rounds before the timed ones")
    p.add_argument("--profile", action="store_true",
                   help="the JAX and the PyTorch eager step split into matmul, attention, "
                   "norms, optimizer and other (the --paired models; --steps traced steps)")
    p.add_argument("--compile", action="store_true",
                   help="--paired: add a torch.compile (inductor) column")
    p.add_argument("--host-allocator", choices=MODES, default="reuse",
                   help="the trainer's host allocator setting (train/allocator.py; default "
                   "reuse, as python -m train); system: the C library's defaults")
    a = p.parse_args()
    os.environ[ENV] = a.host_allocator  # the workers inherit it
    a.host_allocator = tune_host_allocator()  # what applies, before JAX starts its threads
    if a.paired or a.profile:
        _paired_main(a)
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
