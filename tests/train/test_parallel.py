"""The mesh engine's layouts against pmap data parallelism (8 simulated CPU devices).

Each row of :data:`MATRIX` reads like a trainer config: a model, a scheduler, a layout, a
dtype. It trains 10 steps on the same global batch (8 rows per step: pmap DP=8 with
``batch_size=1``; a mesh layout with ``DP=d`` gets ``batch_size=8/d``) and must log the same
learning rates as pmap (identical: the optimizer's count through the same schedule) and the
same losses: float32 within 1e-5 relative (the layouts sum the same numbers in other orders);
bfloat16 within :data:`BF16_RTOL` (a sharded matmul rounds its bf16 output after a different
summation order, ~2^-8 relative per rounding, and 10 steps of training compound it).

The default run takes a representative subset (``DEFAULT``); the full matrix is::

    SCHEDAX_FULL_MATRIX=1 python -m pytest -q tests/train/test_parallel.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_testutil import ROOT, cpu_env, tiny, two_process_argvs

import models
import schedules as S
from train import TrainConfig, build_schedule
from train import train_and_evaluate as run
from train.data import Batcher, TokenData
from train.engine.mesh import build
from train.engine.pmap import make_train_step, replicate, unreplicate
from train.optim import make_optimizer
from train.parallel.layout import Layout, check_flags, make_layout
from train.run.memplan import memory_plan
from train.run.setup import global_batch
from train.schedule.build import applied_schedule

FULL = os.environ.get("SCHEDAX_FULL_MATRIX") == "1"
STEPS, GLOBAL_ROWS, SEQ = 10, 8, 16
F32_RTOL = 1e-5
BF16_RTOL = 2e-2

MODELS = {
    "gpt2": dict(model="gpt2", model_size="tiny", n_layer=2, n_head=4, n_embd=32),
    # GQA 8:4, so that TP=4 splits the KV heads too
    "llama3": dict(model="llama3", model_size="tiny", n_layer=2, n_head=8, n_kv_head=4,
                   n_embd=32),
}
SCHEDULES = {
    "steplr": dict(lr_scheduler="steplr", lr_step_size=3, lr_gamma=0.5, warmup_steps=0),
    "chained": dict(lr_scheduler="chained", lr_chain=("steplr", "linear"), lr_step_size=3,
                    lr_gamma=0.5, lr_start_factor=0.5, warmup_steps=0),
    "warmup-cosine": dict(lr_scheduler="cosine", warmup_steps=3),
}
#: Megatron-LM's decay styles (``--lr-decay-style``, with warmup), as that trainer's lr-scheduler
#: group runs them: one per layout at least (:data:`DECAY_ROWS`)
DECAY_STYLES = {
    f"megatron-{style}": dict(lr_decay_style=style, lr_warmup_iters=2, min_lr=1e-3)
    for style in ("constant", "linear", "cosine", "inverse-square-root")}
SCHEDULES.update(DECAY_STYLES)
BASE_SCHEDULES = ("steplr", "chained", "warmup-cosine")
LAYOUTS = {
    "DP=8": dict(engine="mesh"),
    "ZeRO-1x8": dict(zero_stage=1),
    "ZeRO-2x8": dict(zero_stage=2),
    "ZeRO-3x8": dict(zero_stage=3),
    "TP=4xDP=2": dict(tensor_parallel=4),
    "TP=4+SPxDP=2": dict(tensor_parallel=4, sequence_parallel=True),
    "TP=2xZeRO-1xDP=4": dict(tensor_parallel=2, zero_stage=1),
    "TP=2+SPxZeRO-3x4": dict(tensor_parallel=2, sequence_parallel=True, zero_stage=3),
}
MATRIX = [(m, s, lay, dt) for m in MODELS for s in BASE_SCHEDULES for lay in LAYOUTS
          for dt in ("float32", "bfloat16")]
# the scheduler group: layout k runs decay style k mod 4, for both models, float32
MATRIX += [(m, list(DECAY_STYLES)[k % 4], lay, "float32") for m in MODELS
           for k, lay in enumerate(LAYOUTS)]
#: the default run: every model, scheduler, ZeRO stage 2/3, TP, SP, bf16 at least once
DEFAULT = {("gpt2", "steplr", "ZeRO-3x8", "float32"),
           ("gpt2", "chained", "TP=4+SPxDP=2", "float32"),
           ("llama3", "warmup-cosine", "TP=2+SPxZeRO-3x4", "float32"),
           ("llama3", "steplr", "TP=4xDP=2", "bfloat16")}


def _cfg(model: str, sched: str, layout: str | None, dtype: str = "float32", **kw) -> TrainConfig:
    lay = LAYOUTS[layout] if layout else {}
    d = dict(**MODELS[model], **SCHEDULES[sched], **lay, dtype=dtype, seq_len=SEQ, lr=1e-2,
             steps=STEPS, batch_size=1, sample_tokens=0, tensorboard=False)
    d.update(kw)
    if layout:
        tp = lay.get("tensor_parallel", 1) * lay.get("pipeline_parallel", 1)
        d["batch_size"] = d["batch_size"] * tp  # same global batch as pmap DP=8
    return TrainConfig.from_dict(d)


_DATA = TokenData([np.random.default_rng(0).integers(0, 256, 50_000).astype(np.uint16)], "t")


def _setup(cfg: TrainConfig) -> tuple:
    model_cfg = models.get_config(cfg.model, cfg.base_size(), vocab_size=256,
                                  **cfg.model_overrides())
    # Megatron's styles count samples: the global batch, as the run's setup passes it
    library = build_schedule(cfg, global_batch(cfg) if cfg.lr_decay_style else None)
    params = jax.device_get(models.init_params(model_cfg, jax.random.key(cfg.seed)))
    # what the engines apply: the host's float64 lr of each step rounded once to float32
    schedule = applied_schedule(library, max(cfg.steps, cfg.schedule_steps))
    tx = make_optimizer(cfg, schedule, params)
    state = {"step": np.zeros((), np.int32), "params": params,
             "opt_state": jax.device_get(tx.init(params))}
    return model_cfg, schedule, tx, state


_TRAJ: dict = {}


def trajectory(cfg: TrainConfig, steps: int = STEPS) -> dict:
    """Train ``steps`` steps with ``cfg``'s engine: losses, lrs, host state (cached)."""
    key = (repr(cfg), steps)
    if key in _TRAJ:
        return _TRAJ[key]
    model_cfg, schedule, tx, state = _setup(cfg)
    n_dev = len(jax.devices())
    if cfg.mesh_engine:
        layout = make_layout(cfg, model_cfg, n_dev)
        eng = build(model_cfg, tx, schedule, cfg.seed, layout, state["params"])
        put, get, step = eng.put_state, eng.get_state, eng.train
        replicas = layout.data
    else:
        p_train = make_train_step(model_cfg, tx, cfg.seed, schedule=schedule)
        put, get, replicas = (lambda t: replicate(t, None)), unreplicate, n_dev
        step = p_train
    batcher = Batcher(_DATA, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                      grad_accum=cfg.grad_accum, local_devices=replicas, seed=cfg.seed)
    s = put(state)
    losses, lrs = [], []
    for t in range(steps):
        s, m = step(s, batcher.batch(t))
        m = jax.device_get(m)
        losses.append(float(m["loss"][0]))
        lrs.append(m["lr"][0] if "lr" in m else None)
    host_lrs = [np.float32(x) for x in S.values(build_schedule(
        cfg, global_batch(cfg) if cfg.lr_decay_style else None), steps)]
    out = {"losses": losses, "lrs": lrs, "state": get(s), "schedule": schedule,
           "host_lrs": host_lrs,
           "init": state["params"],
           "layout": eng.layout if cfg.mesh_engine else None}
    _TRAJ[key] = out
    return out


