"""The batch-size ramp (issue 27 item 6): ``--rampup-batch-size START INCREMENT SAMPLES``
(Megatron's meaning), ``--batch-size-schedule=SPEC``, ``--lr-batch-scaling``.

The references are computed here, independently of ``train.schedule.batch``: Megatron's
micro-batch calculator simulated step by step (the consumed samples advancing by each step's
batch, the batch read from them with Megatron's float division), and Megatron's ``get_lr``
written out on those consumed samples. One short training run (2 step shapes) checks the
compile count, the logged batches, samples and learning rates, and a resume from its
mid-ramp checkpoint continuing bit for bit.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_testutil import tiny

import schedules as S
import train.engine.mesh as mesh_mod
import train.engine.pmap as pmap_mod
from train import TrainConfig
from train import train_and_evaluate as run
from train.__main__ import main
from train.data import Batcher, TokenData
from train.resume import ResumeMismatchError
from train.run.checks import run_ramp, run_schedule
from train.schedule.batch import RampAccum, megatron_ramp, spec_ramp


def megatron_batches(start: int, inc: int, ramp_samples: int, g: int, steps: int
                     ) -> tuple[list[int], list[int]]:
    """(global batch of each step, samples consumed before it): Megatron's calculator, updated
    with the consumed samples before every iteration."""
    per_increment = ramp_samples / ((g - start) / inc)
    consumed, batches, before = 0, [], []
    for _ in range(steps):
        if consumed > ramp_samples:
            b = g
        else:
            b = start + int(consumed / per_increment) * inc
        batches.append(b)
        before.append(consumed)
        consumed += b
    return batches, before


def megatron_lr(n: int, max_lr: float, min_lr: float, warmup: int, decay: int, style: str
                ) -> float:
    """Megatron's ``get_lr`` at ``n`` consumed samples (init lr 0; lengths in samples)."""
    if warmup > 0 and n <= warmup:
        return max_lr * n / warmup
    if n > decay:
        return min_lr
    ratio = (n - warmup) / (decay - warmup)
    coeff = 1.0 - ratio if style == "linear" else 0.5 * (math.cos(math.pi * ratio) + 1.0)
    return min_lr + coeff * (max_lr - min_lr)


