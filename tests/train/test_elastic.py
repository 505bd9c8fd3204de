"""Elastic resume (issue 28): a run resumed on another device count keeps its global batch and
its data order, and its losses are the uninterrupted run's within the layout tolerance of
tests/train/test_parallel.py (float32, 1e-5 relative: the layouts sum the same numbers in
another order).

The reference is an uninterrupted pmap run on the 8 simulated devices
(``--global-batch-size=8``: 1 sequence each); the resumed runs continue copies of its step-2
checkpoint on 4 devices (2 micro-batches per device; ZeRO-1 over 4 with 2 rows per device).
The process split of a global batch is :class:`train.data.Batcher`'s, tested directly (every
split of the same global batch, over processes, devices, micro-batches and rows, reads the
same rows in the same order); one test (``slow``) also resumes the 8-device run on 2
processes x 4 through a SIGTERM sent to one of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading

import numpy as np
import pytest
from train_testutil import ROOT, cpu_env, tiny, two_process_argvs

import models
from train import TrainConfig
from train import train_and_evaluate as run
from train.__main__ import main
from train.checkpoint import committed_steps
from train.data import Batcher, Mixture, TokenData
from train.resume import ResumeMismatchError, check_compatible, dropout_streams
from train.run.checks import batch_split, resolve_batch
from train.run.setup import effective_config
from train.schedule.build import build_schedule

F32_RTOL = 1e-5  # tests/train/test_parallel.py's float32 layout tolerance
SEQ = 16

_RNG = np.random.default_rng(0)
_DATA = TokenData([_RNG.integers(0, 256, 20_000).astype(np.uint16)], "t")
_MIX = Mixture([("a", _DATA, 1.0),
                ("b", TokenData([_RNG.integers(0, 256, 9_000).astype(np.uint16)], "b"), 3.0)])


def _global_rows(data, sampling: str, step: int, processes: int, local: int, accum: int,
                 batch: int, eval_batch: bool = False) -> np.ndarray:
    """The rows of step ``step`` as every process of a split reads them, in process order."""
    out = []
    for p in range(processes):
        b = Batcher(data, seq_len=SEQ, batch_size=batch, grad_accum=accum, local_devices=local,
                    process_index=p, process_count=processes, seed=3, sampling=sampling)
        x = b.eval_batch(step) if eval_batch else b.batch(step)
        assert x.shape == (local, accum, batch, SEQ + 1)
        out.append(x.reshape(-1, SEQ + 1))
    return np.concatenate(out)


@pytest.mark.parametrize("data,sampling", [(_DATA, "random"), (_DATA, "epoch"),
                                           (_MIX, "random"), (_MIX, "epoch")],
                         ids=["random", "epoch", "mixture-random", "mixture-epoch"])
def test_the_rows_of_a_step_do_not_depend_on_the_split(data, sampling) -> None:
    """A global batch of 8 rows: one process with one device taking all 8 in one micro-batch
    is the reference; 8 devices x 1, 4 devices x 2 micro-batches, 4 x 2 rows, 2 processes x 4
    devices and 2 processes x 2 devices x 2 rows read the same rows in the same order, at
    every step (and the evaluation batches too)."""
    splits = [(1, 8, 1, 1), (1, 4, 2, 1), (1, 4, 1, 2), (2, 4, 1, 1), (2, 2, 1, 2),
              (2, 1, 2, 2)]
    for step in (0, 1, 7):
        want = _global_rows(data, sampling, step, 1, 1, 1, 8)
        assert len({r.tobytes() for r in want}) > 1  # a real batch, not one repeated row
        for s in splits:
            np.testing.assert_array_equal(_global_rows(data, sampling, step, *s), want,
                                          err_msg=f"{sampling} step {step} split {s}")
    want = _global_rows(data, "random", 2, 1, 1, 1, 8, eval_batch=True)
    for s in splits:
        np.testing.assert_array_equal(_global_rows(data, "random", 2, *s, eval_batch=True), want)


@pytest.mark.parametrize("g,batch,accum,dp,want", [
    (32, 4, 1, 8, (4, 1)),   # 8 devices x 4
    (32, 4, 1, 4, (4, 2)),   # half the devices: the micro-batch stays, twice the accumulation
    (32, 8, 1, 4, (8, 1)),   # ... or twice the micro-batch (--batch-size=8)
    (32, 8, 1, 8, (4, 1)),   # --batch-size is the most a device runs at once
    (32, 4, 2, 4, (4, 2)),   # --grad-accum may be given as what the rule derives
    (6, 8, 1, 2, (3, 1)),
])
def test_batch_split(g, batch, accum, dp, want) -> None:
    """``--global-batch-size=G`` on DP replicas: micro-batch min(--batch-size, G/DP), G/DP /
    micro-batch of them; G = DP x micro x accumulation in every case."""
    cfg = TrainConfig(global_batch_size=g, batch_size=batch, grad_accum=accum)
    assert batch_split(cfg, dp) == want and dp * want[0] * want[1] == g
    r = resolve_batch(cfg, dp)
    assert (r.batch_size, r.grad_accum, r.global_batch_size) == (*want, g)
    plain = TrainConfig(batch_size=batch, grad_accum=accum)
    assert batch_split(plain, dp) == (batch, accum) and resolve_batch(plain, dp) is plain


@pytest.mark.parametrize("g,batch,accum,dp,match", [
    (8, 1, 1, 3, r"^--global-batch-size=8 is invalid on 3 data-parallel replicas: it must be "
                 r"a multiple of the data-parallel degree 3"),
    (24, 5, 1, 2, r"^--global-batch-size=24 is invalid with --batch-size=5 on 2 data-parallel "
                  r"replicas: each replica's 12 sequences per update are not a whole number "
                  r"of micro-batches of 5 \(give a --batch-size that divides 12\)"),
    (32, 4, 3, 4, r"^--grad-accum=3 is invalid with --global-batch-size=32: on 4 data-parallel "
                  r"replicas with --batch-size=4 the accumulation is 32 / \(4 x 4\) = 2"),
])
def test_batch_split_refusals_name_the_numbers(g, batch, accum, dp, match) -> None:
    cfg = TrainConfig(global_batch_size=g, batch_size=batch, grad_accum=accum)
    with pytest.raises(ValueError, match=match) as e:
        batch_split(cfg, dp)
    assert "\n" not in str(e.value)


def test_cli_refuses_a_global_batch_the_devices_cannot_take_in_one_line(tmp_path, capsys
                                                                        ) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--workdir", str(tmp_path), "--devices=3", "--global-batch-size=8"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 2, err
    assert err.startswith("python -m train: error: --global-batch-size=8 is invalid on 3 "
                          "data-parallel replicas"), err


def test_dropout_refuses_a_new_layout_but_not_the_same_one() -> None:
    """With dropout, the masks are drawn per device (pmap) and per micro-batch: a resume on
    another split of the same global batch is refused, naming both; without dropout or on
    the same split it is accepted."""
    def eff(dropout: float, devices: int, accum: int, batch: int) -> dict:
        c = TrainConfig(model="gpt2", model_size="tiny", seq_len=SEQ, dropout=dropout,
                        batch_size=batch, grad_accum=accum, steps=4)
        mc = models.get_config("gpt2", "tiny", **c.model_overrides())
        return effective_config(c, build_schedule(c), mc, {
            "global_devices": devices, "tokens_per_step": devices * accum * batch * SEQ})

    check_compatible(eff(0.0, 8, 1, 1), eff(0.0, 4, 2, 1), "here")
    check_compatible(eff(0.1, 8, 1, 1), eff(0.1, 8, 1, 1), "here")
    assert dropout_streams(eff(0.1, 4, 2, 1)) == "pmap on 4 device(s), 2 micro-batch(es)"
    with pytest.raises(ResumeMismatchError, match=r"dropout masks: checkpoint pmap on 8 "
                       r"device\(s\), 1 micro-batch\(es\), now pmap on 4 device\(s\), 2 "
                       r"micro-batch\(es\)"):
        check_compatible(eff(0.1, 8, 1, 1), eff(0.1, 4, 2, 1), "here")


@pytest.fixture(scope="module")
def ref(tmp_path_factory, corpus) -> tuple[str, dict]:
    """An uninterrupted 6-step pmap run, ``--global-batch-size=8`` on the 8 devices (1
    sequence each; checkpoints at 2, 4 and 6): (its workdir, its summary)."""
    tmp = tmp_path_factory.mktemp("elastic")
    base = tiny(str(tmp), corpus, n_head=4, n_embd=32, seq_len=SEQ, batch_size=1, steps=6,
                total_steps=6, eval_interval=100, checkpoint_interval=2, global_batch_size=8)
    wd = str(tmp / "ref")
    return wd, run(base, wd)


def _from_step_2(ref_wd: str, wd: str) -> str:
    shutil.copytree(ref_wd, wd)
    for step in (4, 6):
        shutil.rmtree(os.path.join(wd, "checkpoints", str(step)))
    return wd


def _saved(wd: str, step: int) -> dict:
    with open(os.path.join(wd, "checkpoints", str(step), "config", "metadata")) as f:
        return json.load(f)


def _assert_continues(out: dict, ref_summary: dict) -> None:
    assert out["start_step"] == 2 and out["steps"] == 4
    np.testing.assert_allclose([x for _, x in out["losses"]],
                               [x for _, x in ref_summary["losses"][2:4]], rtol=F32_RTOL)


def test_global_batch_run_resumes_on_half_the_devices(ref, tmp_path, capsys) -> None:
    """The run's step-2 checkpoint resumed with ``--devices=4`` alone: 2 micro-batches of 1 on
    each device, the same losses as the uninterrupted run."""
    ref_wd, ref_summary = ref
    wd = _from_step_2(ref_wd, str(tmp_path / "g"))
    with open(os.path.join(wd, "config.json")) as f:  # as given: G, not the derived split
        assert json.load(f)["global_batch_size"] == 8
    capsys.readouterr()
    out = run({"resume": True, "devices": 4, "steps": 4}, wd)
    printed = capsys.readouterr().out
    assert "global batch 128 tokens (4 x 2 x 1 x 16)" in printed, printed
    _assert_continues(out, ref_summary)
    assert _saved(wd, 2)["global_devices"] == 8
    saved = _saved(wd, 4)
    assert (saved["global_batch_size"], saved["batch_size"], saved["grad_accum"],
            saved["global_devices"]) == (8, 1, 2, 4)


def test_resume_refused_on_another_global_batch_naming_the_flag_that_keeps_it(
        ref, tmp_path) -> None:
    """Resumed on 4 devices without ``--global-batch-size`` (as a run started with
    ``--batch-size=1`` would be), the per-device batch of 1 alone would halve the global
    batch: refused before anything compiles, naming both and the flag that keeps it; 3
    devices cannot take 8. Nothing is written."""
    ref_wd, _ = ref
    wd = _from_step_2(ref_wd, str(tmp_path / "b"))
    before = sorted(os.listdir(os.path.join(wd, "checkpoints")))
    with pytest.raises(ResumeMismatchError) as e:
        run({"resume": True, "global_batch_size": None, "devices": 4, "steps": 4}, wd)
    msg = str(e.value)
    assert "tokens_per_step: checkpoint 128, now 64" in msg and "\n" not in msg
    assert re.search(r"the global batch: 8 sequences per update at the checkpoint, 4 now; "
                     r"resume with --global-batch-size=8", msg), msg
    with pytest.raises(ValueError, match=r"--global-batch-size=8 is invalid on 3 "
                       r"data-parallel replicas"):
        run({"resume": True, "devices": 3, "steps": 4}, wd)
    assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == before


def test_checkpoint_restores_sharded_onto_a_smaller_mesh(ref, tmp_path) -> None:
    """The uninterrupted run's step-2 checkpoint (8 devices), resumed as ZeRO-1 over 4 devices
    (``--data-parallel`` derived from ``--devices``, the optimizer state sharded 4 ways) with
    the flags of a run started with ``--batch-size``: ``--batch-size=2`` keeps the global
    batch of 8 (2 rows per device, no accumulation). orbax reads the checkpoint into the new
    shardings and the run continues as the uninterrupted one. (A state moving between sharded
    layouts of other device counts, bit for bit through the same checkpointer:
    tests/train/test_parallel.py.)"""
    ref_wd, ref_summary = ref
    wd = _from_step_2(ref_wd, str(tmp_path / "z"))
    _assert_continues(run({"resume": True, "global_batch_size": None, "devices": 4,
                           "zero_stage": 1, "batch_size": 2, "steps": 4}, wd), ref_summary)
    saved = _saved(wd, 4)
    assert (saved["global_devices"], saved["zero_stage"], saved["batch_size"],
            saved["grad_accum"], saved["tokens_per_step"]) == (4, 1, 2, 1, 8 * SEQ)


def _two_processes(wd: str, flags: list[str], cache: str, signal_after: str | None = None
                   ) -> tuple[list[int], str]:
    """``python -m train --workdir wd flags`` as 2 processes x 4 simulated CPU devices;
    ``signal_after``: once process 0 prints a line starting with it, SIGTERM to process 1
    only. (The exit statuses, process 0's stdout.) ``cache``: JAX's persistent compilation
    cache, shared by the pairs of a test."""
    env = cpu_env(4, cache)
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(open(f"{wd}.{pid}.log", "w+")) for pid in range(2)]
        procs = [subprocess.Popen(
            argv, env=env, cwd=ROOT, text=True,
            stdout=subprocess.PIPE if pid == 0 else logs[pid], stderr=logs[pid])
            for pid, argv in enumerate(two_process_argvs(wd, flags))]
        watchdogs = [threading.Timer(400, p.kill) for p in procs]
        for w in watchdogs:
            w.start()
        out, sent = [], False
        try:
            for line in procs[0].stdout:
                out.append(line)
                if signal_after and not sent and line.startswith(signal_after):
                    procs[1].send_signal(signal.SIGTERM)
                    sent = True
            status = [p.wait() for p in procs]
        finally:
            for w in watchdogs:
                w.cancel()
        errs = []
        for f in logs:
            f.seek(0)
            errs.append(f.read())
    assert not signal_after or sent, ("".join(out)[-2000:], errs[0][-2000:])
    assert all(s in (0, 143) for s in status), (status, errs[0][-3000:], errs[1][-3000:])
    assert "Traceback" not in errs[0] + errs[1], (errs[0][-3000:], errs[1][-3000:])
    return status, "".join(out)


@pytest.mark.slow  # 2 pairs of processes, each compiling: ~1-3 min on 2 cores
def test_sigterm_to_one_of_two_processes_then_resumed_onto_two_processes(ref, tmp_path
                                                                         ) -> None:
    """The 8-device run's step-2 checkpoint resumed on 2 processes x 4 devices (the same
    global batch of 8); SIGTERM to process 1 only, once process 0 has logged step 3: the
    processes agree at the next step, both save the same checkpoint and exit 143. Two new
    processes resume it to the end. Every step's loss is the uninterrupted one-process run's
    within the layout tolerance."""
    ref_wd, ref_summary = ref
    wd = _from_step_2(ref_wd, str(tmp_path / "two"))
    os.remove(os.path.join(wd, "metrics", "metrics.jsonl"))  # the steps logged from here
    ckpts = os.path.join(wd, "checkpoints")
    cache = str(tmp_path / "jax_cache")
    # evaluations do not touch the training state: many of them slow each step so that the
    # signal lands mid-run
    slow = ["--resume", "--eval-interval=1", "--eval-batches=40"]
    status, out = _two_processes(wd, slow, cache, signal_after="step 3/")
    assert status == [143, 143], (status, out[-2000:])
    k = int(re.search(r"interrupted after step (\d+) by SIGTERM", out).group(1))
    good, bad = committed_steps(ckpts)
    assert 3 <= k < 6 and max(good) == k and not bad, (k, good, bad, out[-2000:])
    assert out.rstrip().endswith(f"resume with: python -m train --resume --workdir {wd}")

    status, out = _two_processes(wd, ["--resume"], cache)
    assert status == [0, 0] and f"resumed from {good[k]} (step {k})" in out, out[-2000:]
    assert "2 process(es) x 4" in out
    rows = {}
    with open(os.path.join(wd, "metrics", "metrics.jsonl")) as f:
        for r in map(json.loads, f):
            if "loss" in r:
                rows.setdefault(r["step"], []).append(r["loss"])
    assert sorted(rows) == list(range(2, 6)) and all(len(v) == 1 for v in rows.values()), rows
    np.testing.assert_allclose([rows[t][0] for t in range(2, 6)],
                               [x for _, x in ref_summary["losses"][2:]], rtol=F32_RTOL)
    assert max(committed_steps(ckpts)[0]) == 6