def _row_id(row: tuple) -> str:
    return "-".join(row)


@pytest.mark.parametrize("row", MATRIX, ids=_row_id)
def test_layout_matches_pmap(row: tuple) -> None:
    if row not in DEFAULT and not FULL:
        pytest.skip("full matrix: SCHEDAX_FULL_MATRIX=1")
    model, sched, layout, dtype = row
    accum = 2 if (model, sched, layout) == ("gpt2", "chained", "TP=4+SPxDP=2") else 1
    # grad accumulation: pmap DP=8 x 2 micro-batches of 1 row vs TP=4 x DP=2 x 2 x 4 rows
    ref = trajectory(_cfg(model, sched, None, dtype, grad_accum=accum))
    got = trajectory(_cfg(model, sched, layout, dtype, grad_accum=accum))
    # the applied lr: the library's float64 value rounded once to float32, on every layout
    # (the same bits on pmap and here, whatever XLA does with the step's arithmetic)
    want_lr = ref["host_lrs"]
    assert [np.float32(x) for x in got["lrs"]] == want_lr  # identical, bit for bit
    assert [np.float32(x) for x in ref["lrs"]] == want_lr
    assert len(set(want_lr)) > 2  # the schedule really moves in 10 steps
    rtol = F32_RTOL if dtype == "float32" else BF16_RTOL
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=rtol)
    assert got["losses"][-1] < got["losses"][0], got["losses"]  # it learns
    # float32: the final parameters agree too. (Not in bfloat16: AdamW's normalised update
    # turns a rounding-level gradient difference on a near-zero gradient into a different
    # sign, a full lr-sized step, so single weights can differ by ~10 x lr after 10 steps.)
    if dtype == "float32":
        pairs = zip(jax.tree.leaves(got["state"]["params"]),
                    jax.tree.leaves(ref["state"]["params"]))
        for a, b in pairs:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)


#: pipeline layouts (train/parallel/pipeline.py): 8 layers, 8 micro-batches (--grad-accum) of 1
#: row per pmap device; the mesh layouts get the same global batch (DP x grad-accum x batch-size)
PP_LAYOUTS = {
    "PP=8": dict(pipeline_parallel=8),
    "PP=4xvPP=2": dict(pipeline_parallel=4, virtual_pipeline_parallel=2),
    "TP=2+SP+PP=2+vPP=2": dict(tensor_parallel=2, sequence_parallel=True, pipeline_parallel=2,
                               virtual_pipeline_parallel=2),
    "TP=2+SP+PP=2+vPP=2xZeRO-1": dict(tensor_parallel=2, sequence_parallel=True,
                                      pipeline_parallel=2, virtual_pipeline_parallel=2,
                                      zero_stage=1),
    "PP=8+recompute-uniform-1": dict(pipeline_parallel=8, recompute="full"),
    "PP=4xvPP=2+recompute-block-2": dict(pipeline_parallel=4, virtual_pipeline_parallel=2,
                                         recompute="full", recompute_method="block",
                                         recompute_num_layers=2),
    "TP=2+SP+PP=2+vPP=2+recompute-uniform-3": dict(
        tensor_parallel=2, sequence_parallel=True, pipeline_parallel=2,
        virtual_pipeline_parallel=2, recompute="full", recompute_num_layers=3),
}
LAYOUTS.update(PP_LAYOUTS)
PP_N_LAYER = {"PP=4xvPP=2+recompute-block-2": 16}  # block 2 needs 2 layers per model chunk
PP_MATRIX = [(m, s, lay, dt) for m in MODELS for s in BASE_SCHEDULES for lay in PP_LAYOUTS
             for dt in ("float32", "bfloat16")]
PP_MATRIX += [(m, list(DECAY_STYLES)[k % 4], lay, "float32") for m in MODELS
              for k, lay in enumerate(PP_LAYOUTS)]
PP_DEFAULT = {("llama3", "warmup-cosine", "TP=2+SP+PP=2+vPP=2xZeRO-1", "float32"),
              ("gpt2", "megatron-constant", "PP=8+recompute-uniform-1", "float32")}
PP_STEPS = 4


def test_default_rows_are_rows_of_the_matrix() -> None:
    """A default row that is not in its matrix would silently never run."""
    assert DEFAULT.issubset(MATRIX) and PP_DEFAULT.issubset(PP_MATRIX)