@pytest.mark.parametrize("start,inc,samples,g", [
    (4, 4, 64, 16),       # 64 / 3 samples per increment: Megatron's float division decides
    (32, 32, 1000, 256),  # 7 increments
    (2, 2, 4, 4),         # one increment, reached exactly at the ramp's end
    (8, 8, 7, 64),        # a ramp shorter than one batch: a level per step, then the end
    (3, 1, 100, 9),
])
def test_global_batches_follow_megatrons_formula(start, inc, samples, g) -> None:
    want_b, want_c = megatron_batches(start, inc, samples, g, 400)
    r = megatron_ramp(start, inc, samples, g)
    assert [r.batch(t) for t in range(400)] == want_b
    assert [r.samples_before(t) for t in range(400)] == want_c
    assert want_b[-1] == g and len(set(want_b)) > 1
    # from the flags, on 2 data-parallel replicas of micro-batch 1
    if start % 2 == 0 and inc % 2 == 0:
        cfg = TrainConfig(global_batch_size=g, batch_size=1, steps=400,
                          rampup_batch_size=(start, inc, samples))
        rf = run_ramp(cfg, 2)
        assert [rf.batch(t) for t in range(400)] == want_b
        assert [RampAccum(rf, 2)(t) for t in range(400)] == [b // 2 for b in want_b]


def test_batch_size_schedule_gives_the_batch_of_each_step() -> None:
    r = spec_ramp("piecewise_constant([3, 5], [2, 4, 8])", 10)
    want = [2, 2, 2, 4, 4, 8, 8, 8, 8, 8]
    assert [r.batch(t) for t in range(12)] == [*want, 8, 8]
    assert [r.samples_before(t) for t in range(11)] == [0, *np.cumsum(want).tolist()]
    with pytest.raises(ValueError, match=r"--batch-size-schedule='linear\(1, 8, 4\)' is "
                       r"invalid: its value at step 1 is 2.75"):
        spec_ramp("linear(1, 8, 4)", 6)


def test_megatron_lr_counts_the_samples_consumed_under_a_ramp() -> None:
    """``--lr-decay-style`` with a ramp: the lr of step t is Megatron's at the samples consumed
    before t (warmup and decay lengths: iterations x --global-batch-size, as Megatron)."""
    g, steps = 16, 40
    _, before = megatron_batches(4, 4, 64, g, steps)
    for style in ("linear", "cosine"):
        cfg = TrainConfig(global_batch_size=g, batch_size=1, devices=2, steps=steps, lr=1e-3,
                          min_lr=1e-5, lr_decay_style=style, lr_warmup_iters=2,
                          lr_decay_iters=12, rampup_batch_size=(4, 4, 64))
        s = run_schedule(cfg)
        want = [megatron_lr(n, 1e-3, 1e-5, 2 * g, 12 * g, style) for n in before]
        got = S.values(s, steps)
        # the same float64 formula in another order: a few ulps
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-18)
        # not the step-counting curve: the warmup (32 samples) ends at step 7, not 2
        assert before[7] == 32 and got[6] < 1e-3 and got[7] == pytest.approx(1e-3)
        # the traced path (runs past the lr table): float32 arithmetic, cos included
        traced = np.asarray(jax.jit(lambda t, s=s: s(t))(jnp.arange(steps, dtype=jnp.float32)))
        np.testing.assert_allclose(traced, want, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("rule,factor", [("linear", lambda k: k), ("sqrt", math.sqrt),
                                         ("blend", lambda k: 0.5 * k + 0.5 * math.sqrt(k))])
def test_lr_batch_scaling_scales_each_step_by_its_batch(rule, factor) -> None:
    """``--lr-batch-scaling``: torch's cosine (counting steps) times the rule's factor of
    ``batch(t) / --global-batch-size``."""
    spec = "piecewise_constant([3, 5], [2, 4, 8])"
    cfg = TrainConfig(global_batch_size=8, batch_size=1, devices=2, steps=10, total_steps=10,
                      lr=1e-3, lr_scheduler="cosine", batch_size_schedule=spec,
                      lr_batch_scaling=rule)
    b = [2, 2, 2, 4, 4, 8, 8, 8, 8, 8]
    want = [1e-3 * 0.5 * (1 + math.cos(math.pi * t / 10)) * factor(b[t] / 8) for t in range(10)]
    # torch's cosine is recursive: its float64 rounding differs from the closed form
    np.testing.assert_allclose(S.values(run_schedule(cfg), 10), want, rtol=1e-9, atol=1e-15)


def test_the_rows_of_a_ramp_step_do_not_depend_on_the_split() -> None:
    """The rows of step t are the global batch of t drawn from (seed, t), whatever the split
    over processes, devices and micro-batches: the same as a constant-batch run of that global
    batch."""
    data = TokenData([np.random.default_rng(0).integers(0, 256, 20_000).astype(np.uint16)],
                     "t")
    ramp = megatron_ramp(4, 4, 16, 8)
    seq = 8

    def rows(step: int, processes: int, local: int, batch: int) -> np.ndarray:
        unit = processes * local * batch
        out = []
        for p in range(processes):
            bt = Batcher(data, seq_len=seq, batch_size=batch, grad_accum=8 // unit,
                         local_devices=local, process_index=p, process_count=processes,
                         seed=3, accum_at=RampAccum(ramp, unit))
            x = bt.batch(step)
            assert x.shape == (local, ramp.batch(step) // unit, batch, seq + 1)
            out.append(x.reshape(-1, seq + 1))
        return np.concatenate(out)

    for step in (0, 3, 4, 9):
        b = ramp.batch(step)
        want = Batcher(data, seq_len=seq, batch_size=b, grad_accum=1, local_devices=1,
                       seed=3).batch(step).reshape(-1, seq + 1)
        for split in ((1, 1, 4), (1, 4, 1), (2, 2, 1), (2, 1, 2), (1, 2, 2)):
            np.testing.assert_array_equal(rows(step, *split), want, err_msg=f"{step} {split}")


def _rows(wd: str) -> list[dict]:
    with open(os.path.join(wd, "metrics", "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "loss" in r]


def test_a_ramp_trains_compiles_once_per_shape_and_resumes_bit_identically(
        tmp_path, corpus, monkeypatch) -> None:
    """Megatron's ramp 2 -> 4 over 4 samples on 2 devices (global batches 2, 2, 4, 4: one and
    two micro-batches per device) with Megatron's linear decay: the step is traced (compiled)
    once per shape, each row logs its batch, the samples consumed and Megatron's lr at the
    samples before it; the run's step-2 checkpoint resumed gives the same losses and
    parameters bit for bit, compiling nothing; resumed on another layout (the mesh engine)
    the same batches and losses; another ramp is refused."""
    traces = []

    def counting(*a, **k):
        traces.append(a[1].shape)  # the batch one device traces: [grad_accum, B, T + 1]
        return update(*a, **k)

    update = pmap_mod.update
    monkeypatch.setattr(pmap_mod, "update", counting)
    monkeypatch.setattr(mesh_mod, "update", counting)
    kw = tiny(str(tmp_path), corpus, devices=2, batch_size=1, global_batch_size=4, steps=4,
              rampup_batch_size=[2, 2, 4], lr_scheduler=None, warmup_steps=None,
              total_steps=None, lr_decay_style="linear", lr_warmup_iters=1, lr_decay_iters=6,
              min_lr=1e-4, eval_interval=100, checkpoint_interval=2)
    ref = run(kw, str(tmp_path / "ref"))
    assert sorted(s[0] for s in traces) == [1, 2]  # two shapes, each traced once
    rows = _rows(str(tmp_path / "ref"))
    assert [r["global_batch"] for r in rows] == [2, 2, 4, 4]
    assert [r["samples"] for r in rows] == [2, 4, 8, 12]
    want = [megatron_lr(n, 3e-3, 1e-4, 4, 24, "linear") for n in (0, 2, 4, 8)]
    # the applied lr is the float32 rounding of Megatron's float64 value
    np.testing.assert_allclose([r["lr"] for r in rows], want, rtol=2**-23)
    assert all(math.isfinite(r["loss"]) for r in rows)
    # tokens/s: the step compiling the new shape is not steady state; the next counts 4 rows
    assert rows[2].get("tokens_per_s") is None and rows[3]["tokens_per_s"] > 0
    # the save at step 2 is not charged with the compile of the step after it
    assert ref["save_stalls"][0]["step"] == 2 and ref["save_stalls"][0]["next_step_s"] is None

    wd = str(tmp_path / "resumed")
    shutil.copytree(str(tmp_path / "ref"), wd)
    shutil.rmtree(os.path.join(wd, "checkpoints", "4"))
    out = run({"resume": True}, wd)
    assert out["start_step"] == 2 and len(traces) == 2  # nothing compiled again
    assert [x for _, x in out["losses"]] == [x for _, x in ref["losses"][2:]]
    for a, b in zip(jax.tree.leaves(out["params"]), jax.tree.leaves(ref["params"])):
        np.testing.assert_array_equal(a, b)
    # another layout (the mesh engine, tensor parallel over the 2 devices: 1 data-parallel
    # replica accumulating 4 micro-batches): the same batches, the same losses within the
    # float32 tolerance of the layouts (tests/train/test_parallel.py: another summation order)
    wd_tp = str(tmp_path / "tp")
    shutil.copytree(str(tmp_path / "ref"), wd_tp)
    shutil.rmtree(os.path.join(wd_tp, "checkpoints", "4"))
    out = run({"resume": True, "tensor_parallel": 2}, wd_tp)
    assert [s[0] for s in traces[2:]] == [4]  # [accum, DP * B, T + 1]: one new shape
    np.testing.assert_allclose([x for _, x in out["losses"]],
                               [x for _, x in ref["losses"][2:]], rtol=1e-5)
    assert [(r["global_batch"], r["samples"]) for r in _rows(wd_tp)][-2:] == [(4, 8), (4, 12)]
    # the ramp is a trajectory setting: another one is refused before anything compiles
    shutil.rmtree(os.path.join(wd, "checkpoints", "4"))
    with pytest.raises(ResumeMismatchError, match=r"rampup_batch_size: checkpoint \[2, 2, 4\]"):
        run({"resume": True, "rampup_batch_size": [2, 2, 8]}, wd)
    assert len(traces) == 3


@pytest.mark.parametrize("argv,needle", [
    (["--rampup-batch-size", "0", "2", "8", "--global-batch-size=8"],
     "--rampup-batch-size='0 2 8' is invalid: START=0 must be a positive integer"),
    (["--rampup-batch-size", "2", "4", "8", "--global-batch-size=8"],
     "INCREMENT=4 must divide --global-batch-size - START = 6"),
    (["--rampup-batch-size", "8", "2", "8", "--global-batch-size=8"],
     "START=8 must be < --global-batch-size=8"),
    (["--rampup-batch-size", "2", "2", "8"], "needs --global-batch-size"),
    (["--rampup-batch-size", "2", "2", "--global-batch-size=8"],
     "argument --rampup-batch-size: expected 3 arguments"),
    (["--rampup-batch-size", "2", "x", "8", "--global-batch-size=8"],
     "INCREMENT=x must be a positive integer"),
    (["--rampup-batch-size", "2", "2", "8", "--global-batch-size=8", "--devices=2",
      "--batch-size=2"],
     "START=2 must be a multiple of micro-batch x data-parallel = 2 x 2 = 4"),
    (["--lr-batch-scaling=sqrt"], "is only used with a batch-size ramp"),
    (["--batch-size-schedule=piecewise_constant([2], [2, 4])", "--rampup-batch-size", "2",
      "2", "8", "--global-batch-size=8"], "not both"),
    (["--rampup-batch-size", "2", "2", "8", "--global-batch-size=8", "--devices=2",
      "--pipeline-parallel=2"], "is not supported with pipeline parallelism"),
    (["--rampup-batch-size", "2", "2", "8", "--global-batch-size=8", "--devices=2",
      "--sweep", "lr=1e-3,2e-3"], "is not supported with a population"),
    (["--rampup-batch-size", "2", "2", "8", "--global-batch-size=8", "--devices=2",
      "--sampling=epoch"], "is not supported with --sampling=epoch"),
    (["--batch-size-schedule=linear(2, 8, 4)", "--global-batch-size=8", "--devices=2"],
     "its value at step 1 is 3.5"),
])
def test_bad_ramp_flags_are_one_line(argv, needle, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--workdir", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 2, err
    assert needle in err.splitlines()[0], err