@pytest.mark.parametrize("row", PP_MATRIX, ids=_row_id)
def test_pipeline_layout_matches_pmap(row: tuple) -> None:
    """Pipeline rows against pmap DP=8 with the same global batch (8 micro-batches): identical
    lrs, float32 losses within 1e-5 relative (bfloat16: :data:`BF16_RTOL`, the mesh rows'
    reason), float32 final parameters the same (GPT-2's tied embedding included: its gradient
    is the sum of the input and output uses)."""
    if row not in PP_DEFAULT and not FULL:
        pytest.skip("full matrix: SCHEDAX_FULL_MATRIX=1")
    model, sched, layout, dtype = row
    steps = STEPS if FULL else PP_STEPS
    # eps 1e-6, not AdamW's 1e-8: the pipeline sums the 8 micro-batches' gradients in another
    # order than pmap's psum, and with eps 1e-8 Adam turns the float32 rounding of a near-zero
    # gradient entry into an lr-sized step of either sign (measured: the 8-layer LLaMA-3 at the
    # warmup-cosine peak, PP=8 vs pmap, loss 6e-6 apart at step 6 and 7e-4 at step 7 with
    # eps 1e-8; <= 2.4e-6 over the 10 steps with eps 1e-6). The layouts are what is compared.
    kw = dict(n_layer=PP_N_LAYER.get(layout, 8), grad_accum=8, eps=1e-6)
    ref = trajectory(_cfg(model, sched, None, dtype, **kw), steps)
    got = trajectory(_cfg(model, sched, layout, dtype, **kw), steps)
    assert (got["layout"].pipe, got["layout"].virtual) == (
        PP_LAYOUTS[layout]["pipeline_parallel"],
        PP_LAYOUTS[layout].get("virtual_pipeline_parallel", 1))
    # the applied lr, bit for bit on every layout: the library's value rounded once
    assert [np.float32(x) for x in got["lrs"]] == ref["host_lrs"]
    assert [np.float32(x) for x in ref["lrs"]] == ref["host_lrs"]
    np.testing.assert_allclose(got["losses"], ref["losses"],
                               rtol=F32_RTOL if dtype == "float32" else BF16_RTOL)
    # not vacuous: the run updated the parameters (a loss comparison cannot show it here: an
    # 8-layer LLaMA-3 moves its loss less than the batch-to-batch noise in 10 steps of StepLR;
    # a few entries, like GPT-2's attention key bias, have an exactly zero gradient)
    moved = [np.asarray(a, np.float32) != np.asarray(b, np.float32) for a, b in
             zip(jax.tree.leaves(got["state"]["params"]), jax.tree.leaves(got["init"]))]
    assert sum(int(m.sum()) for m in moved) >= 0.9 * sum(m.size for m in moved)
    if dtype != "float32":  # see test_layout_matches_pmap: bf16 parameters are not compared
        return
    # final parameters: AdamW turns a rounding difference in a near-zero gradient entry into a
    # different normalised update (|update| <= lr per step), so a few entries may move apart by
    # up to sum(lr); 99% must agree within 1e-4 (the matrix's atol; measured after 10 steps of
    # LLaMA-3 PP=8: 89% within 1e-5, max 2.3e-4)
    bound = float(np.sum(np.asarray(got["lrs"], np.float64))) * 1.01
    diffs = np.concatenate([np.abs(np.asarray(a) - np.asarray(b)).ravel() for a, b in zip(
        jax.tree.leaves(got["state"]["params"]), jax.tree.leaves(ref["state"]["params"]))])
    assert diffs.max() <= bound and np.mean(diffs <= 1e-4) >= 0.99, (diffs.max(), bound)


def test_dropout_same_masks_on_every_mesh_layout() -> None:
    """Dropout's masks are drawn over the global batch, so layouts agree (not with pmap,
    whose masks are drawn per device)."""
    a = trajectory(_cfg("gpt2", "steplr", "DP=8", dropout=0.1), steps=4)
    b = trajectory(_cfg("gpt2", "steplr", "TP=2+SPxZeRO-3x4", dropout=0.1), steps=4)
    c = trajectory(_cfg("gpt2", "steplr", None))  # no dropout (pmap, shared with the matrix)
    np.testing.assert_allclose(b["losses"], a["losses"], rtol=F32_RTOL)
    assert abs(a["losses"][1] - c["losses"][1]) > 1e-3


def _leaf_bytes(tree) -> list[int]:
    return [np.asarray(x).nbytes for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("layout,n_params,n_opt", [
    ("DP=8", 1, 1), ("ZeRO-1x8", 1, 8), ("ZeRO-2x8", 1, 8), ("ZeRO-3x8", 8, 8),
    ("TP=4xDP=2", 4, 4), ("TP=2+SPxZeRO-3x4", 8, 8)])
def test_bytes_per_device_are_the_expected_fraction(layout, n_params, n_opt) -> None:
    """Per-device bytes (from ``addressable_shards``) = 1/N of the replicated bytes, plus at
    most the small tensors a layout leaves replicated (1-D gains/biases under TP, scalars)."""
    cfg = _cfg("gpt2", "steplr", layout)
    model_cfg, schedule, tx, state = _setup(cfg)
    lay = make_layout(cfg, model_cfg, len(jax.devices()))
    eng = build(model_cfg, tx, schedule, cfg.seed, lay, state["params"])
    b = eng.bytes_per_device(eng.put_state(state))
    full_p, full_o = sum(_leaf_bytes(state["params"])), sum(_leaf_bytes(state["opt_state"]))
    small_p = sum(n for n, x in zip(_leaf_bytes(state["params"]), jax.tree.leaves(state["params"]))
                  if np.ndim(x) < 2 or x.shape[0] == SEQ)  # 1-D tensors, position embedding
    small_o = 2 * small_p + 64  # two moments + the counts
    assert full_p / n_params <= b["params"] <= full_p / n_params + (small_p if n_params > 1 and
                                                                      lay.tensor > 1 else 0)
    assert full_o / n_opt <= b["opt_state"] <= full_o / n_opt + (
        small_o if lay.tensor > 1 else 64)
    grads_ways = 8 if lay.zero_stage >= 2 else n_params if lay.zero_stage < 1 else lay.tensor
    assert full_p / grads_ways <= b["grads"] <= full_p / grads_ways + small_p
    if layout == "ZeRO-3x8":  # every GPT-2 tensor of this size has a dim divisible by 8
        assert b["params"] == full_p / 8


def test_zero_shards_the_moments_of_lr_mult_groups_too() -> None:
    """``--lr-mults`` (optax ``multi_transform``, masked groups): every AdamW moment is still
    laid out like its parameter under ZeRO-1, counts replicated."""
    specs = {}
    for lm in ("", "wte=0.1"):
        cfg = _cfg("gpt2", "steplr", "ZeRO-1x8", lr_mults=lm)
        model_cfg, schedule, tx, state = _setup(cfg)
        eng = build(model_cfg, tx, schedule, 0, Layout(data=8, zero_stage=1), state["params"])
        specs[lm] = [s.spec for s in jax.tree.leaves(eng.state_shardings["opt_state"])]
    n = len(jax.tree.leaves(state["params"]))
    for lm, sp in specs.items():
        assert sum(s != jax.sharding.PartitionSpec() for s in sp) == 2 * n, lm


def _through_checkpoints(tmp: str, src: dict, chain: list, model_cfg) -> None:
    """Save ``src`` (the first engine's sharded state) with the :class:`Checkpointer`, restore
    it onto each next layout of ``chain`` and save it from there again: every restore
    bit-identical to ``src``; the mesh engines read and write their sharded arrays (no host
    copy is handed to orbax)."""
    from train.checkpoint import Checkpointer, leaf_checksums

    conf = {"model": model_cfg.__class__.__name__}
    ck = Checkpointer(tmp, keep=10)
    def sums(tree: dict) -> dict:  # the step differs: each save records its own
        return {k: v for k, v in leaf_checksums(tree).items() if k != "step"}

    want = sums(src)
    saved_from = None
    for k, (name, eng) in enumerate(chain):
        if k == 0:
            state = eng.put_state(src)
        else:
            if eng is None:  # pmap DP=8: host arrays, replicated on the devices
                state = replicate(ck.restore(k - 1, src, conf), None)
            else:
                target = eng.restore_target(src)
                restored = ck.restore(k - 1, target, conf)
                for x, t in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
                    assert x.sharding == t.sharding, (name, saved_from)
                state = eng.put_state(eng.from_checkpoint(restored))
        view = (jax.tree.map(np.asarray, unreplicate(state)) if eng is None
                else eng.checkpoint_view(state))
        if eng is not None:
            assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(view))
        assert sums(view) == want, name
        back = unreplicate(state) if eng is None else eng.get_state(state)
        assert int(back["step"]) == max(k - 1, 0)
        back, ref = {**back, "step": src["step"]}, src
        for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(ref)):
            assert np.asarray(x).dtype == np.asarray(y).dtype
            np.testing.assert_array_equal(x, y, err_msg=f"{saved_from} -> {name}")
        ck.save(k, {**view, "step": np.asarray(k, np.int32)} if eng is None else
                {**view, "step": jax.device_put(np.asarray(k, np.int32), view["step"].sharding)},
                conf)
        ck.wait()
        saved_from = name
    ck.close()


def _random_state(cfg: TrainConfig) -> tuple:
    """(model config, schedule, optimizer, a host state whose every float leaf holds random
    values: distinct bit patterns everywhere, as a trained state has; nothing compiled)."""
    model_cfg, schedule, tx, state = _setup(cfg)
    r = np.random.default_rng(1)
    state = jax.tree.map(lambda x: r.normal(size=np.shape(x)).astype(np.asarray(x).dtype)
                         if np.issubdtype(np.asarray(x).dtype, np.floating) else x, state)
    return model_cfg, schedule, tx, state


def test_checkpoint_state_moves_between_layouts_bit_identically(tmp_path) -> None:
    """A state under TP=4 x DP=2, saved through the checkpointer from its sharded arrays,
    restored onto ZeRO-3 x 8, one device, pmap DP=8 and TP=4 x DP=2 again (each saving it once
    more for the next): every array bit-identical."""
    model_cfg, schedule, tx, src = _random_state(_cfg("llama3", "steplr", None))
    chain = [(name, build(model_cfg, tx, schedule, 0, lay, src["params"])) for name, lay in [
        ("TP=4xDP=2", Layout(data=2, tensor=4)), ("ZeRO-3x8", Layout(data=8, zero_stage=3)),
        ("1 device", Layout(data=1))]]
    chain += [("pmap DP=8", None), chain[0]]
    _through_checkpoints(str(tmp_path / "c"), src, chain, model_cfg)


@pytest.fixture(scope="module")
def pmap_ref(tmp_path_factory, corpus) -> tuple[dict, dict]:
    """A 4-step pmap DP=8 run through ``train_and_evaluate`` (the loop-level reference)."""
    tmp = tmp_path_factory.mktemp("pmap_ref")
    base = tiny(str(tmp), corpus, n_head=4, n_embd=32, seq_len=SEQ, batch_size=1, steps=4,
                total_steps=6, eval_interval=100, checkpoint_interval=2)
    return base, run(base, str(tmp / "ref"))


def test_resume_across_layouts_and_on_the_same_layout(tmp_path, pmap_ref, capsys) -> None:
    """Save under TP=4 x DP=2 (``train_and_evaluate``); resume under pmap DP=8: the resumed
    steps match an uninterrupted pmap run's; resume under TP=4 x DP=2 again: bit-identical to
    an uninterrupted TP=4 x DP=2 run."""
    base, ref = pmap_ref
    mesh = {**base, "tensor_parallel": 4, "batch_size": 4}
    wd, same = str(tmp_path / "w"), str(tmp_path / "same")
    run({**mesh, "steps": 2}, wd)
    out = capsys.readouterr().out
    assert "mesh: data=2 x tensor=4" in out and "per-device bytes (DP=2 x TP=4" in out
    shutil.copytree(wd, same)
    # the saved settings fill in what the mapping leaves out: name the pmap layout explicitly
    s = run({**base, "resume": True, "tensor_parallel": None, "engine": "pmap"}, wd)
    assert s["start_step"] == 2
    np.testing.assert_allclose([x for _, x in s["losses"]], [x for _, x in ref["losses"][2:]],
                               rtol=F32_RTOL)
    full = run(mesh, str(tmp_path / "full"))
    again = run({**mesh, "resume": True}, same)
    assert again["start_step"] == 2 and again["losses"] == full["losses"][2:]
    for x, y in zip(jax.tree.leaves(again["params"]), jax.tree.leaves(full["params"])):
        np.testing.assert_array_equal(x, y)


def test_devices_is_the_mesh_engines_device_count_too(tmp_path, pmap_ref, capsys) -> None:
    """``--devices=N`` on the mesh engine: ``--devices=8 --zero-stage=1`` on the 8 devices trains
    bit-identically to ``--zero-stage=1`` alone (the same mesh, compiled afresh) and as pmap
    DP=8; ``--devices=4 --tensor-parallel=2`` derives DP=2 and runs on the first 4 devices."""
    base, ref = pmap_ref
    z = {**base, "zero_stage": 1, "steps": 2}
    with_n = run({**z, "devices": 8}, str(tmp_path / "n"))
    out = capsys.readouterr().out
    assert "mesh: data=8 x tensor=1" in out and "(DP=8 x ZeRO-1" in out
    alone = run(z, str(tmp_path / "all"))
    assert with_n["losses"] == alone["losses"]
    for x, y in zip(jax.tree.leaves(with_n["params"]), jax.tree.leaves(alone["params"])):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose([x for _, x in with_n["losses"]],
                               [x for _, x in ref["losses"][:2]], rtol=F32_RTOL)
    # (its numbers against pmap: the TP rows of the matrix)
    tp = run({**base, "devices": 4, "tensor_parallel": 2, "batch_size": 2, "steps": 1},
             str(tmp_path / "tp"))
    out = capsys.readouterr().out
    assert "mesh: data=2 x tensor=2; devices (data rows of tensor groups): [0 1], [2 3]" in out
    assert "devices: 4 (1 process(es) x 2," in out and np.isfinite(tp["final_loss"])


@pytest.mark.parametrize("kw,want", [
    (dict(devices=8, zero_stage=1), Layout(data=8, zero_stage=1)),
    (dict(devices=4, tensor_parallel=2), Layout(data=2, tensor=2)),
    (dict(devices=8, tensor_parallel=2, pipeline_parallel=2, grad_accum=2, n_layer=2),
     Layout(data=2, tensor=2, pipe=2)),
    (dict(devices=4, data_parallel=4, zero_stage=3), Layout(data=4, zero_stage=3)),
])
def test_devices_derives_the_data_parallel_degree(kw, want) -> None:
    """DP = devices / (TP x PP) when ``--data-parallel`` is unset; the layout uses all of them."""
    d = dict(model="gpt2", model_size="tiny", n_head=4, n_embd=32, seq_len=SEQ, **kw)
    cfg = TrainConfig.from_dict(d)
    check_flags(cfg)  # the flags alone accept it
    model_cfg = models.get_config(cfg.model, cfg.base_size(), **cfg.model_overrides())
    assert make_layout(cfg, model_cfg, kw["devices"]) == want


@pytest.mark.parametrize("kw,match", [
    (dict(devices=8, data_parallel=3),
     r"--data-parallel=3 x --tensor-parallel=1 = 3 is invalid: the product must equal the "
     r"device count 8 \(--devices=8\)"),
    (dict(devices=8, data_parallel=2, tensor_parallel=2, pipeline_parallel=4, grad_accum=4,
          n_layer=4),
     r"--data-parallel=2 x --tensor-parallel=2 x --pipeline-parallel=4 = 16 is invalid: .* "
     r"device count 8 \(--devices=8\)"),
    (dict(devices=6, tensor_parallel=4),
     r"--data-parallel=1 \(derived\) x --tensor-parallel=4 = 4 is invalid: the product must "
     r"equal the device count 6 \(--devices=6\)"),
])
def test_devices_that_do_not_fit_the_layout_are_refused_from_the_flags(kw, match) -> None:
    """Refused by the flags alone (before JAX starts), naming the numbers."""
    cfg = TrainConfig.from_dict(dict(model="gpt2", model_size="tiny", n_head=4, n_embd=32,
                                     seq_len=SEQ, **kw))
    with pytest.raises(ValueError, match=match):
        check_flags(cfg)


def _two_processes(wd: str, flags: list[str], cache: str) -> list[str]:
    """``python -m train`` as 2 processes x 4 simulated CPU devices (gloo collectives); the
    processes' stdouts. ``cache``: JAX's persistent compilation cache, shared by the runs of one
    test so that a resumed pair reuses the first pair's compiled programs."""
    env = cpu_env(4, cache)
    procs = [subprocess.Popen(argv, env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for argv in two_process_argvs(wd, flags)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outs]


@pytest.fixture(scope="module")
def two_procs(tmp_path_factory, pmap_ref) -> tuple[str, list[str], str, list[str]]:
    """4 steps of 2 processes x 4 devices, TP=2 x ZeRO-1 x DP=4 (TP inside a process, data and
    the optimizer state across both), sharded checkpoints at 2 and 4 written by both processes:
    (workdir, flags, compilation cache, stdouts)."""
    base, _ = pmap_ref
    tmp = tmp_path_factory.mktemp("two_procs")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in base.items() if not isinstance(v, bool)]
    flags += ["--no-tensorboard", "--tensor-parallel=2", "--zero-stage=1", "--batch-size=2"]
    wd, cache = str(tmp / "multi"), str(tmp / "jax_cache")
    return wd, flags, cache, _two_processes(wd, flags, cache)


def _loss_rows(wd: str) -> list[dict]:
    with open(os.path.join(wd, "metrics", "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "loss" in r]


def test_two_processes_tensor_parallel_within_each(two_procs, pmap_ref) -> None:
    """The 2-process mesh run: the same losses as pmap DP=8 in one process."""
    wd, _, _, outs = two_procs
    assert "mesh: data=4 x tensor=2" in outs[0]
    np.testing.assert_allclose([r["loss"] for r in _loss_rows(wd)],
                               [x for _, x in pmap_ref[1]["losses"]], rtol=F32_RTOL)


def test_two_processes_resume_from_their_sharded_checkpoint(two_procs, tmp_path) -> None:
    """Two new processes resume the 2-process run from its sharded checkpoint at step 2 (each
    reads its own shards) and train on to 4: every loss and the saved state at step 4 are bit
    for bit the uninterrupted 2-process run's (the state through its layout-independent
    per-leaf checksums: parameters, optimizer state, step)."""
    ref, flags, cache, _ = two_procs
    wd = str(tmp_path / "resumed")
    shutil.copytree(ref, wd)
    shutil.rmtree(os.path.join(wd, "checkpoints", "4"))
    out = _two_processes(wd, [*flags, "--resume"], cache)[0]
    assert re.search(r"resumed from \S+/checkpoints/2 \(step 2\)", out), out[-2000:]
    rows, want = _loss_rows(wd), _loss_rows(ref)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 2, 3]  # appended after the first run's
    assert [r["loss"] for r in rows[4:]] == [r["loss"] for r in want[2:]]
    sums = []
    for d in (wd, ref):
        with open(os.path.join(d, "checkpoints", "4", "checksums", "metadata")) as f:
            sums.append(json.load(f))
    assert sums[0]["step"] == 4 and sums[0]["leaves"] == sums[1]["leaves"]
    assert {k.split("/")[0] for k in sums[0]["leaves"]} == {"step", "params", "opt_state"}


def test_two_process_sweep_matches_one_process(tmp_path, pmap_ref) -> None:
    """A 2-member population (``--sweep lr=...``) as 2 processes x 4 devices: every member
    logs the losses of the same sweep in one process on 8 devices (the members see the same
    global batches, split over both processes), and process 0 alone writes ``members.json``
    and the metrics; the population checkpoints at steps 2 and 4 are written by both."""
    base, _ = pmap_ref
    cfg = {**base, "steps": 4, "sweep": ("lr=0.01,0.03",)}
    one = run(cfg, str(tmp_path / "one"))
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in base.items()
             if not isinstance(v, bool) and k != "steps"]
    wd = str(tmp_path / "two")
    _two_processes(wd, [*flags, "--steps=4", "--no-tensorboard", "--sweep", "lr=0.01,0.03"],
                   str(tmp_path / "jax_cache"))
    with open(os.path.join(wd, "members.json")) as f:
        assert len(json.load(f)) == 2
    rows = [r for r in _loss_rows(wd) if "member" in r]
    for k in range(2):
        got = [r["loss"] for r in rows if r["member"] == k]
        want = [x for _, x in one["results"][k]["losses"]]
        assert len(got) == len(want) == 4, (got, want)
        np.testing.assert_allclose(got, want, rtol=F32_RTOL, err_msg=f"member {k}")
    assert sorted(d for d in os.listdir(os.path.join(wd, "checkpoints")) if d.isdigit()) == [
        "2", "4"]


@pytest.mark.skipif(not FULL, reason="full matrix: SCHEDAX_FULL_MATRIX=1")
def test_sigkill_and_resume_sharded_bit_identical(tmp_path, pmap_ref) -> None:
    """``python -m train`` under TP=2+SP x ZeRO-3 x 4, SIGKILLed after a committed checkpoint
    and resumed: every logged loss and the final parameters bit-identical to an uninterrupted
    run of the same layout."""
    base, _ = pmap_ref
    cfg = {**base, "steps": 6, "checkpoint_interval": 1, "tensor_parallel": 2,
           "sequence_parallel": True, "zero_stage": 3, "batch_size": 2}
    ref = run(cfg, str(tmp_path / "ref"))
    env = cpu_env(8)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in cfg.items() if not isinstance(v, bool)]
    wd = str(tmp_path / "killed")
    args = [sys.executable, "-m", "train", "--workdir", wd, *flags, "--no-tensorboard",
            "--sequence-parallel"]
    p = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    ck = os.path.join(wd, "checkpoints")
    deadline = time.time() + 400
    while time.time() < deadline and p.poll() is None:
        if os.path.isdir(ck) and any(d.isdigit() and int(d) >= 2 for d in os.listdir(ck)):
            break
        time.sleep(0.05)
    assert p.poll() is None, "finished before the kill"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    r = subprocess.run([*args, "--resume"], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout
    with open(os.path.join(wd, "metrics", "metrics.jsonl")) as f:
        recs = [x for x in map(json.loads, f) if "loss" in x]
    want = dict(ref["losses"])
    assert {x["step"] for x in recs} == set(want)
    for x in recs:  # replayed steps are bit-identical, too
        assert x["loss"] == want[x["step"]]


def test_planner_matches_the_real_arrays_and_the_flop_count() -> None:
    """``--plan`` (abstract arrays): its parameter/optimizer bytes equal those measured on real
    arrays of the same layout, and XLA's FLOPs per device agree with the analytic 6N +
    attention count within 25% (XLA also counts element-wise work)."""
    cfg = _cfg("gpt2", "steplr", "ZeRO-3x8")
    model_cfg, schedule, tx, state = _setup(cfg)
    p = memory_plan(cfg, model_cfg, schedule)
    lay = make_layout(cfg, model_cfg, len(jax.devices()))
    b = build(model_cfg, tx, schedule, cfg.seed, lay, state["params"]).bytes_per_device(
        build(model_cfg, tx, schedule, cfg.seed, lay, state["params"]).put_state(state))
    assert (p["params"], p["grads"], p["opt_state"]) == (b["params"], b["grads"], b["opt_state"])
    assert p["temporaries"] > 0 and p["total"] >= p["arguments"]
    assert 0.75 < p["xla_flops"] / p["analytic_flops"] < 1.25
    assert p["fits"]["80 GB (A100/H100)"]


@pytest.mark.parametrize("kw,match", [
    (dict(tensor_parallel=3), r"--tensor-parallel=3 is invalid: it must divide the device"),
    (dict(tensor_parallel=8), r"--tensor-parallel=8 is invalid: .* n_head \(4\)"),
    (dict(model="llama3", n_head=4, n_kv_head=2, tensor_parallel=4),
     r"--tensor-parallel=4 is invalid: .* n_kv_head \(2\)"),
    (dict(data_parallel=2, tensor_parallel=2), r"--data-parallel=2 x --tensor-parallel=2 = 4"),
    (dict(sequence_parallel=True), r"--sequence-parallel=True is invalid: needs --tensor-par"),
    (dict(zero_stage=4), r"--zero-stage=4 is invalid"),
    (dict(n_kv_head=2), r"--n-kv-head=2 is invalid: only --model=llama3"),
    (dict(devices=8, data_parallel=3), r"--data-parallel=3 x --tensor-parallel=1 = 3 is "
                                       r"invalid: .* device count 8 \(--devices=8\)"),
])
def test_impossible_layouts_rejected_before_compiling(kw, match) -> None:
    d = dict(model="gpt2", model_size="tiny", n_head=4, n_embd=32, seq_len=SEQ)
    d.update(kw)
    with pytest.raises(ValueError, match=match):
        cfg = TrainConfig.from_dict(d)
        check_flags(cfg)  # as the run's setup does, before the model's config is built
        model_cfg = models.get_config(cfg.model, cfg.base_size(), **cfg.model_overrides())
        make_layout(cfg, model_cfg, 8)


def test_cli_prints_one_line_for_an_impossible_layout(tmp_path) -> None:
    env = cpu_env(8)
    r = subprocess.run([sys.executable, "-m", "train", "--workdir", str(tmp_path),
                        "--model-size=tiny", "--tensor-parallel=8", "--steps=1"],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "python -m train: error: --tensor-parallel=8 is invalid: it must divide the model's "
        "n_head (2)"]
    ck = tmp_path / "checkpoints"  # checked (created empty) before anything compiles
    assert not os.path.exists(ck) or not os.listdir(ck)


# -- pipeline parallelism: schedule, gradients, checkpoints, errors ----------------------------


@pytest.mark.parametrize("m,n,v", [(8, 8, 1), (4, 4, 2), (8, 2, 2), (5, 2, 3), (16, 4, 1)])
def test_pipeline_schedule_is_complete_and_has_the_formula_bubble(m, n, v) -> None:
    """Every micro-batch visits chunks 0..NV-1 in order (chunk c on stage c mod N), one step
    apart, never two on a stage at once; the idle fraction is (N-1)/(mV+N-1) when N divides m
    (hand-derived: m V useful chunk steps per stage out of m V + N - 1)."""
    from train.parallel.pipeline import bubble_fraction, pipe_schedule

    s = pipe_schedule(m, n, v)
    visits = {i: [] for i in range(m)}
    inflight = {}
    for t in range(s.steps):
        if s.inject[t] >= 0:
            inflight[0] = int(s.inject[t])
        for st in range(n):
            if s.chunk[t, st] >= 0:
                visits[inflight[st]].append((t, s.chunk[t, st] * n + st))
        if s.emit[t] >= 0:
            assert inflight[n - 1] == s.emit[t]
        inflight = {(st + 1) % n: i for st, i in inflight.items()}
    for i, vis in visits.items():
        assert [c for _, c in vis] == list(range(n * v)), i
        assert [t for t, _ in vis] == list(range(vis[0][0], vis[0][0] + n * v))
    assert (s.chunk >= 0).sum() == m * v * n
    if m % n == 0:
        assert s.steps == m * v + n - 1
        assert s.bubble == pytest.approx(bubble_fraction(m, n, v))


def test_pipeline_gradients_equal_the_plain_model_tied_embedding_summed() -> None:
    """``pipeline_loss`` (PP=2 x vPP=2 on a pipe mesh) has the plain model's loss and
    gradients; GPT-2's tied ``wte`` gradient is the sum of its embedding and head uses (both
    parts non-zero, so a pipeline keeping only one would fail)."""
    from jax.sharding import Mesh

    from train.parallel.pipeline import pipeline_loss

    cfg = models.get_config("gpt2", "tiny", n_layer=4, n_head=4, n_embd=32, vocab_size=256)
    params = models.init_params(cfg, jax.random.key(0))
    batch = jax.random.randint(jax.random.key(1), (4, 2, SEQ + 1), 0, 256)
    mesh = Mesh(np.array(jax.devices()[:2]).reshape(1, 2), ("data", "pipe"))
    with jax.set_mesh(mesh):
        step = jax.jit(jax.value_and_grad(lambda p: pipeline_loss(cfg, p, batch, 2, 2)))
        compiled = step.lower(params).compile()
        l_pp, g_pp = compiled(params)
    # the head's logits product runs on m / N = 2 of the 4 micro-batches per stage (64 rows
    # of 2 x 16 tokens each), never on all of them (128): stages split the head
    import re

    rows = {int(r) for r in re.findall(r"f32\[(\d+),256\]\{1,0\} dot\(", compiled.as_text())}
    assert 4 * 2 * SEQ // 2 in rows and 4 * 2 * SEQ not in rows, rows
    mod = models.build(cfg)
    flat = batch.reshape(-1, SEQ + 1)
    plain = lambda p: models.loss_fn(mod.apply({"params": p}, flat[:, :-1]), flat[:, 1:])  # noqa: E731
    l0, g0 = jax.jit(jax.value_and_grad(plain))(params)
    np.testing.assert_allclose(l_pp, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_pp), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    # wte's two uses separately: as the input embedding and as the output head

    parts = models.model_parts(cfg)

    def two_uses(e_in, e_out):
        x, _ = parts.embed({**params, "wte": {"embedding": e_in}}, flat[:, :-1])
        for i in range(cfg.n_layer):
            x = parts.layer(params[f"h_{i}"], x, ())
        logits = parts.head({**params, "wte": {"embedding": e_out}}, x)
        return models.vocab_parallel_xent(logits, flat[:, 1:])

    emb = params["wte"]["embedding"]
    g_in, g_out = jax.jit(jax.grad(two_uses, argnums=(0, 1)))(emb, emb)
    assert float(jnp.abs(g_in).max()) > 1e-4 and float(jnp.abs(g_out).max()) > 1e-4
    np.testing.assert_allclose(g_pp["wte"]["embedding"], g_in + g_out, rtol=1e-4, atol=1e-7)


def test_checkpoint_state_moves_between_pipeline_layouts_bit_identically(tmp_path) -> None:
    """The pipeline engine's state is stage-sharded: each device holds its stage's chunks of
    layers only (1/N of the layers' bytes). A state under PP=4 x vPP=2, saved from
    those shards, restores onto pmap DP=8 and (saved again from there) onto
    TP=2 + SP + PP=2 + vPP=2, bit-identical; in the checkpoint view each layer's arrays live on
    its own stage's devices."""
    cfg = _cfg("gpt2", "steplr", "PP=4xvPP=2", n_layer=8, grad_accum=8)
    model_cfg, schedule, tx, src = _random_state(cfg)
    pp = build(model_cfg, tx, schedule, 0, Layout(data=2, pipe=4, virtual=2), src["params"])
    state = pp.put_state(src)
    layers = sum(_leaf_bytes({k: v for k, v in src["params"].items() if k.startswith("h_")}))
    rest = sum(_leaf_bytes(src["params"])) - layers
    assert pp.bytes_per_device(state)["params"] == layers / 4 + rest
    view = pp.checkpoint_view(state)
    stage_devs = [set(pp.mesh.devices[:, st, :].ravel()) for st in range(4)]
    for i in range(8):  # layer i in chunk i (1 layer per chunk), on stage i mod 4
        for x in jax.tree.leaves(view["params"][f"h_{i}"]):
            assert x.sharding.device_set == stage_devs[i % 4], i
    chain = [("PP=4xvPP=2", pp), ("pmap DP=8", None),
             ("TP=2+SP+PP=2+vPP=2", build(model_cfg, tx, schedule, 0, Layout(
                 data=2, tensor=2, sequence_parallel=True, pipe=2, virtual=2), src["params"]))]
    _through_checkpoints(str(tmp_path / "c"), src, chain, model_cfg)


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_optimizer_groups_and_decay_on_the_stacked_pipeline_state(optimizer) -> None:
    """The optimizer runs on the pipeline engine's stacked layers as on the per-layer tree:
    with ``--lr-mults`` groups (one taking every layer) and weight decay, one update of the
    stacked state is the stacked update of the per-layer state: AdamW (elementwise) bit for
    bit; Adafactor (factored moments and RMS of each layer's arrays, ``train.optim.per_layer``)
    within float32 rounding (its vmapped row/column means may sum in another order)."""
    from train.parallel.stack import stack_tree

    cfg = _cfg("gpt2", "steplr", None, n_layer=4, lr_mults="wte=0.1,h_=0.5", weight_decay=0.1,
               optimizer=optimizer)
    _, _, tx, state = _random_state(cfg)
    state["opt_state"] = jax.tree.map(np.abs, state["opt_state"])  # nu >= 0
    stack = lambda t: stack_tree(t, "h_", 4, 2, 2)  # noqa: E731  (PP=2 x vPP=2)
    grads = jax.tree.map(lambda x: (1e-4 * np.sign(x)).astype(x.dtype), state["params"])
    if optimizer == "adafactor":  # random magnitudes: the factored statistics are not uniform
        grads = jax.tree.map(lambda x: (1e-4 * np.sin(x)).astype(x.dtype), state["params"])
    up, opt = jax.jit(tx.update)(grads, state["opt_state"], state["params"])
    up_s, opt_s = jax.jit(tx.update)(stack(grads), stack(state["opt_state"]),
                                     stack(state["params"]))
    assert jax.tree.structure(opt_s) == jax.tree.structure(stack(jax.device_get(opt)))
    assert jax.tree.structure(jax.eval_shape(tx.init, stack(state["params"]))) == \
        jax.tree.structure(opt_s)
    for a, b in zip(jax.tree.leaves((up_s, opt_s)), jax.tree.leaves(stack(jax.device_get(
            (up, opt))))):
        if optimizer == "adamw":
            np.testing.assert_array_equal(a, b)
        else:  # a few float32 ULPs of the leaf's scale
            b = np.asarray(b)
            np.testing.assert_allclose(a, b, rtol=0, atol=64 * np.finfo(np.float32).eps
                                       * float(np.max(np.abs(b), initial=0.0)))


@pytest.mark.parametrize("kw,match", [
    (dict(pipeline_parallel=3, grad_accum=3),
     r"--pipeline-parallel=3 x --tensor-parallel=1 = 3 is invalid: it must divide the device"),
    (dict(pipeline_parallel=4, virtual_pipeline_parallel=2, n_layer=4, grad_accum=4),
     r"--pipeline-parallel=4 x --virtual-pipeline-parallel=2 = 8 is invalid: it must divide "
     r"the model's layers \(n_layer=4\)"),
    (dict(pipeline_parallel=4, n_layer=4, grad_accum=2),
     r"--grad-accum=2 is invalid with --pipeline-parallel=4: the pipeline needs at least 4"),
    (dict(virtual_pipeline_parallel=2), r"--virtual-pipeline-parallel=2 is invalid: needs "
                                        r"--pipeline-parallel"),
    (dict(recompute="some"), r"--recompute='some' is invalid: must be one of none, full"),
    (dict(pipeline_parallel=2, n_layer=4, grad_accum=2, lr_mults="h_1=0.5"),
     r"--lr-mults pattern 'h_1' is invalid with --pipeline-parallel=2: it selects some "
     r"layers' attn/c_attn/bias and not others"),
])
def test_impossible_pipeline_layouts_rejected_before_compiling(kw, match) -> None:
    d = dict(model="gpt2", model_size="tiny", n_head=4, n_embd=32, seq_len=SEQ)
    d.update(kw)
    with pytest.raises(ValueError, match=match):
        cfg = TrainConfig.from_dict(d)
        model_cfg = models.get_config(cfg.model, cfg.base_size(), **cfg.model_overrides())
        make_layout(cfg, model_cfg, 8)


@pytest.mark.parametrize("model", ["gpt2", "llama3"])
@pytest.mark.parametrize("rows", [1, 2, 4, 8])
def test_recompute_gradients_bit_identical(model, rows) -> None:
    """Recompute is the same arithmetic: for GPT-2 and LLaMA-3 with 1, 2, 4 or 8 rows per
    device, the float32 loss and every gradient of full (uniform 1; block 1 at 1 row; uniform 2
    at 2 rows) and selective (1 and 8 rows) recompute are bit-identical to no recompute.
    (GPT-2's LayerNorm statistics are matrix-vector products and LLaMA-3's rotary embedding is
    computed per half: written otherwise, XLA:CPU emitted the recomputed operations with other
    code at some batch sizes, a few ULPs apart; docs/parallelism.md, "Recompute".)"""
    import dataclasses

    tok = jax.random.randint(jax.random.key(1), (rows, SEQ + 1), 0, 256)
    extra = dict(n_kv_head=2) if model == "llama3" else {}
    cfg0 = models.get_config(model, "tiny", n_layer=2, n_embd=32, vocab_size=256, n_head=4,
                             **extra)
    params = models.init_params(cfg0, jax.random.key(0))

    def grads(cfg):
        mod = models.build(cfg)
        f = lambda p: models.loss_fn(mod.apply({"params": p}, tok[:, :-1]), tok[:, 1:])  # noqa: E731
        return jax.jit(jax.value_and_grad(f))(params)

    ref = grads(cfg0)
    variants = [dict(remat="full")]  # (compile time: the other variants at some sizes only)
    if rows in (1, 8):
        variants.append(dict(remat="selective"))
    if rows == 1:
        variants.append(dict(remat="full", remat_method="block", remat_num_layers=1))
    if rows == 2:
        variants.append(dict(remat="full", remat_num_layers=2))
    for kw in variants:
        got = grads(dataclasses.replace(cfg0, **kw))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_array_equal(a, b, err_msg=f"{model} {rows} rows {kw}")


def test_recompute_same_losses_on_both_engines() -> None:
    """``--recompute`` changes what is stored, not what is computed: pmap DP=8 (1 row per
    device) with full uniform recompute and mesh ZeRO-3 x 8 with selective recompute log the
    same float32 losses as without and end at the same parameters, bit for bit, over all
    steps (GPT-2; LLaMA-3 on pmap; docs/parallelism.md, "Recompute"). The runs without are the
    matrix's (cached)."""
    for model, layout, rc in (("gpt2", None, dict(recompute="full")),
                              ("gpt2", "ZeRO-3x8", dict(recompute="selective")),
                              ("llama3", None, dict(recompute="selective"))):
        ref = trajectory(_cfg(model, "steplr", layout))
        got = trajectory(_cfg(model, "steplr", layout, **rc))
        assert got["losses"] == ref["losses"], (model, layout, rc)
        for a, b in zip(jax.tree.leaves(got["state"]["params"]),
                        jax.tree.leaves(ref["state"]["params"])):
            np.testing.assert_array_equal(a, b, err_msg=f"{model} {layout} {rc}")


def test_pipeline_recompute_bit_identical() -> None:
    """Under the pipeline too: LLaMA-3 PP=8 with full uniform recompute logs PP=8's float32
    losses and ends at its parameters, bit for bit (4 steps; the run without is the PP
    matrix's full-run row, cached when it ran)."""
    kw = dict(n_layer=8, grad_accum=8, eps=1e-6)
    ref = trajectory(_cfg("llama3", "steplr", "PP=8", **kw), PP_STEPS)
    got = trajectory(_cfg("llama3", "steplr", "PP=8+recompute-uniform-1", **kw), PP_STEPS)
    assert got["losses"] == ref["losses"]
    for a, b in zip(jax.tree.leaves(got["state"]["params"]),
                    jax.tree.leaves(ref["state"]["params"])):
        np.testing.assert_array_equal(a, b)


def test_adafactor_on_the_pipeline_matches_pmap() -> None:
    """``--optimizer=adafactor`` under PP=2 (stacked layers; the factored moments and block RMS
    per layer, ``train.optim.per_layer``) logs pmap DP=8's float32 losses within 1e-5 relative
    and ends at its parameters (AdamW's rows' atol; Adafactor's update is RMS-normalised too).
    The same global batch: 8 x 1 row x 2 micro-batches (pmap) = DP=4 x 2 rows x 2."""
    kw = dict(n_layer=2, grad_accum=2, optimizer="adafactor", weight_decay=0.1)
    steps = 3
    ref = trajectory(_cfg("gpt2", "steplr", None, **kw), steps)
    got = trajectory(_cfg("gpt2", "steplr", None, engine="mesh", pipeline_parallel=2,
                          batch_size=2, **kw), steps)
    assert (got["layout"].pipe, got["layout"].data) == (2, 4)
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=F32_RTOL)
    for a, b in zip(jax.tree.leaves(got["state"]["params"]),
                    jax.tree.leaves(ref["state"]["params"])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
    moved = [np.asarray(a) != np.asarray(b) for a, b in
             zip(jax.tree.leaves(got["state"]["params"]), jax.tree.leaves(got["init"]))]
    assert sum(int(m.sum()) for m in moved) >= 0.9 * sum(m.size for m in moved)  # it trained
